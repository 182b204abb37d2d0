"""Serving-time expert parallelism: expert hits per step, device loads, hot-expert replication."""

import pytest
import torch

from moe_edu.serving.expert_placement import (
    balance,
    contiguous_placement,
    device_loads,
    expected_experts_hit,
    expert_counts,
    replicate_hot_experts,
    step_balance,
)


def test_expected_hits_formula_and_simulation():
    assert expected_experts_hit(8, 2, 1) == pytest.approx(2.0)
    assert expected_experts_hit(8, 2, 0) == 0.0
    assert expected_experts_hit(8, 2, 32) > 7.9
    g = torch.Generator().manual_seed(0)
    T, E, k, trials = 4, 8, 2, 4000
    hits = 0
    for _ in range(trials):
        ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])  # (T, k) distinct per token
        hits += ids.unique().numel()
    assert abs(hits / trials - expected_experts_hit(E, k, T)) < 0.05


def test_device_loads_and_balance():
    placement = contiguous_placement(8, 4)
    assert placement == [[0], [0], [1], [1], [2], [2], [3], [3]]
    counts = torch.tensor([10.0, 0, 2, 2, 2, 2, 2, 2])
    loads = device_loads(counts, placement, 4)
    assert loads.tolist() == [10.0, 4.0, 4.0, 4.0]
    assert balance(loads) == pytest.approx(5.5 / 10)
    assert step_balance(torch.tensor([[0, 2], [4, 6]]), 8, placement, 4) == 1.0


def test_replication_splits_the_hot_expert():
    placement = contiguous_placement(8, 4)
    counts = torch.tensor([10.0, 0, 2, 2, 2, 2, 2, 2])
    new = replicate_hot_experts(counts, placement, 4, replicas=1)
    assert new[0] == [0, 1]  # expert 0 copied to a least-loaded device (ties: the lowest index)
    loads = device_loads(counts, new, 4)
    assert loads.sum().item() == counts.sum().item()  # rows are moved, not created
    assert balance(loads) > balance(device_loads(counts, placement, 4))
    assert placement == contiguous_placement(8, 4)  # the input placement is not modified


def test_max_per_device_limits_the_copies():
    counts = torch.tensor([10.0, 0, 2, 2])
    new = replicate_hot_experts(counts, contiguous_placement(4, 2), 2, replicas=3, max_per_device=2)
    assert all(sum(d == dev for ds in new for d in ds) <= 2 for dev in range(2))


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        contiguous_placement(6, 4)
    with pytest.raises(ValueError, match="placement"):
        device_loads(torch.ones(2), [[0], [5]], 2)
    assert expert_counts(torch.tensor([[0, 1], [1, 1]]), 3).tolist() == [1.0, 3.0, 0.0]

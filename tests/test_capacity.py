"""Capacity-based dispatch with dropping (notebook 03) against the dropless reference."""

import pytest
import torch

from moe_edu.capacity import capacity_dispatch, expert_capacity
from moe_edu.dispatch import loop_dispatch
from moe_edu.experts import Experts


def _setup(T=16, H=8, I=12, E=4, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    experts = Experts(E, H, I)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(experts.gate_up_proj.shape, generator=g) * 0.3)
        experts.down_proj.copy_(torch.randn(experts.down_proj.shape, generator=g) * 0.3)
    x = torch.randn(T, H, generator=g)
    logits = torch.randn(T, E, generator=g)
    w, chosen = torch.topk(logits.softmax(-1), k, dim=-1)
    return x, experts, w / w.sum(-1, keepdim=True), chosen


def test_expert_capacity_formula_and_errors():
    assert expert_capacity(16, 4, 2, 1.0) == 8
    assert expert_capacity(10, 8, 2, 1.25) == 4  # ceil(3.125)
    with pytest.raises(ValueError, match="capacity_factor"):
        expert_capacity(16, 4, 2, 0.0)
    with pytest.raises(ValueError, match="num_tokens"):
        expert_capacity(0, 4, 2, 1.0)


def test_large_capacity_equals_dropless():
    x, experts, w, chosen = _setup()
    out = capacity_dispatch(x, experts, w, chosen, capacity_factor=4 / 2)  # E / k: nothing can overflow
    assert out.kept.all()
    torch.testing.assert_close(out.y, loop_dispatch(x, experts, w, chosen))


def test_overflow_is_dropped_first_choices_first():
    x, experts, _, _ = _setup(T=6, E=4, k=2)
    chosen = torch.tensor([[0, 1]] * 6)  # everyone wants experts 0 then 1
    w = torch.full((6, 2), 0.5)
    out = capacity_dispatch(x, experts, w, chosen, capacity_factor=1.0)  # C = ceil(6*2/4) = 3
    assert out.capacity == 3
    expected = torch.tensor([[True, True]] * 3 + [[False, False]] * 3)
    assert torch.equal(out.kept, expected)
    assert torch.count_nonzero(out.y[3:]) == 0  # dropped tokens get nothing from the experts
    torch.testing.assert_close(out.y[:3], loop_dispatch(x[:3], experts, w[:3], chosen[:3]))


def test_second_choices_queue_behind_all_first_choices():
    x, experts, _, _ = _setup(T=4, E=2, k=2)
    chosen = torch.tensor([[0, 1], [0, 1], [1, 0], [1, 0]])
    out = capacity_dispatch(x, experts, torch.full((4, 2), 0.5), chosen, capacity_factor=0.5)  # C = 2
    assert out.kept[:, 0].all() and not out.kept[:, 1].any()  # first choices fill both experts


def reference_capacity_dispatch(x, experts, w, chosen, capacity):
    """Token by token in plain Python: first choices of every token queue before any second choice."""
    T, k = chosen.shape
    used, y = [0] * experts.num_experts, torch.zeros_like(x)
    kept = torch.zeros(T, k, dtype=torch.bool)
    for slot in range(k):
        for t in range(T):
            e = int(chosen[t, slot])
            if used[e] < capacity:
                used[e] += 1
                kept[t, slot] = True
                y[t] += w[t, slot] * experts.expert(e, x[t : t + 1])[0]
    return y, kept


@pytest.mark.parametrize("factor", [0.5, 0.75, 1.0])
def test_matches_a_plain_python_reference(factor):
    x, experts, w, chosen = _setup(T=40, E=4, k=2, seed=7)
    out = capacity_dispatch(x, experts, w, chosen, capacity_factor=factor)
    y, kept = reference_capacity_dispatch(x, experts, w, chosen, expert_capacity(40, 4, 2, factor))
    assert torch.equal(out.kept, kept) and not kept.all()  # something was dropped
    torch.testing.assert_close(out.y, y, atol=1e-6, rtol=1e-5)


def test_kept_count_never_exceeds_capacity():
    x, experts, w, chosen = _setup(T=64, E=4, k=2, seed=3)
    out = capacity_dispatch(x, experts, w, chosen, capacity_factor=0.75)
    for e in range(4):
        assert int(((chosen == e) & out.kept).sum()) <= out.capacity


def test_shape_errors():
    x, experts, w, chosen = _setup()
    with pytest.raises(ValueError, match="expects x"):
        capacity_dispatch(x[None], experts, w, chosen)
    with pytest.raises(ValueError, match="weights"):
        capacity_dispatch(x, experts, w[:, :1], chosen)

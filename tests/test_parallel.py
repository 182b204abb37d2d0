"""Expert parallelism on 2 and 4 gloo CPU processes equals the single-process block, forward and backward."""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from moe_edu import SparseMoeBlock
from moe_edu.parallel import ExpertParallelMoeBlock, check_expert_parallel, free_port, tiny_config

TOL = 1e-6  # fp32


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_expert_parallel_equals_one_process(world):
    report = check_expert_parallel(world, tokens=24, seed=world, timeout_s=60)
    assert max(report.max_err.values()) <= TOL, report.max_err
    traffic = torch.tensor(report.traffic)  # (world, world)
    assert traffic.shape == (world, world)
    assert traffic.sum().item() == world * 24 * 2  # every (token, slot) assignment travels exactly once
    assert report.expert_rows == traffic.sum(0).tolist()


@pytest.mark.slow
def test_expert_parallel_with_skewed_load_and_top1():
    report = check_expert_parallel(2, tiny_config(num_experts=4, top_k=1), tokens=40, skew=4.0, timeout_s=60)
    assert max(report.max_err.values()) <= TOL, report.max_err
    assert report.expert_rows[0] > report.expert_rows[1]  # expert 0 lives on rank 0


def test_world_must_divide_experts():
    with pytest.raises(ValueError, match="divide num_local_experts"):
        check_expert_parallel(3)


def test_block_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        ExpertParallelMoeBlock(SparseMoeBlock(tiny_config()))


def test_every_collective_waits_with_the_block_timeout(monkeypatch):
    """One gloo rank in this process: the block equals SparseMoeBlock and never waits without a deadline."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, timeout=timedelta(seconds=30)
    )
    try:
        torch.manual_seed(0)
        block = SparseMoeBlock(tiny_config())
        with pytest.raises(ValueError, match="timeout_s"):
            ExpertParallelMoeBlock(block, timeout_s=0)
        ep = ExpertParallelMoeBlock(block, timeout_s=7)
        waits = []

        class Work:  # records the timeout each wait is given
            def __init__(self, work):
                self.work = work

            def wait(self, timeout=None):
                waits.append(timeout)
                return self.work.wait(timeout)

        real = dist.all_to_all_single
        monkeypatch.setattr(dist, "all_to_all_single", lambda *a, **kw: Work(real(*a, **kw)))
        x = torch.randn(2, 5, block.hidden_size, requires_grad=True)
        y, _logits = ep(x)
        y.sum().backward()
        ep.sync_replicated_grads()
        torch.testing.assert_close(y, block(x)[0], rtol=1e-6, atol=1e-6)
        assert len(waits) == 5 and set(waits) == {timedelta(seconds=7)}  # counts, rows, answers, 2 backward sends
    finally:
        dist.destroy_process_group()

"""Expert parallelism on 2 and 4 gloo CPU processes equals the single-process block, forward and backward."""

import pytest
import torch

from moe_edu.parallel_check import check_expert_parallel, tiny_config

TOL = 1e-6  # fp32


@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_equals_one_process(world):
    report = check_expert_parallel(world, tokens=24, seed=world, timeout_s=60)
    assert max(report.max_err.values()) <= TOL, report.max_err
    traffic = torch.tensor(report.traffic)  # (world, world)
    assert traffic.shape == (world, world)
    assert traffic.sum().item() == world * 24 * 2  # every (token, slot) assignment travels exactly once
    assert report.expert_rows == traffic.sum(0).tolist()


def test_expert_parallel_with_skewed_load_and_top1():
    report = check_expert_parallel(2, tiny_config(num_experts=4, top_k=1), tokens=40, skew=4.0, timeout_s=60)
    assert max(report.max_err.values()) <= TOL, report.max_err
    assert report.expert_rows[0] > report.expert_rows[1]  # expert 0 lives on rank 0


def test_world_must_divide_experts():
    with pytest.raises(ValueError, match="divide num_local_experts"):
        check_expert_parallel(3)


def test_block_needs_a_process_group():
    from moe_edu import SparseMoeBlock
    from moe_edu.parallel import ExpertParallelMoeBlock

    with pytest.raises(RuntimeError, match="init_process_group"):
        ExpertParallelMoeBlock(SparseMoeBlock(tiny_config()))

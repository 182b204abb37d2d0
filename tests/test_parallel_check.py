"""The expert-parallel launcher cleans up after itself: a timeout leaves no zombie or orphan worker."""

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moe_edu import SparseMoeBlock
from moe_edu.parallel import ExpertParallelMoeBlock, _reap, check_expert_parallel, free_port, tiny_config


def worker_children() -> list[str]:
    """This process's children that are spawned workers or zombies ("pid state")."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and (fields[0] == "Z" or b"spawn_main" in cmdline):
            found.append(f"{stat.parent.name} {fields[0]}")
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_timeout_leaves_no_worker_behind():
    """The old code terminated the workers without waiting for them: zombies stayed until the test ended."""
    with pytest.raises(TimeoutError, match=r"did not finish in 0.5 s"):
        check_expert_parallel(world=2, timeout_s=0.5)  # the workers are still importing torch
    assert worker_children() == []


def test_bad_arguments_are_refused_before_spawning():
    with pytest.raises(ValueError, match="timeout_s"):
        check_expert_parallel(world=2, timeout_s=0)
    with pytest.raises(ValueError, match="world"):
        check_expert_parallel(world=3)


def mismatch_worker(rank: int, port: int, case: str, out_dir: str) -> None:
    """Rank 1 holds another block than rank 0 (the review's E / H / dtype mismatches)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=20)
    )
    try:
        config, dtype = tiny_config(), torch.float32
        if rank == 1:
            config = {"experts": tiny_config(num_experts=4), "hidden": config.replace(hidden_size=8)}.get(case, config)
            dtype = {"fp64": torch.float64, "bf16-vs-fp16": torch.bfloat16}.get(case, dtype)
        elif case == "bf16-vs-fp16":
            dtype = torch.float16
        torch.manual_seed(0)
        block = SparseMoeBlock(config).to(dtype)
        try:
            ExpertParallelMoeBlock(block, timeout_s=10)
            message = "built"
        except ValueError as err:
            message = str(err)
        Path(out_dir, f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "field"),
    [("experts", "num_experts"), ("hidden", "hidden_size"), ("fp64", "dtype"), ("bf16-vs-fp16", "dtype")],
)
def test_mismatched_ranks_raise_on_every_rank(tmp_path, case, field):
    """They used to SIGABRT (gloo: "Received data size doesn't match") or, fp16 vs bf16, give errors of 0.985 silently."""
    ctx = mp.start_processes(
        mismatch_worker, args=(free_port(), case, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    try:
        deadline = time.monotonic() + 120
        while not ctx.join(timeout=0.5):
            assert time.monotonic() < deadline, "the ranks hung"
    finally:
        _reap(ctx.processes)
    for rank in (0, 1):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert "the ranks hold different blocks" in message and field in message, message


def test_check_arguments_are_validated():
    with pytest.raises(ValueError, match="skew"):
        check_expert_parallel(world=2, skew=float("nan"))
    for tokens in (0, 2.5):
        with pytest.raises(ValueError, match="tokens"):
            check_expert_parallel(world=2, tokens=tokens)

"""Launch an expert-parallel run on local processes and check it against one process.

    report = check_expert_parallel(world=2)      # 2 gloo processes on 127.0.0.1
    report.max_err["y"], report.traffic          # <= 1e-6 (fp32), rows sent rank i -> rank j

Every rank builds the same seeded `SparseMoeBlock` and the same global batch, runs the
single-process block on all of it (the reference), then its `ExpertParallelMoeBlock` on its
own slice, forward and backward, and compares outputs, logits and gradients. Used by
notebook 10 (functions defined in a notebook cannot be spawned, so the worker lives here)
and by `tests/test_parallel.py`. A hang fails after `timeout_s`, not never.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .config import MixtralConfig
from .moe_block import SparseMoeBlock
from .parallel import ExpertParallelMoeBlock, traffic_matrix
from .validation import positive_float


@dataclass
class ParallelReport:
    world: int
    traffic: list[list[int]]  # rows sent from rank i (row) to rank j (column), forward, first all-to-all
    expert_rows: list[int]  # rows each rank's experts processed (its load)
    max_err: dict[str, float]  # worst |EP - single process| over ranks: y, logits, grads


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody is listening on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(num_experts: int = 8, top_k: int = 2) -> MixtralConfig:
    """A block small enough to spawn in a test: H=16, I=24."""
    return MixtralConfig(
        hidden_size=16,
        intermediate_size=24,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        vocab_size=64,
    )


def _worker(
    rank: int,
    world: int,
    port: int,
    config_dict: dict,
    tokens: int,
    seed: int,
    skew: float,
    out_dir: str,
    timeout_s: float,
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    try:
        config = MixtralConfig.from_dict(config_dict)
        torch.manual_seed(seed)  # same block and batch on every rank
        ref = SparseMoeBlock(config, dispatch="loop")
        x = torch.randn(world, tokens, config.hidden_size)  # (world, T, H): rank r owns x[r]
        w0 = ref.gate.weight.detach()[0]  # (H,) expert 0's router row
        x += skew * w0 / w0.norm()  # skew > 0 lifts expert 0's logit by `skew` noise std: rank 0 gets busy
        g = torch.randn_like(x)  # a fixed upstream gradient
        ep = ExpertParallelMoeBlock(ref)  # copies before ref sees any gradient

        xr = x.clone().requires_grad_(True)
        y_ref, logits_ref = ref(xr)
        (y_ref * g).sum().backward()

        mine = x[rank : rank + 1].clone().requires_grad_(True)  # (1, T, H)
        y, logits = ep(mine)
        (y * g[rank : rank + 1]).sum().backward()
        ep.sync_replicated_grads()

        sl = slice(ep.first, ep.first + ep.local)
        errs = {
            "y": (y - y_ref[rank : rank + 1]).abs().max().item(),
            "logits": (logits - logits_ref.view(world, tokens, -1)[rank]).abs().max().item(),
            "grad_x": (mine.grad - xr.grad[rank : rank + 1]).abs().max().item(),
            "grad_router": (ep.gate.weight.grad - ref.gate.weight.grad).abs().max().item(),
            "grad_gate_up": (ep.experts.gate_up_proj.grad - ref.experts.gate_up_proj.grad[sl]).abs().max().item(),
            "grad_down": (ep.experts.down_proj.grad - ref.experts.down_proj.grad[sl]).abs().max().item(),
        }
        traffic = traffic_matrix(ep)  # (world, world)
        result = {"errs": errs, "traffic": traffic.tolist(), "expert_rows": int(traffic[:, rank].sum())}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _reap(processes, grace_s: float = 5.0) -> None:
    """Stop and wait for every worker (SIGTERM, then SIGKILL after `grace_s`): no zombie, no orphan."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def check_expert_parallel(
    world: int = 2,
    config: MixtralConfig | None = None,
    tokens: int = 32,
    *,
    seed: int = 0,
    skew: float = 0.0,
    timeout_s: float = 60.0,
) -> ParallelReport:
    """Spawn `world` gloo processes, run the EP block vs one process, return errors and traffic."""
    config = config or tiny_config()
    positive_float("timeout_s", timeout_s)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1 or config.num_local_experts % world:
        raise ValueError(f"world ({world}) must be >= 1 and divide num_local_experts ({config.num_local_experts})")
    with tempfile.TemporaryDirectory() as out_dir:
        args = (world, free_port(), config.to_dict(), tokens, seed, skew, out_dir, timeout_s / 2)
        ctx = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        try:
            while not ctx.join(timeout=0.5):  # raises if a rank raised
                if time.monotonic() > deadline:
                    raise TimeoutError(f"expert-parallel run with {world} ranks did not finish in {timeout_s} s")
        finally:
            _reap(ctx.processes)
        ranks = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]
    max_err = {key: max(r["errs"][key] for r in ranks) for key in ranks[0]["errs"]}
    return ParallelReport(world, ranks[0]["traffic"], [r["expert_rows"] for r in ranks], max_err)

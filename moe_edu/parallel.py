"""Expert parallelism: each of `world` ranks holds E/world experts; tokens travel by all-to-all.

Every rank routes its own tokens with a replicated router, then

    1. sorts its T*k assignments by expert (= by owning rank: experts are dealt out in blocks),
    2. all-to-all #1: sends each row to the rank that owns its expert,
    3. runs its local experts on what it received (one grouped GEMM pair),
    4. all-to-all #2: sends the answers back to where the tokens live,
    5. combines the k answers per token with the router weights (`moe_edu.dispatch.combine`).

Steps 1-5 are `AllToAllDispatch`, a dispatch like the single-process ones; the block around
it is the ordinary `MoEBlock` with a replicated router and this rank's share of the experts.

The same code runs on gloo (CPU processes) and NCCL (GPUs). Gradients flow through both
all-to-alls (the backward of a send is the reverse send); the replicated router's
gradients are summed across ranks with `sync_replicated_grads`, like data parallelism.
`check_expert_parallel(world=2)` launches it on `world` gloo processes on 127.0.0.1 and checks
it against one process: every rank builds the same seeded `SparseMoeBlock` and global batch, runs
the single-process block on all of it (the reference), then its `ExpertParallelMoeBlock` on its
own slice, forward and backward, and compares outputs, logits and gradients (notebook 10 calls
it: functions defined in a notebook cannot be spawned, so the worker lives here). A hang fails
after `timeout_s`, not never.
"""

from __future__ import annotations

import copy
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
from .dispatch import combine, sort_by_expert
from .experts import Experts
from .moe_block import MoEBlock, SparseMoeBlock
from .validation import finite_float, positive_float, positive_int


class _AllToAll(torch.autograd.Function):
    """Differentiable `dist.all_to_all_single`: rows split by `send` go out, rows split by `recv` come in."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: list[int], recv: list[int], group, timeout: timedelta) -> torch.Tensor:
        ctx.send, ctx.recv, ctx.group, ctx.timeout = send, recv, group, timeout
        out = x.new_empty(sum(recv), *x.shape[1:])  # (sum(recv), H)
        dist.all_to_all_single(
            out, x.contiguous(), output_split_sizes=recv, input_split_sizes=send, group=group, async_op=True
        ).wait(timeout)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllToAll.apply(grad.contiguous(), ctx.recv, ctx.send, ctx.group, ctx.timeout), None, None, None, None


def all_to_all(
    x: torch.Tensor, send: list[int], recv: list[int], group=None, timeout: timedelta = timedelta(seconds=60)
) -> torch.Tensor:
    """Send `send[r]` consecutive rows of x (N, ...) to rank r; receive `recv[r]` rows from rank r; wait <= timeout."""
    return _AllToAll.apply(x, send, recv, group, timeout)


class AllToAllDispatch:
    """The dispatch of an expert-parallel block: same signature as `moe_edu.dispatch.DISPATCHES`.

    `experts` are this rank's E/world experts; `expert_ids` are global ids. Every collective
    waits at most `timeout` (a peer that died raises instead of hanging the block).
    """

    def __init__(self, num_experts: int, group=None, timeout: timedelta = timedelta(seconds=60)) -> None:
        self.group, self.timeout = group, timeout
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        if num_experts % self.world:
            raise ValueError(f"num_local_experts (E={num_experts}) must be divisible by the world size ({self.world})")
        self.num_experts, self.local = num_experts, num_experts // self.world
        self.last_sent = torch.zeros(self.world, dtype=torch.long)  # rows sent to each rank, last call

    def __call__(
        self, x: torch.Tensor, experts: Experts, weights: torch.Tensor, expert_ids: torch.Tensor
    ) -> torch.Tensor:
        """x (N, H) on this rank -> y (N, H): each assignment runs on the rank that owns its expert."""
        k, W, L = expert_ids.shape[1], self.world, self.local
        order, counts = sort_by_expert(expert_ids, self.num_experts)  # (N*k,), (E,) by expert = by rank
        # How many rows each rank sends me for each of my experts: exchange the (E,) counts.
        recv_counts = torch.empty_like(counts)  # (W*L,) from rank s, for my expert l at s*L + l
        dist.all_to_all_single(recv_counts, counts, group=self.group, async_op=True).wait(self.timeout)
        send = counts.view(W, L).sum(1).tolist()  # rows to each rank
        recv_counts = recv_counts.view(W, L)  # (W, L)
        recv = recv_counts.sum(1).tolist()  # rows from each rank
        self.last_sent = torch.tensor(send)

        rows = all_to_all(x[order // k], send, recv, self.group, self.timeout)  # (R, H) by source rank, local expert
        # Regroup what arrived by local expert (it is grouped by source rank first).
        local_id = torch.arange(L, device=x.device).repeat(W)  # (W*L,) local expert of each block
        expert_of_row = torch.repeat_interleave(local_id, recv_counts.reshape(-1))  # (R,)
        perm = torch.argsort(expert_of_row, stable=True)  # (R,)
        local_counts = recv_counts.sum(0)  # (L,) rows per local expert
        out = experts.grouped(rows[perm], local_counts, local_counts.tolist())  # (R, H) by local expert
        out = torch.empty_like(out).index_copy(0, perm, out)  # (R, H) back in arrival order
        back = all_to_all(out, recv, send, self.group, self.timeout)  # (N*k, H) in `order`
        return combine(back, order, weights, x.dtype)  # (N, H)


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_SHAPE_FIELDS = ("num_experts", "hidden_size", "intermediate_size", "top_k", "expert dtype", "router dtype")


def check_ranks_agree(block: SparseMoeBlock, group=None, timeout: timedelta = timedelta(seconds=60)) -> None:
    """Every rank must hold the same block shape and dtypes (E, H, I, k, dtypes): one fixed-size all-gather.

    Mismatched ranks used to abort the process (gloo's size check, SIGABRT) or, where rows had
    the same byte size (fp16 vs bf16), return silently wrong outputs. Raises `ValueError` on every rank.
    """
    code = {d: i for i, d in enumerate(_DTYPES)}
    dtypes = (block.experts.gate_up_proj.dtype, block.gate.weight.dtype)
    mine = [block.num_experts, block.hidden_size, block.experts.intermediate_size, block.top_k]
    mine += [code.get(d, len(_DTYPES)) for d in dtypes]
    mine_t = torch.tensor(mine, dtype=torch.long, device=block.gate.weight.device)  # (6,) on every rank
    rows = [torch.empty_like(mine_t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(rows, mine_t, group=group, async_op=True).wait(timeout)
    table = torch.stack(rows).cpu()  # (world, 6)
    differ = [f for f, col in zip(_SHAPE_FIELDS, table.T, strict=True) if not bool((col == col[0]).all())]
    if differ:
        names = {i: str(d).removeprefix("torch.") for i, d in enumerate(_DTYPES)}
        per_rank = [
            {
                f: (names.get(int(v), "other") if "dtype" in f else int(v))
                for f, v in zip(_SHAPE_FIELDS, row, strict=True)
            }
            for row in table.tolist()
        ]
        detail = "; ".join(f"rank {r}: " + ", ".join(f"{f}={d[f]}" for f in differ) for r, d in enumerate(per_rank))
        raise ValueError(f"ExpertParallelMoeBlock: the ranks hold different blocks ({detail})")


class ExpertParallelMoeBlock(MoEBlock):
    """One rank's share of a `SparseMoeBlock`: the full router, experts [rank*E/world, (rank+1)*E/world).

    The same block, with an all-to-all dispatch. Call it on this rank's tokens x (B, T, H);
    returns `(y, router_logits)` exactly like the single-process block would for those tokens.
    `last_sent` (world,) holds how many rows this rank sent to each rank in the last forward
    (its row of the traffic matrix). Collectives give up after `timeout_s` seconds.
    """

    def __init__(self, block: SparseMoeBlock, group=None, *, timeout_s: float = 60.0) -> None:
        if not dist.is_initialized():
            raise RuntimeError("ExpertParallelMoeBlock needs torch.distributed.init_process_group() first")
        positive_float("timeout_s", timeout_s)
        check_ranks_agree(block, group, timedelta(seconds=timeout_s))  # before any collective of varying size
        dispatch = AllToAllDispatch(block.num_experts, group, timedelta(seconds=timeout_s))
        local = dispatch.local
        first = dispatch.rank * local  # global id of this rank's first expert
        experts = Experts(local, block.hidden_size, block.experts.intermediate_size)
        super().__init__(copy.deepcopy(block.gate), experts, dispatch=dispatch)  # replicated router
        self.experts.to(block.experts.gate_up_proj)  # same device and dtype as the block's experts
        with torch.no_grad():  # MoEBlock initialised fresh weights: take the block's
            self.gate.weight.copy_(block.gate.weight)  # (E, H) the replicated router
            self.experts.gate_up_proj.copy_(block.experts.gate_up_proj[first : first + local])  # (E/world, 2I, H)
            self.experts.down_proj.copy_(block.experts.down_proj[first : first + local])  # (E/world, H, I)
        self.group, self.world, self.rank = group, dispatch.world, dispatch.rank
        self.top_k, self.local, self.first = block.top_k, local, first

    @property
    def last_sent(self) -> torch.Tensor:
        return self.dispatch.last_sent

    def sync_replicated_grads(self) -> None:
        """Sum the replicated router's gradients over ranks (each rank saw only its own tokens)."""
        for p in self.gate.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=self.group, async_op=True).wait(self.dispatch.timeout)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, world={self.world}, experts={self.first}..{self.first + self.local - 1}"


def traffic_matrix(block: ExpertParallelMoeBlock) -> torch.Tensor:
    """(world, world) rows sent from rank i (row) to rank j (column) in the last forward, on every rank."""
    mine = block.last_sent.to(block.gate.weight.device)  # (world,) NCCL needs it on the GPU
    rows = [torch.empty_like(mine) for _ in range(block.world)]
    dist.all_gather(rows, mine, group=block.group, async_op=True).wait(block.dispatch.timeout)
    return torch.stack(rows).cpu()  # (world, world)


# ------------------------------------------------- launching and checking on local processes
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
    positive_int("tokens", tokens)
    finite_float("skew", skew)
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

"""Expert parallelism: each of `world` ranks holds E/world experts; tokens travel by all-to-all.

Every rank routes its own tokens with a replicated router, then

    1. sorts its T*k assignments by expert (= by owning rank: experts are dealt out in blocks),
    2. all-to-all #1: sends each row to the rank that owns its expert,
    3. runs its local experts on what it received (one grouped GEMM pair),
    4. all-to-all #2: sends the answers back to where the tokens live,
    5. combines the k answers per token with the router weights, as `grouped_dispatch` does.

The same code runs on gloo (CPU processes) and NCCL (GPUs). Gradients flow through both
all-to-alls (the backward of a send is the reverse send); the replicated router's
gradients are summed across ranks with `sync_replicated_grads`, like data parallelism.
Notebook 10 launches it on 2 gloo processes; `tests/test_parallel.py` checks it equals
the single-process `SparseMoeBlock`, forward and backward.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from .dispatch import sort_by_expert
from .experts import Experts
from .moe_block import SparseMoeBlock


class _AllToAll(torch.autograd.Function):
    """Differentiable `dist.all_to_all_single`: rows split by `send` go out, rows split by `recv` come in."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: list[int], recv: list[int], group) -> torch.Tensor:
        ctx.send, ctx.recv, ctx.group = send, recv, group
        out = x.new_empty(sum(recv), *x.shape[1:])  # (sum(recv), H)
        dist.all_to_all_single(out, x.contiguous(), output_split_sizes=recv, input_split_sizes=send, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllToAll.apply(grad.contiguous(), ctx.recv, ctx.send, ctx.group), None, None, None


def all_to_all(x: torch.Tensor, send: list[int], recv: list[int], group=None) -> torch.Tensor:
    """Send `send[r]` consecutive rows of x (N, ...) to rank r; receive `recv[r]` rows from rank r."""
    return _AllToAll.apply(x, send, recv, group)


class ExpertParallelMoeBlock(nn.Module):
    """One rank's share of a `SparseMoeBlock`: the full router, experts [rank*E/world, (rank+1)*E/world).

    Call it on this rank's tokens x (B, T, H); returns `(y, router_logits)` exactly like the
    single-process block would for those tokens. `last_sent` (world,) holds how many rows
    this rank sent to each rank in the last forward (its row of the traffic matrix).
    """

    def __init__(self, block: SparseMoeBlock, group=None) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("ExpertParallelMoeBlock needs torch.distributed.init_process_group() first")
        self.group = group
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        E = block.num_experts
        if E % self.world:
            raise ValueError(f"num_local_experts (E={E}) must be divisible by the world size ({self.world})")
        self.num_experts, self.top_k, self.hidden_size = E, block.top_k, block.hidden_size
        self.local = E // self.world  # experts per rank
        self.first = self.rank * self.local  # global id of this rank's first expert
        self.gate = copy.deepcopy(block.gate)  # replicated router
        mine = slice(self.first, self.first + self.local)
        self.experts = Experts(self.local, block.hidden_size, block.experts.intermediate_size)
        self.experts.to(block.experts.gate_up_proj)  # same device and dtype as the block's experts
        with torch.no_grad():
            self.experts.gate_up_proj.copy_(block.experts.gate_up_proj[mine])  # (E/world, 2I, H)
            self.experts.down_proj.copy_(block.experts.down_proj[mine])  # (E/world, H, I)
        self.last_sent = torch.zeros(self.world, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, H) on this rank -> y: (B, T, H), router_logits: (B*T, E)."""
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"expected x of shape (batch, tokens, hidden_size={self.hidden_size}), got {tuple(x.shape)}")
        B, T, H = x.shape
        flat = x.reshape(-1, H)  # (N, H)
        logits, weights, chosen = self.gate(flat)  # (N, E), (N, k), (N, k)
        k, W, L = self.top_k, self.world, self.local
        order, counts = sort_by_expert(chosen, self.num_experts)  # (N*k,), (E,) sorted by expert = by rank
        # How many rows each rank sends me for each of my experts: exchange the (E,) counts.
        recv_counts = torch.empty_like(counts)  # (W*L,) from rank s, for my expert l at s*L + l
        dist.all_to_all_single(recv_counts, counts, group=self.group)
        send = counts.view(W, L).sum(1).tolist()  # rows to each rank
        recv_counts = recv_counts.view(W, L)  # (W, L)
        recv = recv_counts.sum(1).tolist()  # rows from each rank
        self.last_sent = torch.tensor(send)

        rows = all_to_all(flat[order // k], send, recv, self.group)  # (R, H) by source rank, then local expert
        # Regroup what arrived by local expert (it is grouped by source rank first).
        local_id = torch.arange(L, device=x.device).repeat(W)  # (W*L,) local expert of each block
        expert_of_row = torch.repeat_interleave(local_id, recv_counts.reshape(-1))  # (R,)
        perm = torch.argsort(expert_of_row, stable=True)  # (R,)
        local_counts = recv_counts.sum(0)  # (L,) rows per local expert
        out = self.experts.grouped(rows[perm], local_counts, local_counts.tolist())  # (R, H) by local expert
        out = torch.empty_like(out).index_copy(0, perm, out)  # (R, H) back in arrival order

        back = all_to_all(out, recv, send, self.group)  # (N*k, H) in `order`
        back = torch.empty_like(back).index_copy(0, order, back)  # (N*k, H) in (token, slot) order
        y = (back.view(B * T, k, H) * weights.unsqueeze(-1)).sum(1)  # (N, H) fp32 weighted sum
        return y.to(x.dtype).reshape(B, T, H), logits

    def sync_replicated_grads(self) -> None:
        """Sum the replicated router's gradients over ranks (each rank saw only its own tokens)."""
        for p in self.gate.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=self.group)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, world={self.world}, experts={self.first}..{self.first + self.local - 1}"


def traffic_matrix(block: ExpertParallelMoeBlock) -> torch.Tensor:
    """(world, world) rows sent from rank i (row) to rank j (column) in the last forward, on every rank."""
    mine = block.last_sent.to(block.gate.weight.device)  # (world,) NCCL needs it on the GPU
    rows = [torch.empty_like(mine) for _ in range(block.world)]
    dist.all_gather(rows, mine, group=block.group)
    return torch.stack(rows).cpu()  # (world, world)

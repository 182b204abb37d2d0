"""Expert capacity and token dropping, expressed as masked assignments over the shared dispatch.

Switch and GShard give every expert a buffer of C rows per batch,

    C = ceil(capacity_factor * k * N / E)      (N tokens, k choices each, E experts),

and an assignment that arrives when its expert's buffer is full is *dropped*: that expert
does not run on that token, and a token that loses all its experts leaves the MoE layer
with output 0, so only the residual connection carries it. Priority is first come,
first served, and every token's first choice comes before any second choice (GShard).

Dropping is a mask over the (N, k) assignments; the kept ones go through
`moe_edu.dispatch.grouped_dispatch` unchanged (no second dispatch implementation).
Notebook 03 introduces dropless vs capacity; notebook 09 compares the variants.
"""

from __future__ import annotations

import math

import torch

from ..dispatch import grouped_dispatch, sort_by_expert
from ..experts import Experts
from .base import check_capacity_factor


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """C = ceil(capacity_factor * k * N / E), at least 1 and at most N (no expert can use more rows).

    Same formula and argument order as notebook 03's `moe_edu.capacity.expert_capacity`, plus
    the clamp to [1, N] that expert choice needs (an expert cannot pick more tokens than exist).
    """
    check_capacity_factor(capacity_factor)
    k = top_k
    for name, value in (("num_tokens", num_tokens), ("num_experts", num_experts), ("top_k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"expert_capacity: {name} must be a positive int, got {value!r}")
    return max(1, min(num_tokens, math.ceil(capacity_factor * k * num_tokens / num_experts)))


def queue_positions(chosen: torch.Tensor, num_experts: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """Each assignment's place in its expert's queue (0 = first), slot-major first come first served.

    chosen (N, k) expert ids; active (N, k) bool, assignments that queue at all (inactive ones
    get position -1 and take no room). Returns (N, k) int64.
    """
    N, k = chosen.shape
    slot_major = chosen.t()  # (k, N): every first choice, then every second choice
    if active is not None:
        slot_major = torch.where(active.t(), slot_major, num_experts)  # inactive -> a dummy expert E
    order, counts = sort_by_expert(slot_major, num_experts + 1)  # (k*N,), (E+1,) stable: keeps priority order
    starts = torch.cumsum(counts, 0) - counts  # (E+1,) first sorted row of each expert
    sorted_expert = slot_major.reshape(-1)[order]  # (k*N,)
    rank = torch.arange(order.numel(), device=chosen.device) - starts[sorted_expert]  # (k*N,) place in queue
    position = torch.empty_like(rank).scatter_(0, order, rank)  # (k*N,) back to slot-major order
    position = position.reshape(k, N).t()  # (N, k)
    if active is not None:
        position = position.masked_fill(~active, -1)
    return position


def keep_within_capacity(chosen: torch.Tensor, num_experts: int, capacity: int,
                         active: torch.Tensor | None = None) -> torch.Tensor:
    """(N, k) bool: assignments that fit in their expert's buffer of `capacity` rows."""
    if chosen.dim() != 2:
        raise ValueError(f"chosen must be (tokens, k), got shape {tuple(chosen.shape)}")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"capacity must be an int >= 0, got {capacity!r}")
    if active is not None and active.shape != chosen.shape:
        raise ValueError(f"active must have chosen's shape {tuple(chosen.shape)}, got {tuple(active.shape)}")
    position = queue_positions(chosen, num_experts, active)  # (N, k)
    return (position >= 0) & (position < capacity)  # (N, k)


def dispatch_assignments(x: torch.Tensor, experts: Experts, token: torch.Tensor, expert: torch.Tensor,
                         weight: torch.Tensor) -> torch.Tensor:
    """Run a flat list of A (token, expert, weight) assignments: y[t] = sum weight * expert(x[t]).

    x (N, H); token, expert, weight (A,). Each assignment becomes one row with k = 1 for
    `grouped_dispatch`, then rows are summed back per token. Tokens absent from the list get 0.
    """
    rows = grouped_dispatch(x[token], experts, weight[:, None], expert[:, None])  # (A, H)
    return torch.zeros_like(x).index_add_(0, token, rows)  # (N, H)


def dispatch_kept(x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor,
                  keep: torch.Tensor) -> torch.Tensor:
    """`grouped_dispatch` restricted to the kept assignments: dropped ones cost nothing and add nothing."""
    token, slot = torch.nonzero(keep, as_tuple=True)  # (A,), (A,)
    return dispatch_assignments(x, experts, token, chosen[token, slot], weights[token, slot])  # (N, H)

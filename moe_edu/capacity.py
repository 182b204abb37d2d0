"""Expert capacity and token dropping, expressed as masked assignments over the shared dispatch.

Mixtral is *dropless*: every token reaches its k experts however unbalanced the routing
(`moe_edu.dispatch`). Earlier MoEs (GShard, Switch Transformer) gave every expert a fixed
buffer of

    C = ceil(capacity_factor * T * k / E)

slots so that all experts run the same-sized matmul; an assignment that arrives when its
expert's buffer is full is *dropped*: that expert does not run on that token, and a token
that loses all its experts leaves the layer with output 0 (only the residual carries it).
Priority is first come, first served, every first choice before any second choice.

Dropping is a mask over the (T, k) assignments (`keep_within_capacity`); the kept ones go
through the ordinary dispatch (`moe_edu.dispatch.dispatch_kept`). Notebook 03 contrasts dropless and
capacity; the Switch / GShard / expert-choice variants of notebook 09 (`moe_edu.variants`)
build on these functions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .dispatch import dispatch_kept, sort_by_expert
from .experts import Experts
from .routing import Router
from .validation import nonnegative_int, positive_float, positive_int


def check_capacity_factor(value: float, name: str = "capacity_factor") -> float:
    return float(positive_float(name, value))


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """C = ceil(capacity_factor * T * k / E) slots per expert, at most T (an expert cannot use more rows)."""
    check_capacity_factor(capacity_factor)
    for name, value in (("num_tokens", num_tokens), ("num_experts", num_experts), ("top_k", top_k)):
        positive_int(f"expert_capacity: {name}", value)
    return min(num_tokens, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def queue_positions(chosen: torch.Tensor, num_experts: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """Each assignment's place in its expert's queue (0 = first), slot-major first come first served.

    chosen (T, k) expert ids; active (T, k) bool, assignments that queue at all (inactive ones
    get position -1 and take no room). Returns (T, k) int64.
    """
    T, k = chosen.shape
    slot_major = chosen.t()  # (k, T): every first choice, then every second choice
    if active is not None:
        slot_major = torch.where(active.t(), slot_major, num_experts)  # inactive -> a dummy expert E
    order, counts = sort_by_expert(slot_major, num_experts + 1)  # (k*T,), (E+1,) stable: keeps priority order
    starts = torch.cumsum(counts, 0) - counts  # (E+1,) first sorted row of each expert
    sorted_expert = slot_major.reshape(-1)[order]  # (k*T,)
    rank = torch.arange(order.numel(), device=chosen.device) - starts[sorted_expert]  # (k*T,) place in queue
    position = torch.empty_like(rank).scatter_(0, order, rank).reshape(k, T).t()  # (T, k)
    if active is not None:
        position = position.masked_fill(~active, -1)
    return position


def keep_within_capacity(
    chosen: torch.Tensor, num_experts: int, capacity: int, active: torch.Tensor | None = None
) -> torch.Tensor:
    """(T, k) bool: assignments that fit in their expert's buffer of `capacity` rows."""
    if chosen.dim() != 2:
        raise ValueError(f"chosen must be (tokens, k), got shape {tuple(chosen.shape)}")
    nonnegative_int("capacity", capacity)
    if active is not None and active.shape != chosen.shape:
        raise ValueError(f"active must have chosen's shape {tuple(chosen.shape)}, got {tuple(active.shape)}")
    position = queue_positions(chosen, num_experts, active)  # (T, k)
    return (position >= 0) & (position < capacity)  # (T, k)


class CapacityRouter(Router):
    """A router whose experts hold C = ceil(capacity_factor * N * slots / E) rows each (Switch, GShard, EC)."""

    slots_per_token = 1  # k in C's formula

    def __init__(self, hidden_size: int, num_experts: int, capacity_factor: float) -> None:
        super().__init__(hidden_size, num_experts)
        self.capacity_factor = capacity_factor

    @property
    def capacity_factor(self) -> float:
        """C's factor; settable (checked: a positive number)."""
        return self._capacity_factor

    @capacity_factor.setter
    def capacity_factor(self, value: float) -> None:
        self._capacity_factor = check_capacity_factor(value)

    def capacity(self, num_tokens: int) -> int:
        return expert_capacity(num_tokens, self.num_experts, self.slots_per_token, self.capacity_factor)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, capacity_factor={self.capacity_factor:g}"


class CapacityDispatch(NamedTuple):
    y: torch.Tensor  # (T, H) weighted sum over the kept assignments only
    kept: torch.Tensor  # (T, k) bool: False where the assignment was dropped
    capacity: int  # C, slots per expert


def capacity_dispatch(
    x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor, capacity_factor: float = 1.25
) -> CapacityDispatch:
    """Dispatch like `moe_edu.dispatch.loop_dispatch`, but each expert keeps at most C assignments (FCFS).

    Dropped assignments contribute nothing (weights are *not* renormalised over the kept
    ones). With `capacity_factor >= E / k` nothing is dropped and `y` equals the dropless result.
    """
    if x.dim() != 2 or chosen.dim() != 2 or weights.shape != chosen.shape or chosen.shape[0] != x.shape[0]:
        raise ValueError(
            f"capacity_dispatch expects x (T, H), weights and chosen (T, k); got x {tuple(x.shape)}, "
            f"weights {tuple(weights.shape)}, chosen {tuple(chosen.shape)}"
        )
    T, k = chosen.shape
    C = expert_capacity(T, experts.num_experts, k, capacity_factor)
    kept = keep_within_capacity(chosen, experts.num_experts, C)  # (T, k)
    return CapacityDispatch(dispatch_kept(x, experts, weights, chosen, kept), kept, C)


__all__ = [
    "CapacityDispatch",
    "CapacityRouter",
    "capacity_dispatch",
    "check_capacity_factor",
    "expert_capacity",
    "keep_within_capacity",
    "queue_positions",
]

"""Capacity-based dispatch: each expert takes at most C assignments; the overflow is dropped.

Mixtral is *dropless*: every token reaches its k experts however unbalanced the routing
(`moe_edu.dispatch`). Earlier MoEs (GShard, Switch Transformer) gave every expert a fixed
buffer of

    C = ceil(capacity_factor * T * k / E)

slots so that all experts run the same-sized matmul; assignments beyond C are dropped and
the token keeps only what its residual connection carries. Notebook 03 contrasts the two.
This is the minimal version (first come, first served; first choices before second
choices); the Switch / GShard variants with their own priorities live in `moe_edu.variants`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .experts import Experts


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """C = ceil(capacity_factor * T * k / E): the slots each expert gets."""
    if not (isinstance(capacity_factor, (int, float)) and math.isfinite(capacity_factor) and capacity_factor > 0):
        raise ValueError(f"capacity_factor must be a finite number > 0, got {capacity_factor!r}")
    for name, v in (("num_tokens", num_tokens), ("num_experts", num_experts), ("top_k", top_k)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return math.ceil(capacity_factor * num_tokens * top_k / num_experts)


class CapacityDispatch(NamedTuple):
    y: torch.Tensor  # (T, H) weighted sum over the kept assignments only
    kept: torch.Tensor  # (T, k) bool: False where the assignment was dropped
    capacity: int  # C, slots per expert


def capacity_dispatch(
    x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor, capacity_factor: float = 1.25
) -> CapacityDispatch:
    """Dispatch like `moe_edu.dispatch.loop_dispatch`, but each expert keeps at most C assignments.

    Priority: all first choices (slot 0) in token order, then all second choices, ... .
    Dropped assignments contribute nothing (weights are *not* renormalised over the kept
    ones). With a large enough `capacity_factor` (>= E / k) nothing is dropped and `y`
    equals the dropless result.
    """
    if x.dim() != 2 or chosen.dim() != 2 or weights.shape != chosen.shape or chosen.shape[0] != x.shape[0]:
        raise ValueError(
            f"capacity_dispatch expects x (T, H), weights and chosen (T, k); got x {tuple(x.shape)}, "
            f"weights {tuple(weights.shape)}, chosen {tuple(chosen.shape)}"
        )
    T, k = chosen.shape
    E = experts.num_experts
    C = expert_capacity(T, E, k, capacity_factor)
    slot_major = chosen.t().reshape(-1)  # (k*T,) first choices of all tokens, then second choices
    onehot = F.one_hot(slot_major, E)  # (k*T, E)
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # (k*T,) arrival index at its expert
    kept = (position < C).reshape(k, T).t()  # (T, k)
    y = torch.zeros_like(x)  # (T, H)
    for e in range(E):
        token, slot = torch.where((chosen == e) & kept)  # (n_e,), (n_e,) with n_e <= C
        if token.numel():
            out = experts.expert(e, x[token])  # (n_e, H)
            y.index_add_(0, token, (out * weights[token, slot, None]).to(y.dtype))  # (T, H)
    return CapacityDispatch(y, kept, C)

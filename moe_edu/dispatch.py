"""Dispatch: send each token to its k experts and combine the weighted answers.

Every implementation has the same signature and returns the same numbers:

    dispatch(x (T, H), experts, weights (T, k), chosen (T, k)) -> y (T, H)
    y[t] = sum_j weights[t, j] * expert_{chosen[t, j]}(x[t])

- `loop`    the readable reference: one pass per expert over the tokens it was given.
- `dense`   the teaching version: run *every* expert on *every* token, zero the unchosen
            (E/k times the FLOPs: what sparsity saves).
- `grouped` the fast default: one stable sort of the T*k assignments by expert, then one
            contiguous GEMM per expert (a single `grouped_mm` where torch has it).

Notebook 03 builds all three by hand; tests check they agree (values and gradients).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .experts import Experts

Dispatch = Callable[[torch.Tensor, Experts, torch.Tensor, torch.Tensor], torch.Tensor]


def loop_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Reference: for each expert, gather its tokens, run it, add the weighted output back."""
    y = torch.zeros_like(x)  # (T, H)
    for e in range(experts.num_experts):
        token, slot = torch.where(chosen == e)  # (n_e,), (n_e,): which tokens chose e, in which top-k slot
        if token.numel() == 0:
            continue  # sparse activation: an expert nobody chose costs nothing
        out = experts.expert(e, x[token])  # (n_e, H)
        y.index_add_(0, token, (out * weights[token, slot, None]).to(y.dtype))  # (T, H)
    return y


def dense_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Teaching version: all E experts on all T tokens, then a (T, E) weight matrix with k non-zeros per row."""
    every = experts(x)  # (E, T, H)
    gates = torch.zeros(x.shape[0], experts.num_experts, dtype=weights.dtype, device=x.device)  # (T, E)
    gates = gates.scatter(1, chosen, weights)  # (T, E)
    return torch.einsum("te,eth->th", gates.to(every.dtype), every).to(x.dtype)  # (T, H)


def sort_by_expert(chosen: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order the T*k (token, slot) assignments by expert.

    Returns `order` (T*k,), indices into the flattened (T, k) assignments grouped by
    expert (stable: tokens keep their order inside a group), and `counts` (E,).
    """
    flat = chosen.reshape(-1)  # (T*k,)
    order = torch.argsort(flat, stable=True)  # (T*k,)
    counts = torch.bincount(flat, minlength=num_experts)  # (E,)
    return order, counts


def _use_grouped_mm(x: torch.Tensor, experts: Experts) -> bool:
    return hasattr(F, "grouped_mm") and x.dtype == experts.gate_up_proj.dtype and (
        x.device.type == "cuda" or not torch.is_grad_enabled()
    )


def grouped_expert_forward(xs: torch.Tensor, experts: Experts, counts: torch.Tensor) -> torch.Tensor:
    """All experts on expert-sorted rows: xs (N, H) with `counts[e]` rows for expert e -> (N, H)."""
    if _use_grouped_mm(xs, experts):
        offs = counts.cumsum(0).to(torch.int32)  # (E,) end row of each group; stays on the device
        h = F.grouped_mm(xs, experts.gate_up_proj.transpose(-2, -1), offs=offs)  # (N, 2I)
        gate, up = h.chunk(2, dim=-1)  # (N, I), (N, I)
        return F.grouped_mm(F.silu(gate) * up, experts.down_proj.transpose(-2, -1), offs=offs)  # (N, H)
    groups = xs.split(counts.tolist())  # E views, one host sync
    outs = [experts.expert(e, g) for e, g in enumerate(groups) if g.shape[0]]  # each (n_e, H)
    return torch.cat(outs) if outs else xs.new_zeros(xs.shape)  # (N, H)


def grouped_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Sort assignments by expert, one contiguous GEMM per expert, scatter-add back."""
    k = chosen.shape[1]
    order, counts = sort_by_expert(chosen, experts.num_experts)  # (T*k,), (E,)
    token = order // k  # (T*k,) the token of each sorted assignment
    out = grouped_expert_forward(x[token], experts, counts)  # (T*k, H)
    out = out * weights.reshape(-1)[order, None]  # (T*k, H), fp32 weights as in transformers
    return torch.zeros_like(x).index_add_(0, token, out.to(x.dtype))  # (T, H)


DISPATCHES: dict[str, Dispatch] = {
    "loop": loop_dispatch,
    "dense": dense_dispatch,
    "grouped": grouped_dispatch,
}


def get_dispatch(name: str) -> Dispatch:
    try:
        return DISPATCHES[name]
    except KeyError:
        raise ValueError(f"unknown dispatch {name!r}; choose one of {sorted(DISPATCHES)}") from None

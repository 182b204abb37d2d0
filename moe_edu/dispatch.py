"""Dispatch: send each token to its k experts and combine the weighted answers.

Every implementation has the same signature and returns the same numbers:

    dispatch(x (T, H), experts, weights (T, k), chosen (T, k)) -> y (T, H)
    y[t] = sum_j weights[t, j] * expert_{chosen[t, j]}(x[t])

- `loop`    the readable reference: one pass per expert over the tokens it was given.
- `dense`   the teaching version: run *every* expert on *every* token, zero the unchosen
            (E/k times the FLOPs: what sparsity saves).
- `grouped` the fast default: one stable sort of the T*k assignments by expert, then one
            contiguous GEMM per expert (a single `grouped_mm` kernel on CUDA bf16);
            single tokens on CPU go to `decode`.
- `decode`  token by token, indexing the chosen experts' weights directly: the cheapest
            way to run one token (no sort, no scatter), the slowest for many.

Notebook 03 builds loop/dense/grouped by hand, notebook 10 measures them; tests check all agree
(values and gradients).
"""

from __future__ import annotations

from typing import Callable

import torch

from .experts import Experts
from .grouped_mm import grouped_mm_kernel_available

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
    Counts come from `scatter_add_`, not `bincount`, which syncs with the host on CUDA.
    """
    flat = chosen.reshape(-1)  # (T*k,)
    order = torch.argsort(flat, stable=True)  # (T*k,)
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat.device)  # (E,)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # (E,)
    return order, counts


def decode_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Token by token: index each chosen expert's weights directly; no sort, no scatter.

    The fast path for decoding (T = 1): k matrix-vector products and nothing else.
    Reads `chosen` on the host, which is free on CPU and one sync on a GPU.
    """
    rows = []
    for t, picks in enumerate(chosen.tolist()):
        xt = x[t : t + 1]  # (1, H)
        row = 0
        for j, e in enumerate(picks):
            row = row + experts.expert(e, xt) * weights[t, j, None]  # (1, H) fp32 weights: fp32 sum
        rows.append(row)
    if not rows:
        return torch.zeros_like(x)
    return (rows[0] if len(rows) == 1 else torch.cat(rows)).to(x.dtype)  # (T, H)


DECODE_MAX_TOKENS = 1  # on CPU, at inference, grouped dispatch hands batches this small to `decode_dispatch`


def grouped_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Sort assignments by expert, one grouped GEMM pair over all of them, un-sort, weighted sum over k.

    On CUDA bf16 this is two `grouped_mm` kernels and no host sync; on CPU torch's grouped
    kernel where it applies (fp32/bf16, aligned rows); elsewhere one `counts.tolist()` and
    a loop of GEMMs writing into one buffer. Single tokens on CPU
    take `decode_dispatch` at inference (in training, indexing each expert's weights would
    build a full-size zero gradient per index; the grouped backward builds one per weight). The k-way sum runs in fp32 (the router's weights are fp32),
    in a fixed order, so results are deterministic on every device.
    """
    T, k = chosen.shape
    training = torch.is_grad_enabled() and experts.gate_up_proj.requires_grad
    if T <= DECODE_MAX_TOKENS and x.device.type == "cpu" and not training:
        return decode_dispatch(x, experts, weights, chosen)  # (T, H)
    order, counts = sort_by_expert(chosen, experts.num_experts)  # (T*k,), (E,)
    on_gpu_kernel = x.device.type != "cpu" and grouped_mm_kernel_available(x, experts.gate_up_proj)
    sizes = None if on_gpu_kernel else counts.tolist()  # host sizes: free on CPU, one sync elsewhere
    token = order // k  # (T*k,) the token of each sorted assignment
    out = experts.grouped(x[token], counts, sizes)  # (T*k, H) grouped by expert
    out = torch.empty_like(out).index_copy(0, order, out)  # (T*k, H) back in (token, slot) order
    y = (out.view(T, k, x.shape[1]) * weights.unsqueeze(-1)).sum(1)  # (T, H) fp32 weights: fp32 sum
    return y.to(x.dtype)


DISPATCHES: dict[str, Dispatch] = {
    "loop": loop_dispatch,
    "dense": dense_dispatch,
    "grouped": grouped_dispatch,
    "decode": decode_dispatch,
}


def get_dispatch(name: str) -> Dispatch:
    try:
        return DISPATCHES[name]
    except KeyError:
        raise ValueError(f"unknown dispatch {name!r}; choose one of {sorted(DISPATCHES)}") from None

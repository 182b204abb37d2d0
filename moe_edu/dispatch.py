"""Dispatch: send each token to its k experts and combine the weighted answers.

Every implementation has the same signature and returns the same numbers:

    dispatch(x (T, H), experts, weights (T, k), expert_ids (T, k)) -> y (T, H)
    y[t] = sum_j weights[t, j] * expert_{expert_ids[t, j]}(x[t])

- `loop`    the readable reference: one pass per expert over the tokens it was given.
- `dense`   the teaching version: run *every* expert on *every* token, zero the unchosen
            (E/k times the FLOPs: what sparsity saves).
- `grouped` the fast default: one stable sort of the T*k assignments by expert, the experts
            on contiguous row groups, then un-sort and combine. *How* it runs is chosen in
            one place, `choose_path`, from (device, dtype, token count, grad).
- `decode`  the assignments grouped on the host, each chosen expert's weights indexed directly:
            the cheapest way to run a few tokens (no sort, no scatter), the slowest for many.

`dispatch_kept` runs any of them on a subset of the assignments (capacity and dropping,
expert choice). Notebook 03 builds loop/dense/grouped by hand, notebook 10 measures them;
tests check all agree (values and gradients).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .experts import Experts
from .grouped_mm import grouped_mm_kernel_available

Dispatch = Callable[[torch.Tensor, Experts, torch.Tensor, torch.Tensor], torch.Tensor]

DECODE_MAX_ASSIGNMENTS = 16  # on CPU, at inference, T*k this small skips the sort (`decode_dispatch`)


def loop_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """Reference: for each expert, gather its tokens, run it, add the weighted output back."""
    y = torch.zeros_like(x)  # (T, H)
    for e in range(experts.num_experts):
        token, slot = torch.where(expert_ids == e)  # (n_e,), (n_e,): which tokens chose e, in which top-k slot
        if token.numel() == 0:
            continue  # sparse activation: an expert nobody chose costs nothing
        out = experts.expert(e, x[token])  # (n_e, H)
        y.index_add_(0, token, (out * weights[token, slot, None]).to(y.dtype))  # (T, H)
    return y


def dense_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """Teaching version: all E experts on all T tokens, then a (T, E) weight matrix with k non-zeros per row."""
    every = experts.dense(x)  # (E, T, H)
    gates = torch.zeros(x.shape[0], experts.num_experts, dtype=weights.dtype, device=x.device)  # (T, E)
    gates = gates.scatter(1, expert_ids, weights)  # (T, E)
    return torch.einsum("te,eth->th", gates.to(every.dtype), every).to(x.dtype)  # (T, H)


def decode_dispatch(x: torch.Tensor, experts: Experts, weights: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """A few tokens: group the T*k assignments by expert on the host, no sort, no scatter, no (T*k, H) buffer.

    Each chosen expert runs once on the rows that chose it, its weights indexed directly; at
    inference the weighting and the sum over k are fused into the down projection (`addmm_`
    with alpha = the weight). The fast path for decoding (T*k <= DECODE_MAX_ASSIGNMENTS),
    the slowest for many tokens. Reads `expert_ids` on the host: free on CPU, one sync on a GPU.
    """
    T, k = expert_ids.shape
    by_expert: dict[int, list[int]] = {}  # expert -> its assignments a (token a // k, slot a % k)
    for a, e in enumerate(expert_ids.reshape(-1).tolist()):
        by_expert.setdefault(e, []).append(a)
    if torch.is_grad_enabled() and (x.requires_grad or weights.requires_grad or experts.gate_up_proj.requires_grad):
        y = torch.zeros(T, x.shape[1], dtype=weights.dtype, device=x.device)  # (T, H) fp32 sum over k
        flat_w = weights.reshape(-1)  # (T*k,)
        for e, assigned in sorted(by_expert.items()):
            a = torch.tensor(assigned, device=x.device)  # (n_e,)
            out = experts.expert(e, x[a // k]) * flat_w[a, None]  # (n_e, H) weighted, differentiable
            y = y.index_add(0, a // k, out.to(y.dtype))  # (T, H)
        return y.to(x.dtype)
    y = x.new_zeros(T, x.shape[1])  # (T, H)
    w = weights.reshape(-1).tolist()  # host floats, the alphas of addmm_
    for e, assigned in by_expert.items():
        tokens = [a // k for a in assigned]
        rows = x[tokens[0] : tokens[0] + 1] if len(tokens) == 1 else x[tokens]  # (n_e, H)
        gate, up = torch.mm(rows, experts.gate_up_proj[e].t()).chunk(2, dim=-1)  # (n_e, I), (n_e, I)
        act, w2 = F.silu(gate).mul_(up), experts.down_proj[e].t()  # (n_e, I), (I, H)
        if len(tokens) == 1:  # the usual case when decoding: y[t] += w[t, j] * expert_e(x[t]) in one call
            y[tokens[0] : tokens[0] + 1].addmm_(act, w2, alpha=w[assigned[0]])  # (1, H)
        else:  # one GEMM for the expert's rows (its weights read once), then a weighted add per row
            scale = torch.tensor([w[a] for a in assigned], dtype=weights.dtype, device=x.device)[:, None]  # (n_e, 1)
            out = torch.mm(act, w2)  # (n_e, H)
            out = out.mul_(scale) if out.dtype == scale.dtype else (out * scale).to(y.dtype)  # bf16: weigh in fp32
            y.index_add_(0, torch.tensor(tokens, device=x.device), out)  # (T, H)
    return y


def sort_by_expert(expert_ids: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order the T*k (token, slot) assignments by expert.

    Returns `order` (T*k,), indices into the flattened (T, k) assignments grouped by
    expert (stable: tokens keep their order inside a group), and `counts` (E,).
    Counts come from `scatter_add_`, not `bincount`, which syncs with the host on CUDA.
    """
    flat = expert_ids.reshape(-1)  # (T*k,)
    order = torch.argsort(flat, stable=True)  # (T*k,)
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat.device)  # (E,)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # (E,)
    return order, counts


def combine(out: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Un-sort and combine: out (T*k, H) holds the assignments in `order` -> y (T, H) = sum_j w[t, j] out[t, j].

    The k-way sum runs in fp32 (the router's weights are fp32). On CPU one weighted
    `index_add_` (in order, so deterministic; the weighting in place when nothing needs `out`
    for a gradient); elsewhere an `index_copy` back to (token, slot)
    order and a sum over k in a fixed order, so results are deterministic on every device.
    """
    T, k = weights.shape
    if out.device.type == "cpu":
        w = weights.reshape(-1).index_select(0, order)[:, None]  # (T*k, 1) weight of each sorted row
        scaled = out * w if out.requires_grad or out.dtype != w.dtype else out.mul_(w)  # (T*k, H) fp32
        y = torch.zeros(T, out.shape[1], dtype=scaled.dtype, device=out.device)  # (T, H)
        return y.index_add_(0, order // k, scaled).to(dtype)  # (T, H)
    out = torch.empty_like(out).index_copy(0, order, out)  # (T*k, H) back in (token, slot) order
    return (out.view(T, k, out.shape[1]) * weights.unsqueeze(-1)).sum(1).to(dtype)  # (T, H)


def choose_path(x: torch.Tensor, experts: Experts, top_k: int = 1) -> str:
    """How `grouped_dispatch` runs, decided in this one place from (device, dtype, assignments T*k, grad).

    - "decode":     CPU inference on T*k <= DECODE_MAX_ASSIGNMENTS (no sort at all);
    - "per_expert": other CPU inference: one GEMM pair per expert into one buffer (measured
                    faster than torch's CPU grouped kernel at every size of the benchmark);
    - "kernel":     torch's fused `grouped_mm` (CUDA bf16 on SM >= 80; CPU fp32/bf16 aligned),
                    when gradients are needed or off the CPU;
    - "loop":       everywhere else, a loop of GEMMs with a hand-written backward.

    In training the per-expert inference path would not do: indexing each expert's weights
    builds a full-size zero gradient per index, while the grouped backward builds one.
    (The expert-parallel dispatch, `moe_edu.parallel.AllToAllDispatch`, does not come here: its
    rows arrive from other ranks, and `grouped_matmul` picks kernel or loop for them itself.)
    """
    grad = torch.is_grad_enabled() and (x.requires_grad or experts.gate_up_proj.requires_grad)
    if x.device.type == "cpu" and not grad:
        return "decode" if x.shape[0] * top_k <= DECODE_MAX_ASSIGNMENTS else "per_expert"
    down = experts.down_proj  # (E, H, I): its rows stand in for the (N, I) intermediate in the check
    kernel = grouped_mm_kernel_available(x, experts.gate_up_proj.mT) and grouped_mm_kernel_available(
        down[0], down.mT
    )  # both projections must qualify
    return "kernel" if kernel else "loop"


def grouped_dispatch(
    x: torch.Tensor, experts: Experts, weights: torch.Tensor, expert_ids: torch.Tensor
) -> torch.Tensor:
    """Sort assignments by expert, run each expert on its contiguous rows, un-sort, weighted sum over k.

    On CUDA bf16 this is two `grouped_mm` kernels and no host sync; elsewhere one
    `counts.tolist()` (free on CPU). `choose_path` says which.
    """
    path = choose_path(x, experts, expert_ids.shape[1])
    if path == "decode":
        return decode_dispatch(x, experts, weights, expert_ids)  # (T, H)
    order, counts = sort_by_expert(expert_ids, experts.num_experts)  # (T*k,), (E,)
    sizes = None if path == "kernel" else counts.tolist()  # host sizes: free on CPU, one sync elsewhere
    rows = x.index_select(0, order // expert_ids.shape[1])  # (T*k, H) each assignment's token, grouped by expert
    out = experts.grouped(rows, counts, sizes, path=path)  # (T*k, H)
    return combine(out, order, weights, x.dtype)  # (T, H)


DISPATCHES: dict[str, Dispatch] = {
    "loop": loop_dispatch,
    "dense": dense_dispatch,
    "grouped": grouped_dispatch,
    "decode": decode_dispatch,
}


def get_dispatch(dispatch: str | Dispatch) -> Dispatch:
    """A dispatch by name (see `DISPATCHES`), or a callable with the same signature as it is."""
    if callable(dispatch):
        return dispatch
    try:
        return DISPATCHES[dispatch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dispatch {dispatch!r}; choose one of {sorted(DISPATCHES)}") from None


def dispatch_assignments(
    x: torch.Tensor,
    experts: Experts,
    token: torch.Tensor,
    expert_ids: torch.Tensor,
    weights: torch.Tensor,
    dispatch: str | Dispatch = "grouped",
) -> torch.Tensor:
    """Run a flat list of A (token, expert, weight) assignments: y[t] = sum weight * expert(x[t]).

    x (T, H); token, expert_ids, weights (A,). Each assignment becomes one row with k = 1 for
    `dispatch`, then rows are summed back per token. Tokens absent from the list get 0.
    """
    rows = get_dispatch(dispatch)(x[token], experts, weights[:, None], expert_ids[:, None])  # (A, H)
    return torch.zeros_like(x).index_add_(0, token, rows.to(x.dtype))  # (T, H)


def dispatch_kept(
    x: torch.Tensor,
    experts: Experts,
    weights: torch.Tensor,
    expert_ids: torch.Tensor,
    keep: torch.Tensor,
    dispatch: str | Dispatch = "grouped",
) -> torch.Tensor:
    """`dispatch` restricted to the kept assignments (keep (T, k) bool): dropped ones cost nothing and add nothing.

    A token with no kept assignment gets 0 (only the residual carries it).
    """
    token, slot = torch.nonzero(keep, as_tuple=True)  # (A,), (A,)
    return dispatch_assignments(x, experts, token, expert_ids[token, slot], weights[token, slot], dispatch)  # (T, H)

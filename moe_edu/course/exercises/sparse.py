"""Checkers for notebook 03 (sparse activation): expert loads, the dispatch loop, sorted dispatch.

from moe_edu.course.exercises import sparse as ex
ex.check_loop_dispatch(my_loop_dispatch); ex.hint("loop_dispatch")
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.dispatch import loop_dispatch, sort_by_expert
from moe_edu.experts import Experts
from moe_edu.routing import softmax_topk

exercises = Registry("sparse")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def tokens_per_expert_reference(chosen: torch.Tensor, num_experts: int) -> torch.Tensor:
    """chosen (T, k) expert ids -> (E,) int64: how many (token, slot) assignments each expert got."""
    return torch.bincount(chosen.reshape(-1), minlength=num_experts)  # (E,)


def make_experts(E: int, H: int, I: int, seed: int) -> Experts:
    """E seeded SwiGLU experts (std 0.3, so outputs are O(1) and errors visible)."""
    experts = Experts(E, H, I)
    with torch.no_grad():
        experts.gate_up_proj.copy_(randn(E, 2 * I, H, seed=seed, scale=0.3))  # (E, 2I, H)
        experts.down_proj.copy_(randn(E, H, I, seed=seed + 1, scale=0.3))  # (E, H, I)
    return experts


def dispatch_case(label: str, T: int, E: int, k: int, seed: int, *, skip_last: bool = False) -> Case:
    """(x, experts, weights, chosen) for T tokens, E experts, top-k routing from random logits."""
    H, I = 8, 12
    logits = randn(T, E, seed=seed)  # (T, E)
    if skip_last:
        logits[:, -1] = -1e4  # nobody picks the last expert
    weights, chosen = softmax_topk(logits, k)  # (T, k), (T, k)
    return Case(label, (randn(T, H, seed=seed + 1), make_experts(E, H, I, seed + 2), weights, chosen))


def _chosen(T: int, E: int, k: int, seed: int, skip_last: bool = False) -> torch.Tensor:
    logits = randn(T, E, seed=seed)  # (T, E)
    if skip_last:
        logits[:, -1] = -1e4
    return torch.topk(logits, k, dim=-1).indices  # (T, k)


@exercises.add(
    "tokens_per_expert",
    reference=tokens_per_expert_reference,
    hints=(
        "Flatten chosen to (T*k,): every entry is one (token, slot) assignment to an expert.",
        "torch.bincount counts how often each id appears; ids run from 0 to E-1.",
        "Pass minlength=num_experts so experts nobody chose still get a 0 (the result is always (E,)).",
    ),
)
def _tokens_per_expert_cases():
    return [
        Case("T=6, E=4, k=2", (_chosen(6, 4, 2, 41), 4)),
        Case("T=10, E=8, k=2 (Mixtral)", (_chosen(10, 8, 2, 42), 8)),
        Case("the last expert is never chosen", (_chosen(5, 4, 1, 43, skip_last=True), 4)),
        Case("k=3, T=4, E=8", (_chosen(4, 8, 3, 44), 8)),
    ]


_dispatch_hints = (
    "For each expert e: torch.where(chosen == e) gives the tokens that chose e and in which slot.",
    "Run experts.expert(e, x[token]) only on those rows, scale by weights[token, slot] (unsqueeze to (n, 1)).",
    "Accumulate into an all-zero tensor shaped like x: index_add_ along dim 0 at the token indices, cast to x's dtype.",
)


def _dispatch_cases():
    return [
        dispatch_case("T=6, E=4, k=2", 6, 4, 2, 51),
        dispatch_case("T=9, E=8, k=2 (Mixtral)", 9, 8, 2, 52),
        dispatch_case("k=1, T=5, E=4", 5, 4, 1, 53),
        dispatch_case("an expert nobody chose, T=5, E=4, k=2", 5, 4, 2, 54, skip_last=True),
    ]


exercises.add("loop_dispatch", reference=loop_dispatch, hints=_dispatch_hints)(_dispatch_cases)


@exercises.add(
    "sort_by_expert",
    reference=sort_by_expert,
    outputs=("order", "counts"),
    hints=(
        "Flatten chosen to (T*k,); entry i belongs to token i // k.",
        "torch.argsort(flat, stable=True) groups the assignments by expert and keeps token order inside a group.",
        "counts is a histogram of the flat ids with one bin per expert (bincount has an argument for empty bins); return the pair.",
    ),
)
def _sort_by_expert_cases():
    return [
        Case("T=6, E=4, k=2", (_chosen(6, 4, 2, 61), 4)),
        Case("many ties: T=12, E=2, k=1", (_chosen(12, 2, 1, 62), 2)),
        Case("the last expert is never chosen", (_chosen(5, 4, 2, 63, skip_last=True), 4)),
    ]


exercises.add(
    "grouped_dispatch",
    reference=loop_dispatch,
    hints=(
        "Use your sort_by_expert: order (T*k,) and counts (E,); the sorted assignment i belongs to token order[i] // k.",
        "x[token] is expert-sorted: split it by counts.tolist() and run expert e on group e.",
        "Concatenate the group outputs, scale each row by its assignment's weight (the flat weights, reordered by the same sort), and scatter-add back to the tokens.",
    ),
)(_dispatch_cases)

check_tokens_per_expert = _tokens_per_expert_cases.check
check_loop_dispatch = exercises.get("loop_dispatch").check
check_sort_by_expert = _sort_by_expert_cases.check
check_grouped_dispatch = exercises.get("grouped_dispatch").check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

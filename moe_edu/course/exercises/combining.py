"""Checkers for notebook 04 (weighted combining): the other routing order, the
order-equivalence check, and the weighted sum of expert outputs.

    from moe_edu.course.exercises import combining as ex
    ex.check_topk_softmax(my_topk_softmax); ex.hint("same_routing")
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.course.exercises.topk import by_expert
from moe_edu.routing import softmax_topk, topk_softmax

exercises = Registry("combining")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def same_routing_reference(
    a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], atol: float = 1e-6
) -> bool:
    """True when routings a and b = (weights (T, k), experts (T, k)) pick the same experts for
    every token with the same weights (within atol), whatever the order of the k slots."""
    (wa, ea), (wb, eb) = by_expert(a), by_expert(b)  # each (T, k), slots sorted by expert id
    return bool(torch.equal(ea, eb) and torch.allclose(wa.float(), wb.float(), rtol=0.0, atol=atol))


def combine_reference(expert_outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """expert_outputs (T, k, H), weights (T, k) -> y (T, H) = sum_j weights[:, j] * outputs[:, j],
    summed in float32 and returned in the outputs' dtype (as transformers does)."""
    y = (expert_outputs.float() * weights.float()[..., None]).sum(dim=1)  # (T, H)
    return y.to(expert_outputs.dtype)  # (T, H)


@exercises.add(
    "topk_softmax",
    reference=topk_softmax,
    normalize=by_expert,
    outputs=("weights", "experts"),
    hints=(
        "Mistral's order: torch.topk on the raw logits first (T, k), then a softmax over only those k.",
        "The softmax runs over dim=-1 of the (T, k) top logits, in float32.",
        "Return (weights, experts); the slot order does not matter to the checker.",
    ),
)
def _topk_softmax_cases():
    return [
        Case("T=4, E=8, k=2 (Mixtral)", (randn(4, 8, seed=71), 2)),
        Case("k=1", (randn(5, 4, seed=72), 1)),
        Case("square (T, k) = (3, 3), E=8", (randn(3, 8, seed=73), 3)),
        Case("bf16 logits, T=5, E=8, k=2", (randn(5, 8, seed=74, dtype=torch.bfloat16), 2)),
    ]


def _routing(seed: int, T: int = 4, E: int = 8, k: int = 2):
    return softmax_topk(randn(T, E, seed=seed), k)  # (T, k), (T, k)


def _swap_slots(r):
    return r[0].flip(-1), r[1].flip(-1)


def _nudge_weight(r):
    w = r[0].clone()
    w[1, 0] += 1e-3
    return w, r[1]


def _other_expert(r):
    e = r[1].clone()
    e[2, 1] = (e[2, 1] + 1) % 8 if (e[2, 1] + 1) % 8 != e[2, 0] else (e[2, 1] + 2) % 8
    return r[0], e


def _weights_to_wrong_experts(r):
    return r[0], r[1].flip(-1)


@exercises.add(
    "same_routing",
    reference=same_routing_reference,
    hints=(
        "Two routings can list the same k experts in a different slot order: sort each row by expert id first.",
        "torch.sort(experts, dim=-1) gives the permutation; apply it to the weights with torch.gather.",
        "Finally compare: the sorted expert ids must match exactly, the reordered weights only up to the atol you were given.",
    ),
)
def _same_routing_cases():
    r = _routing(81)
    return [
        Case("identical routings", (r, _routing(81))),
        Case("softmax->top-k->renorm vs top-k->softmax", (r, topk_softmax(randn(4, 8, seed=81), 2))),
        Case("same routing, slots swapped", (r, _swap_slots(r))),
        Case("one weight off by 1e-3", (r, _nudge_weight(r))),
        Case("one token picks another expert", (r, _other_expert(r))),
        Case("same experts, weights given to the wrong ones", (r, _weights_to_wrong_experts(r))),
    ]


@exercises.add(
    "combine",
    reference=combine_reference,
    hints=(
        "Token t's output is weights[t, 0] * out[t, 0] + weights[t, 1] * out[t, 1] + ...",
        "Give the weights a trailing axis (weights[..., None], shape (T, k, 1)) so they broadcast over H, then sum over dim=1.",
        "Compute in float32 and cast the result back to expert_outputs.dtype.",
    ),
)
def _combine_cases():
    return [
        Case("T=4, k=2, H=8", (randn(4, 2, 8, seed=91), torch.softmax(randn(4, 2, seed=92), -1))),
        Case("k=1, T=3, H=8", (randn(3, 1, 8, seed=93), torch.ones(3, 1))),
        Case("square k=H=4, T=5", (randn(5, 4, 4, seed=94), torch.softmax(randn(5, 4, seed=95), -1))),
        Case(
            "bf16 expert outputs, fp32 weights",
            (randn(4, 2, 8, seed=96, dtype=torch.bfloat16), torch.softmax(randn(4, 2, seed=97), -1)),
        ),
        Case("bf16 outputs that nearly cancel: products and sum must be float32", _cancelling()),
    ]


def _cancelling() -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs about +70 and -30 weighted 0.3 / 0.7: y is O(1), but bf16 products would be off by ~0.1."""
    out = torch.stack([70.0 + randn(4, 8, seed=98), -30.0 + randn(4, 8, seed=99)], dim=1)  # (T, 2, H)
    return out.to(torch.bfloat16), torch.tensor([[0.3, 0.7]]).repeat(4, 1)  # (T, 2, H), (T, 2)


check_topk_softmax = _topk_softmax_cases.check
check_same_routing = _same_routing_cases.check
check_combine = _combine_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

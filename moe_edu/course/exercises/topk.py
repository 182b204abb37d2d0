"""Checkers for notebook 02 (top-k selection): the top-k mask and renormalised top-k weights.

from moe_edu.course.exercises import topk as ex
ex.check_topk_mask(my_topk_mask); ex.hint("topk_mask")
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.routing import softmax_topk

exercises = Registry("topk")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def topk_mask_reference(probs: torch.Tensor, k: int) -> torch.Tensor:
    """probs (T, E) -> bool mask (T, E) with True at each token's k most probable experts."""
    chosen = torch.topk(probs, k, dim=-1).indices  # (T, k)
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, chosen, True)  # (T, E)


def by_expert(routing):
    """Sort each token's k slots by expert id, so any slot order compares equal."""
    weights, experts = routing  # (T, k), (T, k)
    experts_sorted, order = torch.sort(experts, dim=-1)  # (T, k), (T, k)
    return torch.gather(weights, -1, order), experts_sorted  # (T, k), (T, k)


def _probs(T: int, E: int, seed: int) -> torch.Tensor:
    return torch.softmax(randn(T, E, seed=seed), dim=-1)  # (T, E)


@exercises.add(
    "topk_mask",
    reference=topk_mask_reference,
    hints=(
        "torch.topk(probs, k, dim=-1) returns the k largest values and their indices per row.",
        "Start from an all-False (T, E) bool tensor and put True at the chosen indices (scatter).",
        "The result must be dtype torch.bool with exactly k True values in every row.",
    ),
)
def _topk_mask_cases():
    return [
        Case("T=4, E=8, k=2 (Mixtral)", (_probs(4, 8, 21), 2)),
        Case("k=1 (Switch), T=5, E=4", (_probs(5, 4, 22), 1)),
        Case("k=3, T=3, E=8", (_probs(3, 8, 23), 3)),
        Case("square T=E=6, k=2", (_probs(6, 6, 24), 2)),
    ]


@exercises.add(
    "topk_renormalised",
    reference=softmax_topk,
    normalize=by_expert,
    outputs=("weights", "experts"),
    hints=(
        "Softmax the logits over the experts in float32 first, then take the top k probabilities.",
        "Renormalise: divide the k kept probabilities by their sum so each row sums to 1.",
        "Return (weights, experts): weights float32 (T, k), experts int64 (T, k); slot order does not matter.",
    ),
)
def _topk_renormalised_cases():
    return [
        Case("T=4, E=8, k=2 (Mixtral)", (randn(4, 8, seed=31), 2)),
        Case("k=1: every weight is 1", (randn(5, 4, seed=32), 1)),
        Case("k=3, T=3, E=8", (randn(3, 8, seed=33), 3)),
        Case("bf16 logits, T=5, E=8, k=2", (randn(5, 8, seed=34, dtype=torch.bfloat16), 2)),
    ]


check_topk_mask = _topk_mask_cases.check
check_topk_renormalised = _topk_renormalised_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

"""Checkers for notebook 06 (routing explorer): reading a routing trace by hand.

    from moe_edu.course.exercises import routing_explorer as ex
    ex.check_first_choices(my_first_choices); ex.hint("first_choices")

Inputs are a trace's router logits `(L, T, E)` (what `moe_edu.trace_routing(...).logits` holds),
so the same functions run on the shipped model in the notebook.
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.routing import softmax_topk

exercises = Registry("routing_explorer")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def first_choices_reference(logits: torch.Tensor) -> torch.Tensor:
    """logits (L, T, E) -> (L, T) int64: each token's most probable expert at every layer."""
    return logits.float().argmax(dim=-1)  # (L, T)


def layer_loads_reference(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits (L, T, E), k -> (L, E) int64: how many tokens have expert e among their top k at layer l."""
    chosen = torch.topk(logits.float(), k, dim=-1).indices  # (L, T, k)
    hits = torch.zeros(logits.shape, dtype=torch.int64).scatter_(-1, chosen, 1)  # (L, T, E), k ones per row
    return hits.sum(dim=1)  # (L, E)


def token_topk_reference(logits: torch.Tensor, layer: int, t: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (L, T, E) -> token t's renormalised top-k weights (k,) float32 and experts (k,) int64, best first."""
    weights, experts = softmax_topk(logits[layer, t][None], k)  # (1, k), (1, k)
    return weights[0], experts[0]  # (k,), (k,)


def _logits(L: int, T: int, E: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return randn(L, T, E, seed=seed, scale=2.0, dtype=dtype)  # (L, T, E)


@exercises.add(
    "first_choices",
    reference=first_choices_reference,
    hints=(
        "The first choice is the expert with the largest probability, and softmax keeps the order of the logits.",
        "Work along the last axis (the experts) of the (L, T, E) tensor; the result keeps the (L, T) axes.",
        "The result holds expert ids: an integer (int64) tensor, not the probabilities themselves.",
    ),
)
def _first_choices_cases():
    return [
        Case("L=2, T=5, E=8", (_logits(2, 5, 8, 201),)),
        Case("one layer, T=7, E=4", (_logits(1, 7, 4, 202),)),
        Case("square L=T=E=4 (a wrong axis still has the right shape)", (_logits(4, 4, 4, 203),)),
        Case("bf16 logits, L=3, T=4, E=8", (_logits(3, 4, 8, 204, torch.bfloat16),)),
    ]


@exercises.add(
    "layer_loads",
    reference=layer_loads_reference,
    hints=(
        "At every layer, each token picks its k largest logits (the softmax does not change which ones).",
        "Mark each chosen (layer, token, expert) with a 1 in an all-zero (L, T, E) integer tensor (scatter).",
        "Sum over the tokens axis: row l then counts each expert's tokens at layer l and sums to T * k.",
    ),
)
def _layer_loads_cases():
    return [
        Case("L=2, T=6, E=8, k=2 (Mixtral)", (_logits(2, 6, 8, 211), 2)),
        Case("k=1, L=3, T=5, E=4", (_logits(3, 5, 4, 212), 1)),
        Case("k=3, L=1, T=9, E=8", (_logits(1, 9, 8, 213), 3)),
        Case("square L=T=E=4, k=2", (_logits(4, 4, 4, 214), 2)),
        Case("nobody picks the last expert, L=2, T=5, E=8, k=2", (_unused_last(2, 5, 8, 215), 2)),
    ]


def _unused_last(L: int, T: int, E: int, seed: int) -> torch.Tensor:
    logits = _logits(L, T, E, seed)  # (L, T, E)
    logits[..., -1] = -1e4
    return logits


@exercises.add(
    "token_topk",
    reference=token_topk_reference,
    outputs=("weights", "experts"),
    hints=(
        "Take the row logits[layer, t]: the E logits of one token at one layer.",
        "Softmax over the experts in float32, keep the k largest probabilities (torch.topk sorts them, best first).",
        "Renormalise the kept probabilities so they sum to 1; return (weights, experts).",
    ),
)
def _token_topk_cases():
    return [
        Case("layer 1, token 3, k=2", (_logits(2, 6, 8, 221), 1, 3, 2)),
        Case("layer 0, token 0, k=1: the weight is 1", (_logits(2, 6, 8, 222), 0, 0, 1)),
        Case("k=3, last layer, last token", (_logits(3, 5, 8, 223), 2, 4, 3)),
        Case("bf16 logits, k=2", (_logits(2, 4, 8, 224, torch.bfloat16), 1, 2, 2)),
    ]


check_first_choices = _first_choices_cases.check
check_layer_loads = _layer_loads_cases.check
check_token_topk = _token_topk_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

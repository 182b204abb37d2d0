"""Checkers for notebook 08 (what do experts learn?): consecutive-token repetition and its random baseline.

from moe_edu.course.exercises import repetition as ex
ex.check_consecutive_repetition(my_fn); ex.hint("consecutive_repetition")
"""

from __future__ import annotations

import torch

from moe_edu.analysis import random_topk_overlap_rate, repetition_rates
from moe_edu.course.exercises.core import Case, Registry, seal

exercises = Registry("repetition")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def consecutive_repetition(chosen: torch.Tensor) -> tuple[float, float]:
    """Reference: (first-choice repeat rate, top-k overlap rate) of one sequence's (T, k) routing."""
    return repetition_rates([chosen])


def _random_routing(T: int, E: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])  # (T, k)


@exercises.add(
    "consecutive_repetition",
    reference=consecutive_repetition,
    outputs=("first choice", "top-k overlap"),
    hints=(
        "chosen[t] holds token t's experts, best first: compare each row with the row before it (T - 1 pairs).",
        "First choice: the share of pairs with chosen[t, 0] == chosen[t-1, 0].",
        "Overlap: the share of pairs whose expert sets share at least one expert; compare every slot of the previous "
        "row with every slot of the current one by broadcasting a (T-1, k, 1) tensor against a (T-1, 1, k) one.",
        "Return two Python floats (use float(...) or .item()).",
    ),
)
def _repetition_cases():
    return [
        Case("hand example: repeat, overlap only, neither", (torch.tensor([[0, 1], [0, 2], [3, 0], [4, 5]]),)),
        Case("uniform random routing, T=400, E=8, k=2", (_random_routing(400, 8, 2, seed=81),)),
        Case("same first choice, second choice swapped in", (torch.tensor([[2, 5], [2, 1], [1, 2], [1, 7]]),)),
        Case("k=1 (Switch): overlap equals first choice", (torch.tensor([[3], [3], [1], [1], [1], [0]]),)),
        Case("top-3 of 16 experts, T=50", (_random_routing(50, 16, 3, seed=82),)),
    ]


@exercises.add(
    "random_topk_overlap_rate",
    reference=random_topk_overlap_rate,
    hints=(
        "Count the ways the second token can pick k experts that avoid all k of the first token's: C(E-k, k).",
        "Divide that by the number of all k-sets of E experts (math.comb): the chance of no overlap. Which event do you want?",
    ),
)
def _baseline_cases():
    return [
        Case("Mixtral: E=8, k=2 (the paper's ~46 %)", (8, 2)),
        Case("Switch: E=8, k=1", (8, 1)),
        Case("E=16, k=2", (16, 2)),
        Case("E=4, k=3: two triples of 4 always meet", (4, 3)),
        Case("E=64, k=6", (64, 6)),
    ]


check_consecutive_repetition = _repetition_cases.check
check_random_topk_overlap_rate = _baseline_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

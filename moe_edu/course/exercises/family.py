"""Checkers for notebook 09 (the MoE family): Switch capacity with dropping, expert-choice routing.

    from moe_edu.course.exercises import family as ex
    ex.check_switch_route(my_switch_route); ex.hint("switch_route")

References are the library's own routing functions (`moe_edu.variants.switch.switch_route`,
`moe_edu.variants.expert_choice.expert_choice_route`) and the layers built on them.
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.course.exercises.sparse import make_experts
from moe_edu.dispatch import dispatch_assignments, dispatch_kept
from moe_edu.experts import Experts
from moe_edu.variants.expert_choice import expert_choice_route
from moe_edu.variants.switch import switch_route

exercises = Registry("family")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def switch_moe_reference(
    x: torch.Tensor, experts: Experts, logits: torch.Tensor, capacity_factor: float
) -> tuple[torch.Tensor, int]:
    """Switch layer: x (N, H), logits (N, E) -> (y (N, H) with 0 for dropped tokens, number dropped)."""
    weight, expert, keep = switch_route(logits, capacity_factor)  # (N,), (N,), (N,)
    y = dispatch_kept(x, experts, weight[:, None], expert[:, None], keep[:, None])  # (N, H)
    return y, int((~keep).sum())


def expert_choice_moe_reference(
    x: torch.Tensor, experts: Experts, logits: torch.Tensor, capacity_factor: float
) -> tuple[torch.Tensor, int]:
    """Expert-choice layer: x (N, H), logits (N, E) -> (y (N, H), number of tokens no expert picked)."""
    gate, token = expert_choice_route(logits, capacity_factor)  # (E, C), (E, C)
    E, C = gate.shape
    expert = torch.arange(E).repeat_interleave(C)  # (E*C,)
    y = dispatch_assignments(x, experts, token.reshape(-1), expert, gate.reshape(-1))  # (N, H)
    picked = torch.bincount(token.reshape(-1), minlength=x.shape[0])  # (N,)
    return y, int((picked == 0).sum())


def _logits(N: int, E: int, seed: int, popular: float = 0.0) -> torch.Tensor:
    """(N, E) router logits; `popular` > 0 makes expert 0 everyone's favourite (overflow)."""
    logits = randn(N, E, seed=seed)  # (N, E)
    logits[:, 0] += popular
    return logits


def _layer_case(label: str, N: int, E: int, factor: float, seed: int, popular: float = 0.0) -> Case:
    H, I = 8, 12
    return Case(
        label, (randn(N, H, seed=seed + 1), make_experts(E, H, I, seed + 2), _logits(N, E, seed, popular), factor)
    )


@exercises.add(
    "switch_route",
    reference=switch_route,
    outputs=("weight", "expert", "keep"),
    hints=(
        "Softmax the logits in float32; a token's weight and expert are the max and argmax of its probabilities (Switch keeps p, it does not renormalise).",
        "C = math.ceil(capacity_factor * N / E) (and at most N). Walk the tokens in order, counting each expert's rows.",
        "Token t is kept if its expert has fewer than C rows so far: first come, first served. keep is a bool (N,) tensor.",
    ),
)
def _switch_route_cases():
    return [
        Case("N=8, E=4, factor 1.0", (_logits(8, 4, 71), 1.0)),
        Case("overflow: expert 0 is everyone's favourite, factor 1.0", (_logits(12, 4, 72, popular=4.0), 1.0)),
        Case("factor 1.25 rounds C up: N=10, E=4", (_logits(10, 4, 73, popular=1.0), 1.25)),
        Case("factor 0.5: small buffers, N=16, E=8", (_logits(16, 8, 74), 0.5)),
        Case("factor 4: nothing dropped", (_logits(8, 4, 75, popular=2.0), 4.0)),
    ]


@exercises.add(
    "switch_moe",
    reference=switch_moe_reference,
    outputs=("y", "dropped"),
    hints=(
        "Route with your switch_route; only the kept tokens go to an expert.",
        "For each expert e, take the kept tokens routed to e and write its outputs, scaled by their router probability, into those rows of y.",
        "A dropped token's MoE output is 0 (the residual x + y carries it), and dropped = number of tokens not kept (an int).",
    ),
)
def _switch_moe_cases():
    return [
        _layer_case("N=8, E=4, factor 1.0", 8, 4, 1.0, 81),
        _layer_case("overflow on expert 0, factor 1.0", 12, 4, 1.0, 82, popular=4.0),
        _layer_case("factor 4: nothing dropped", 8, 4, 4.0, 83),
    ]


@exercises.add(
    "expert_choice_route",
    reference=expert_choice_route,
    outputs=("gate", "token"),
    hints=(
        "Scores are a softmax over the experts, as usual: scores = softmax(logits.float(), dim=-1), shape (N, E).",
        "Now each expert (a column) picks: C = ceil(capacity_factor * N / E), at most N, tokens with torch.topk along the tokens.",
        "torch.topk works along the last dimension: transpose the scores so each row is an expert; the values are the gates, the indices the tokens.",
    ),
)
def _expert_choice_route_cases():
    return [
        Case("N=8, E=4, factor 2 (two experts per token on average)", (_logits(8, 4, 91), 2.0)),
        Case("factor 1: N=12, E=4", (_logits(12, 4, 92), 1.0)),
        Case("a popular expert still gets only C tokens", (_logits(12, 4, 93, popular=4.0), 1.0)),
        Case("factor 1.5 rounds C up: N=10, E=4", (_logits(10, 4, 94), 1.5)),
        Case("factor 5 > E: C is capped at N=8 (every expert takes every token)", (_logits(8, 4, 95), 5.0)),
    ]


@exercises.add(
    "expert_choice_moe",
    reference=expert_choice_moe_reference,
    outputs=("y", "unrouted"),
    hints=(
        "Route with your expert_choice_route: gate (E, C), token (E, C).",
        "For each expert e, run it on the tokens in its list, scale by its gates and add the results into y at those tokens (index_add_).",
        "unrouted = tokens that appear in no expert's list (an int); their output stays 0.",
    ),
)
def _expert_choice_moe_cases():
    return [
        _layer_case("N=8, E=4, factor 2", 8, 4, 2.0, 101),
        _layer_case("factor 1: some tokens get no expert", 12, 4, 1.0, 102, popular=2.0),
        _layer_case("factor 0.5, N=16, E=8", 16, 8, 0.5, 103),
    ]


check_switch_route = _switch_route_cases.check
check_switch_moe = _switch_moe_cases.check
check_expert_choice_route = _expert_choice_route_cases.check
check_expert_choice_moe = _expert_choice_moe_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

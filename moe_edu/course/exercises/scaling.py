"""Checkers for notebook 10 (scaling out): expert-parallel arithmetic on a given routing.

    from moe_edu.course.exercises import scaling as ex
    ex.check_tokens_per_rank(my_tokens_per_rank); ex.hint("tokens_per_rank")

Conventions (as `moe_edu.parallel`): W ranks, E experts split into contiguous blocks of E / W
experts (rank r owns experts r*E/W ... (r+1)*E/W - 1), T tokens split into contiguous blocks of
T / W tokens (token t lives on rank t // (T/W)).
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, seal

exercises = Registry("scaling")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def tokens_per_rank_reference(chosen: torch.Tensor, num_experts: int, world_size: int) -> torch.Tensor:
    """chosen (T, k) expert ids -> (W,) int64: the (token, slot) assignments each rank's experts receive."""
    owner = chosen.reshape(-1) // (num_experts // world_size)  # (T*k,) rank of each assignment's expert
    return torch.bincount(owner, minlength=world_size)  # (W,)


def traffic_reference(chosen: torch.Tensor, num_experts: int, world_size: int) -> torch.Tensor:
    """chosen (T, k) -> (W, W) int64: [src, dst] = assignments from tokens on rank src to experts on rank dst."""
    T, k = chosen.shape
    src = (torch.arange(T) // (T // world_size))[:, None].expand(T, k)  # (T, k) rank holding each token
    dst = chosen // (num_experts // world_size)  # (T, k) rank holding each chosen expert
    flat = (src * world_size + dst).reshape(-1)  # (T*k,)
    return torch.bincount(flat, minlength=world_size * world_size).reshape(world_size, world_size)  # (W, W)


def parallel_efficiency_reference(load: torch.Tensor) -> float:
    """load (W,) work per rank -> mean / max: the share of the step the ranks spend busy,
    when every rank waits for the most loaded one (1.0 = perfectly balanced)."""
    load = load.double()  # (W,)
    return float(load.mean() / load.max())


def _routing(T: int, E: int, k: int, seed: int, favourite: int | None = None) -> torch.Tensor:
    """(T, k) distinct expert ids per token; `favourite` appears first in every row when given."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(T):
        perm = torch.randperm(E, generator=g)  # (E,)
        if favourite is not None:
            perm = torch.cat([torch.tensor([favourite]), perm[perm != favourite]])
        rows.append(perm[:k])
    return torch.stack(rows)  # (T, k)


@exercises.add(
    "tokens_per_rank",
    reference=tokens_per_rank_reference,
    hints=(
        "Each rank owns E / W consecutive experts, so expert e lives on rank e // (E / W) (integer division).",
        "Map every (token, slot) entry of chosen to its rank, then count how often each rank appears.",
        "A rank that receives nothing still needs its 0: the result always has W entries (int64).",
    ),
)
def _tokens_per_rank_cases():
    return [
        Case("T=8, E=8, k=2, W=4", (_routing(8, 8, 2, 301), 8, 4)),
        Case("W=2, T=6, E=8, k=2", (_routing(6, 8, 2, 302), 8, 2)),
        Case("everyone's favourite is expert 0: rank 0 is flooded, W=4", (_routing(8, 8, 2, 303, favourite=0), 8, 4)),
        Case("one expert per rank: W=E=4, k=1", (_routing(5, 4, 1, 304), 4, 4)),
        Case("ranks 2 and 3 receive nothing, W=4", (torch.tensor([[0, 1], [2, 3], [1, 0]]), 8, 4)),
    ]


@exercises.add(
    "traffic",
    reference=traffic_reference,
    hints=(
        "Two ranks per assignment: the token's home rank t // (T / W) (the row) and its expert's rank (the column).",
        "Build both as (T, k) tensors, turn each (src, dst) pair into one index src * W + dst, and count.",
        "Reshape the W * W counts to (W, W); the diagonal stays local, everything else crosses the network.",
    ),
)
def _traffic_cases():
    return [
        Case("T=8, E=8, k=2, W=4", (_routing(8, 8, 2, 311), 8, 4)),
        Case("W=2, T=6, E=4, k=2", (_routing(6, 4, 2, 312), 4, 2)),
        Case("everyone's favourite is expert 7: column 3 is heavy, W=4", (_routing(8, 8, 2, 313, favourite=7), 8, 4)),
        Case("one token per rank: T=W=4, E=8, k=2", (_routing(4, 8, 2, 314), 8, 4)),
    ]


@exercises.add(
    "parallel_efficiency",
    reference=parallel_efficiency_reference,
    hints=(
        "A step ends when the most loaded rank is done; the others idle for the rest of it.",
        "Useful work is the total load, available time is W times the largest load.",
        "Return a Python float between 0 and 1 (1.0 when all ranks carry the same load).",
    ),
)
def _efficiency_cases():
    return [
        Case("balanced: [4, 4, 4, 4]", (torch.tensor([4, 4, 4, 4]),)),
        Case("one hot rank: [10, 2, 2, 2]", (torch.tensor([10, 2, 2, 2]),)),
        Case("W=8, uneven", (torch.tensor([3, 7, 1, 0, 5, 5, 2, 9]),)),
        Case("float loads (seconds), W=2", (torch.tensor([0.25, 0.75]),)),
    ]


check_tokens_per_rank = _tokens_per_rank_cases.check
check_traffic = _traffic_cases.check
check_parallel_efficiency = _efficiency_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

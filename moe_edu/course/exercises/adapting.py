"""Checkers for notebook 12 (adapting MoEs): sparse upcycling, pruning an expert, the aux-free bias update.

from moe_edu.course.exercises import adapting as ex
ex.check_upcycle_weights(my_fn); ex.hint("upcycle_weights")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from moe_edu.course.exercises.core import Case, CheckFailed, Registry, randn, seal
from moe_edu.course.exercises.topk import by_expert
from moe_edu.variants.aux_free import bias_update

from ...adapting.pruning import pruned_routing
from ...adapting.upcycling import upcycle_weights

exercises = Registry("adapting")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def _shares_memory(out: Any, inputs: tuple) -> str | None:
    """Why `out` is not a set of independent expert copies: a stride-0 view or storage shared with an input."""
    names = ("gate_up", "down")
    parts = out if isinstance(out, (tuple, list)) else ()
    for name, t in zip(names, parts, strict=False):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            continue
        if t.shape[0] > 1 and t.stride(0) == 0:
            return f"{name} is a view (stride 0 along the experts): all experts share one memory location"
        for x in inputs:
            if isinstance(x, torch.Tensor) and t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
                return f"{name} shares memory with the dense weights (a view, not a copy)"
    return None


def new_tensors(fn: Callable) -> Callable:
    """The student's upcycle_weights, failing the case when it returns views instead of new tensors:
    an optimizer step on a stride-0 expert tensor fails, and a view of the dense FFN trains it too."""

    def watched(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        why = _shares_memory(out, args)
        if why:
            raise CheckFailed(f"{why}; return new tensors (repeat, or expand(...).clone())")
        return out

    return watched


@exercises.add(
    "upcycle_weights",
    reference=upcycle_weights,
    wrap=new_tensors,
    outputs=("gate_up", "down"),
    hints=(
        "Each of the E experts gets an exact copy of the one dense FFN: repeat along the first (expert) dimension.",
        "gate_up (1, 2I, H) -> (E, 2I, H) and down (1, H, I) -> (E, H, I); `tensor.repeat(E, 1, 1)` does it.",
        "Return new tensors (repeat, clone or expand(...).clone()), not views of the dense weights.",
    ),
)
def _upcycle_cases():
    return [
        Case("H=8, I=12, E=4", (randn(1, 24, 8, seed=1201), randn(1, 8, 12, seed=1202), 4)),
        Case("tiny's sizes, E=8", (randn(1, 448, 64, seed=1203), randn(1, 64, 224, seed=1204), 8)),
        Case("E=1 (nothing to copy)", (randn(1, 6, 4, seed=1205), randn(1, 4, 3, seed=1206), 1)),
    ]


def _peaked(T: int, E: int, expert: int, seed: int) -> torch.Tensor:
    logits = randn(T, E, seed=seed)  # (T, E)
    logits[:, expert] += 4.0  # every token's first choice is the expert we drop
    return logits


@exercises.add(
    "pruned_routing",
    reference=pruned_routing,
    normalize=by_expert,
    outputs=("weights", "expert_ids"),
    hints=(
        "Make the dropped expert unchoosable: set its logit to -inf (on a float32 copy), so its probability is 0.",
        "Then Mixtral's rule over what is left: softmax over the experts, top k, divide the k weights by their sum.",
        "Expert ids stay in the original numbering (0..E-1); the dropped id must never appear.",
    ),
)
def _pruned_cases():
    return [
        Case("T=6, E=8, k=2, drop 3", (randn(6, 8, seed=1211), 3, 2)),
        Case("every token preferred the dropped expert 0", (_peaked(5, 8, 0, seed=1212), 0, 2)),
        Case("k=1, drop the last expert", (randn(7, 4, seed=1213), 3, 1)),
        Case("bf16 logits", (randn(4, 8, seed=1214, dtype=torch.bfloat16), 5, 2)),
    ]


@exercises.add(
    "bias_update",
    reference=bias_update,
    hints=(
        "Compare each expert's load with the mean load over the experts.",
        "Overloaded (above the mean): bias - speed; underloaded: bias + speed; exactly at the mean: unchanged.",
        "That is bias - speed * sign(load - load.mean()), with the counts converted to the bias's dtype.",
    ),
)
def _bias_cases():
    return [
        Case("E=4, counts [10, 2, 4, 0]", (torch.zeros(4), torch.tensor([10, 2, 4, 0]), 0.1)),
        Case(
            "E=8, a running bias", (randn(8, seed=1221, scale=0.05), torch.tensor([30, 1, 9, 16, 16, 0, 40, 16]), 1e-3)
        ),
        Case("balanced load: nothing moves", (randn(4, seed=1222), torch.tensor([5, 5, 5, 5]), 0.5)),
        Case("counts [3, 2, 2, 2]: the mean 2.25 is not an integer", (torch.zeros(4), torch.tensor([3, 2, 2, 2]), 0.1)),
    ]


check_upcycle_weights = _upcycle_cases.check
check_pruned_routing = _pruned_cases.check
check_bias_update = _bias_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

"""Checkers for notebook 01 (gating): the router's logits and its fp32 softmax.

from moe_edu.course.exercises import gating as ex
ex.check_router_logits(my_router_logits); ex.hint("router_logits")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moe_edu.course.exercises.core import Case, Registry, randn, seal

exercises = Registry("gating")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def router_logits_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (T, H), gate weight w (E, H) -> logits (T, E) in float32, no bias (moe_edu.routing.TopKRouter)."""
    return F.linear(x.float(), w.float())  # (T, E)


def router_probs_reference(logits: torch.Tensor) -> torch.Tensor:
    """logits (T, E) -> router probabilities (T, E), softmax over the experts, in float32."""
    return torch.softmax(logits.float(), dim=-1)  # (T, E)


@exercises.add(
    "router_logits",
    reference=router_logits_reference,
    hints=(
        "The gate is one bias-free linear map from hidden_size to num_experts: w has shape (E, H).",
        "(T, H) times (H, E) gives (T, E): multiply x by the transpose of w (or use F.linear).",
        "Cast x and w to float32 first: the router runs in fp32 even for bf16 activations.",
    ),
)
def _router_logits_cases():
    return [
        Case("T=4, H=8, E=4", (randn(4, 8, seed=1), randn(4, 8, seed=2))),
        Case("T=6, H=16, E=8 (Mixtral's E)", (randn(6, 16, seed=3), randn(8, 16, seed=4))),
        Case("one token, T=1, H=8, E=3", (randn(1, 8, seed=5), randn(3, 8, seed=6))),
        Case(
            "bf16 x and w, T=5, H=8, E=4",
            (randn(5, 8, seed=7, dtype=torch.bfloat16), randn(4, 8, seed=8, dtype=torch.bfloat16)),
        ),
    ]


@exercises.add(
    "router_probs",
    reference=router_probs_reference,
    hints=(
        "Each token (row) gets a probability distribution over the E experts (columns).",
        "Softmax over the last dimension (dim=-1), so every row sums to 1.",
        "Call .float() before the softmax: bf16 logits must give float32 probabilities.",
    ),
)
def _router_probs_cases():
    return [
        Case("T=4, E=4", (randn(4, 4, seed=11),)),
        Case("T=3, E=8, large logits", (randn(3, 8, seed=12, scale=30.0),)),
        Case("square T=E=8 (a wrong dim still has the right shape)", (randn(8, 8, seed=13),)),
        Case("bf16 logits, T=5, E=8", (randn(5, 8, seed=14, dtype=torch.bfloat16),)),
        Case("huge logits (about 100): exp overflows float32 above 88.7", (randn(3, 8, seed=15, scale=5.0) + 95.0,)),
    ]


check_router_logits = _router_logits_cases.check
check_router_probs = _router_probs_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

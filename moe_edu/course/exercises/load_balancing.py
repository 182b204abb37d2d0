"""Checkers for notebook 07 (load balancing): Switch's auxiliary loss and ST-MoE's router z-loss.

from moe_edu.course.exercises import load_balancing as ex
ex.check_load_balancing_loss(my_loss); ex.hint("load_balancing_loss")
"""

from __future__ import annotations

import torch

from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.losses import load_balancing_loss, router_z_loss

exercises = Registry("load_balancing")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def _collapsed(T: int, E: int) -> torch.Tensor:
    logits = torch.zeros(T, E)  # (T, E)
    logits[:, 0] = 5.0  # every token prefers expert 0
    return logits


@exercises.add(
    "load_balancing_loss",
    reference=load_balancing_loss,
    hints=(
        "f_e: the number of tokens whose top-k (of the softmax) includes expert e, divided by T; the f_e sum to k.",
        "P_e: the mean router probability of expert e over the T tokens (softmax in float32); the P_e sum to 1.",
        "loss = E * sum_e f_e * P_e, a 0-d tensor; it equals k under uniform routing.",
    ),
)
def _lb_cases():
    return [
        Case("T=8, E=4, k=2", (randn(8, 4, seed=141), 4, 2)),
        Case("T=16, E=8, k=2 (Mixtral)", (randn(16, 8, seed=142), 8, 2)),
        Case("k=1 (Switch)", (randn(10, 4, seed=143), 4, 1)),
        Case("collapsed routing: all tokens prefer expert 0", (_collapsed(6, 4), 4, 2)),
    ]


@exercises.add(
    "router_z_loss",
    reference=router_z_loss,
    hints=(
        "z_t = log(sum_e exp(logit_te)): one number per token, in float32. Written literally, exp overflows for logits near 100.",
        "torch.logsumexp(..., dim=-1) subtracts each row's max before exp, so it never overflows.",
        "Square the per-token values and average over the tokens: a 0-d tensor.",
    ),
)
def _z_cases():
    return [
        Case("T=8, E=4", (randn(8, 4, seed=151),)),
        Case("large logits, T=5, E=8", (randn(5, 8, seed=152, scale=10.0),)),
        Case("bf16 logits, T=6, E=8", (randn(6, 8, seed=153, dtype=torch.bfloat16),)),
        Case(
            "huge logits (about 100: exp overflows float32, logsumexp does not), T=4, E=8",
            (randn(4, 8, seed=154, scale=5.0) + 100.0,),
        ),
        Case(
            "huge negative logits (about -120: exp underflows to 0), T=4, E=8",
            (randn(4, 8, seed=155, scale=5.0) - 120.0,),
        ),
    ]


check_load_balancing_loss = _lb_cases.check
check_router_z_loss = _z_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

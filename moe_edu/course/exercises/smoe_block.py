"""Checkers for notebook 05 (the Mixtral SMoE block): the SwiGLU expert, the whole block,
and active-parameter accounting.

    from moe_edu.course.exercises import smoe_block as ex
    ex.check_swiglu_expert(my_swiglu); ex.hint("moe_block")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moe_edu.accounting import count_parameters
from moe_edu.config import MixtralConfig
from moe_edu.course.exercises.core import Case, Registry, randn, seal
from moe_edu.dispatch import loop_dispatch
from moe_edu.experts import Experts, swiglu
from moe_edu.presets import PRESETS
from moe_edu.routing import softmax_topk

exercises = Registry("smoe_block")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def moe_block_reference(
    x: torch.Tensor, gate: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, H), gate (E, H), w1/w3 (E, I, H), w2 (E, H, I) -> y (B, T, H), router_logits (B*T, E) fp32."""
    B, T, H = x.shape
    flat = x.reshape(-1, H)  # (B*T, H)
    logits = F.linear(flat.float(), gate.float())  # (B*T, E)
    weights, chosen = softmax_topk(logits, k)  # (B*T, k), (B*T, k)
    experts = Experts(w1.shape[0], H, w1.shape[1]).to(x.dtype)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.cat([w1, w3], dim=1))  # (E, 2I, H)
        experts.down_proj.copy_(w2)  # (E, H, I)
    return loop_dispatch(flat, experts, weights, chosen).reshape(B, T, H), logits


def active_parameters_reference(config: MixtralConfig) -> int:
    """Parameters one token touches: everything except the E - k experts it was not routed to."""
    return count_parameters(config).active


def _weights(E: int, H: int, I: int, seed: int):
    return (
        randn(E, H, seed=seed, scale=0.5),
        randn(E, I, H, seed=seed + 1, scale=0.3),
        randn(E, I, H, seed=seed + 2, scale=0.3),
        randn(E, H, I, seed=seed + 3, scale=0.3),
    )


@exercises.add(
    "swiglu_expert",
    reference=swiglu,
    hints=(
        "Mixtral's expert: w2( silu(w1 x) * (w3 x) ); w1 is the gate, w3 the up projection, w2 the down projection.",
        "x (N, H) times w1^T (H, I) gives (N, I): use x @ w1.T or F.linear(x, w1).",
        "silu goes on the w1 branch only (F.silu), never on w3's.",
    ),
)
def _swiglu_cases():
    cases = []
    for n, (N, H, I) in enumerate([(4, 8, 12), (1, 8, 28), (6, 16, 16)]):
        _, w1, w3, w2 = _weights(1, H, I, 101 + 10 * n)
        cases.append(Case(f"N={N}, H={H}, I={I}", (randn(N, H, seed=100 + n), w1[0], w3[0], w2[0])))
    return cases


@exercises.add(
    "moe_block",
    reference=moe_block_reference,
    outputs=("y", "router_logits"),
    hints=(
        "Flatten x to (B*T, H); router logits = flat @ gate.T in float32, shape (B*T, E).",
        "Softmax (fp32) -> top-k -> renormalise; then for each expert run SwiGLU on its tokens and add the weighted outputs.",
        "Reshape y back to (B, T, H) in x's dtype and return (y, router_logits).",
    ),
)
def _moe_block_cases():
    return [
        Case("B=1, T=5, H=8, E=4, k=2", (randn(1, 5, 8, seed=111), *_weights(4, 8, 12, 112), 2)),
        Case("B=2, T=3, H=8, E=8, k=2 (Mixtral)", (randn(2, 3, 8, seed=121), *_weights(8, 8, 12, 122), 2)),
        Case("k=1, B=1, T=4, H=8, E=4", (randn(1, 4, 8, seed=131), *_weights(4, 8, 12, 132), 1)),
        Case(
            "bf16 x and weights: router logits in float32, y in bf16, B=2, T=4, H=8, E=4, k=2",
            (
                randn(2, 4, 8, seed=141, dtype=torch.bfloat16),
                *(w.to(torch.bfloat16) for w in _weights(4, 8, 12, 142)),
                2,
            ),
        ),
    ]


@exercises.add(
    "active_parameters",
    reference=active_parameters_reference,
    hints=(
        "Start from the total: embedding V*H, attention per layer, router E*H per layer, E experts of 3*H*I each per layer, norms, lm_head H*V.",
        "A token runs only k of the E experts: subtract (E - k) * 3*H*I per layer from the total.",
        "Everything else (embedding, attention, router, norms, lm_head) is active for every token; Mixtral 8x7B gives 12,879,925,248.",
        "With config.tie_word_embeddings the lm_head is the embedding matrix itself: count those V*H weights once.",
    ),
)
def _active_parameters_cases():
    return [
        Case("mixtral-8x7b", (PRESETS["mixtral-8x7b"],)),
        Case("tiny", (PRESETS["tiny"],)),
        Case("mixtral-8x22b", (PRESETS["mixtral-8x22b"],)),
        Case("tiny with k=1 and E=16", (PRESETS["tiny"].replace(num_experts_per_tok=1, num_local_experts=16),)),
        Case(
            "tiny with tie_word_embeddings=True (lm_head shares the embedding's weights)",
            (PRESETS["tiny"].replace(tie_word_embeddings=True),),
        ),
    ]


check_swiglu_expert = _swiglu_cases.check
check_moe_block = _moe_block_cases.check
check_active_parameters = _active_parameters_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

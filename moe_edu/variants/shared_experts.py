"""Shared experts plus fine-grained routed experts (DeepSeekMoE, Dai et al. 2024).

Two changes to Mixtral's layer, at the same total and active parameter count:
- fine-grained segmentation: split each of the E experts into m narrower ones (intermediate
  I/m) and route to k*m of them, so a token mixes more, smaller specialists;
- shared experts: S of those fine experts run on *every* token with weight 1 (common
  knowledge lives there), leaving E*m - S routed experts and k*m - S routed choices.

    y = sum_{s < S} FFN_s(x) + sum_{i in top-K(softmax(x W_g))} s_i FFN_i(x)     (no renormalisation)

Aux loss (expert-level balance): (N_r / K) * sum_i f_i P_i with f_i = share of tokens choosing i.
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..experts import Experts
from ..losses import load_balancing_loss
from ..moe_block import MoEBlock
from ..routing import Routing, TopKRouter
from ..validation import positive_int
from .base import routed_block


class FineGrainedRouter(TopKRouter):
    """Softmax over the routed experts, top-K kept without renormalising; expert-level balance loss."""

    label = "Shared + fine-grained (DeepSeekMoE)"
    gating = "S shared always on + softmax -> top-K routed (no renormalisation)"
    aux_loss_names = ("expert_balance",)

    def __init__(self, hidden_size: int, num_routed: int, top_k: int) -> None:
        super().__init__(hidden_size, num_routed, top_k, order="softmax_topk_unnormalised")

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        return {"expert_balance": load_balancing_loss(routing.logits, self.num_experts, self.top_k) / self.top_k}


def build_shared_experts(config: MixtralConfig, granularity: int = 2, num_shared: int = 1) -> MoEBlock:
    """Same total and active parameters as `config`'s layer: E*m experts of width I/m, k*m active,
    `num_shared` of them shared (on every token), the rest routed."""
    E, k, I = config.num_local_experts, config.num_experts_per_tok, config.intermediate_size
    if positive_int("granularity", granularity) and I % granularity:
        raise ValueError(f"granularity must be a positive int dividing intermediate_size={I}, got {granularity!r}")
    positive_int("num_shared", num_shared)
    if not 1 <= num_shared < k * granularity:
        raise ValueError(f"num_shared must be in [1, k*granularity={k * granularity}), got {num_shared}")
    H, width, routed = config.hidden_size, I // granularity, E * granularity - num_shared
    router = FineGrainedRouter(H, routed, k * granularity - num_shared)
    return routed_block(config, router, Experts(routed, H, width), shared=Experts(num_shared, H, width))

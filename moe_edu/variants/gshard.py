"""GShard's top-2 gating with expert capacity and random routing (Lepikhin et al. 2020, Algorithm 1).

g1, g2 = the two largest softmax probabilities, normalised by g1 + g2 (as Mixtral does).
Random routing: the second expert is used only with probability min(1, 2 * g2), since a
small g2 adds little; we apply it in training only (at inference both experts run, so
with enough capacity GShard equals Mixtral's block). Capacity C = ceil(capacity_factor * 2N / E)
rows per expert, first choices of all tokens queued before any second choice; overflow is
dropped (no renormalisation afterwards). Aux loss: E * sum_e f_e P_e with f_e from first choices.
"""

from __future__ import annotations

import torch

from ..capacity import CapacityRouter, keep_within_capacity
from ..config import MixtralConfig
from ..losses import load_balancing_loss
from ..moe_block import MoEBlock
from ..routing import Routing, softmax_topk
from .base import routed_block


class GShardRouter(CapacityRouter):
    """Top-2, renormalised; in training the 2nd expert is kept w.p. 2*g2; C rows per expert, first choices first."""

    top_k = slots_per_token = 2
    label = "GShard top-2"
    gating = "softmax -> top-2 -> renormalise; 2nd kept w.p. 2*g2 (training)"
    aux_loss_names = ("load_balancing",)

    def __init__(self, hidden_size: int, num_experts: int, capacity_factor: float, random_routing: bool = True) -> None:
        if num_experts < 2:
            raise ValueError(f"GShardRouter needs num_experts >= 2 for top-2 routing, got {num_experts}")
        super().__init__(hidden_size, num_experts, capacity_factor)
        self.random_routing = bool(random_routing)

    @property
    def capacity_rule(self) -> str:
        return f"C = ceil({self.capacity_factor:g} 2N/E), overflow dropped"

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(x)  # (N, E)
        weights, chosen = softmax_topk(logits, 2)  # (N, 2), (N, 2): g1, g2 normalised to sum 1
        requested = torch.ones_like(chosen, dtype=torch.bool)  # (N, 2)
        if self.training and self.random_routing:
            requested[:, 1] = torch.rand_like(weights[:, 1]) < 2 * weights[:, 1]  # (N,)
        keep = keep_within_capacity(chosen, self.num_experts, self.capacity(x.shape[0]), requested)  # (N, 2)
        return Routing(logits, weights, chosen, keep=keep, requested=requested)

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        return {"load_balancing": load_balancing_loss(routing.logits, self.num_experts, 1)}


def build_gshard(config: MixtralConfig, capacity_factor: float = 1.25, random_routing: bool = True) -> MoEBlock:
    """GShard's top-2 router with capacity (and random routing in training) over `config`'s experts."""
    return routed_block(
        config, GShardRouter(config.hidden_size, config.num_local_experts, capacity_factor, random_routing)
    )

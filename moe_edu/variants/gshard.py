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

from ..config import MixtralConfig
from ..losses import load_balancing_loss
from ..routing import softmax_topk
from ..capacity import check_capacity_factor, dispatch_kept, expert_capacity, keep_within_capacity
from .base import MoEOutput, RoutedMoE


class GShardMoE(RoutedMoE):
    label = "GShard top-2"
    gating = "softmax -> top-2 -> renormalise; 2nd kept w.p. 2*g2 (training)"
    aux_loss_names = ("load_balancing",)
    top_k = 2

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int = 8,
                 capacity_factor: float = 1.25, random_routing: bool = True) -> None:
        super().__init__(hidden_size, intermediate_size, num_experts)
        if num_experts < 2:
            raise ValueError(f"GShardMoE needs num_experts >= 2 for top-2 routing, got {num_experts}")
        self.capacity_factor = check_capacity_factor(capacity_factor)
        self.random_routing = bool(random_routing)
        self.capacity_rule = f"C = ceil({self.capacity_factor:g} 2N/E), overflow dropped"
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MixtralConfig, capacity_factor: float = 1.25,
                    random_routing: bool = True) -> "GShardMoE":
        return cls(config.hidden_size, config.intermediate_size, config.num_local_experts, capacity_factor,
                   random_routing)

    @property
    def experts_per_token(self) -> float:
        return 2.0

    def capacity(self, num_tokens: int) -> int:
        return expert_capacity(num_tokens, self.num_experts, 2, self.capacity_factor)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        logits = self.router_logits(flat)  # (N, E)
        weights, chosen = softmax_topk(logits, 2)  # (N, 2), (N, 2): g1, g2 normalised to sum 1
        active = torch.ones_like(chosen, dtype=torch.bool)  # (N, 2)
        if self.training and self.random_routing:
            active[:, 1] = torch.rand_like(weights[:, 1]) < 2 * weights[:, 1]  # (N,)
        keep = keep_within_capacity(chosen, self.num_experts, self.capacity(flat.shape[0]), active)  # (N, 2)
        y = dispatch_kept(flat, self.experts, weights, chosen, keep)  # (N, H)
        return MoEOutput(
            y=y.reshape(x.shape), router_logits=logits,
            aux_losses={"load_balancing": load_balancing_loss(logits, self.num_experts, 1)},
            expert_load=torch.bincount(chosen[keep], minlength=self.num_experts),  # (E,)
            expert_demand=torch.bincount(chosen[active], minlength=self.num_experts),  # (E,)
            dropped=int((~keep.any(dim=1)).sum()), dropped_assignments=int((active & ~keep).sum()),
            num_tokens=flat.shape[0],
        )

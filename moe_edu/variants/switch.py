"""Switch Transformer's top-1 routing with a capacity factor (Fedus et al. 2021, section 2).

Each token goes to its single most probable expert and the output is scaled by that
probability, y = p_i(x) E_i(x) (not renormalised to 1, so the router still gets a gradient).
Each expert has C = ceil(capacity_factor * N / E) rows; tokens that arrive at a full expert
are dropped: counted in `dropped`, output 0, carried on by the residual connection.
Auxiliary loss: E * sum_i f_i P_i (the same function transformers uses for Mixtral, with k = 1).
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..losses import load_balancing_loss
from .base import MoEOutput, RoutedMoE, check_capacity_factor
from .capacity import dispatch_kept, expert_capacity, keep_within_capacity


class SwitchMoE(RoutedMoE):
    label = "Switch top-1"
    gating = "softmax -> top-1, weight = p (no renormalisation)"
    aux_loss_names = ("load_balancing",)

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int = 8,
                 capacity_factor: float = 1.25) -> None:
        super().__init__(hidden_size, intermediate_size, num_experts)
        self.capacity_factor = check_capacity_factor(capacity_factor)
        self.capacity_rule = f"C = ceil({self.capacity_factor:g} N/E), overflow dropped"
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MixtralConfig, capacity_factor: float = 1.25) -> "SwitchMoE":
        return cls(config.hidden_size, config.intermediate_size, config.num_local_experts, capacity_factor)

    @property
    def experts_per_token(self) -> float:
        return 1.0

    def capacity(self, num_tokens: int) -> int:
        return expert_capacity(num_tokens, self.num_experts, 1, self.capacity_factor)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        logits = self.router_logits(flat)  # (N, E)
        probs = torch.softmax(logits, dim=-1)  # (N, E)
        weight, chosen = probs.max(dim=-1, keepdim=True)  # (N, 1), (N, 1)
        keep = keep_within_capacity(chosen, self.num_experts, self.capacity(flat.shape[0]))  # (N, 1)
        y = dispatch_kept(flat, self.experts, weight, chosen, keep)  # (N, H)
        dropped = int((~keep).sum())
        return MoEOutput(
            y=y.reshape(x.shape), router_logits=logits,
            aux_losses={"load_balancing": load_balancing_loss(logits, self.num_experts, 1)},
            expert_load=torch.bincount(chosen[keep], minlength=self.num_experts),  # (E,)
            expert_demand=torch.bincount(chosen.reshape(-1), minlength=self.num_experts),  # (E,)
            dropped=dropped, dropped_assignments=dropped, num_tokens=flat.shape[0],
        )

"""Mixtral's dropless top-2: the reference point of the family (Jiang et al. 2024, eq. 1-2).

softmax over E logits -> keep the top k -> renormalise; every chosen expert runs on every
token that chose it (no capacity, nothing dropped). Same numbers as `SparseMoeBlock`.
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..dispatch import grouped_dispatch
from ..losses import load_balancing_loss
from ..routing import TopKRouter
from .base import MoEOutput, RoutedMoE


class MixtralDroplessMoE(RoutedMoE):
    label = "Mixtral dropless top-k"
    gating = "softmax -> top-k -> renormalise"
    capacity_rule = "none (dropless)"
    aux_loss_names = ("load_balancing",)

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int = 8, top_k: int = 2) -> None:
        super().__init__(hidden_size, intermediate_size, num_experts)
        self.top_k = top_k
        self.gate = TopKRouter(hidden_size, num_experts, top_k)  # same key `gate.weight`, the library's router
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MixtralConfig) -> "MixtralDroplessMoE":
        return cls(config.hidden_size, config.intermediate_size, config.num_local_experts, config.num_experts_per_tok)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        logits, weights, chosen = self.gate(flat)  # (N, E), (N, k), (N, k)
        y = grouped_dispatch(flat, self.experts, weights, chosen)  # (N, H)
        return MoEOutput(
            y=y.reshape(x.shape), router_logits=logits,
            aux_losses={"load_balancing": load_balancing_loss(logits, self.num_experts, self.top_k)},
            expert_load=torch.bincount(chosen.reshape(-1), minlength=self.num_experts),  # (E,)
            num_tokens=flat.shape[0],
        )

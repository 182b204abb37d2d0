"""Mixtral's dropless top-2: the reference point of the family (Jiang et al. 2024, eq. 1-2).

softmax over E logits -> keep the top k -> renormalise; every chosen expert runs on every
token that chose it (no capacity, nothing dropped). The library's `TopKRouter` in the
library's block: the same numbers as `SparseMoeBlock`, returned as a `MoEOutput`.
"""

from __future__ import annotations

from ..config import MixtralConfig
from ..experts import Experts
from ..routing import TopKRouter
from .base import RoutedMoE


class MixtralDroplessMoE(RoutedMoE):
    label = "Mixtral dropless top-k"
    gating = "softmax -> top-k -> renormalise"
    capacity_rule = "none (dropless)"
    aux_loss_names = ("load_balancing",)

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int = 8, top_k: int = 2) -> None:
        super().__init__(
            TopKRouter(hidden_size, num_experts, top_k), Experts(num_experts, hidden_size, intermediate_size)
        )

    @classmethod
    def from_config(cls, config: MixtralConfig) -> MixtralDroplessMoE:
        return cls(config.hidden_size, config.intermediate_size, config.num_local_experts, config.num_experts_per_tok)

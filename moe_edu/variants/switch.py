"""Switch Transformer's top-1 routing with a capacity factor (Fedus et al. 2021, section 2).

Each token goes to its single most probable expert and the output is scaled by that
probability, y = p_i(x) E_i(x) (not renormalised to 1, so the router still gets a gradient).
Each expert has C = ceil(capacity_factor * N / E) rows; tokens that arrive at a full expert
are dropped: counted in `dropped`, output 0, carried on by the residual connection.
Auxiliary loss: E * sum_i f_i P_i (the same function transformers uses for Mixtral, with k = 1).
"""

from __future__ import annotations

import torch

from ..capacity import CapacityRouter, expert_capacity, keep_within_capacity
from ..config import MixtralConfig
from ..losses import load_balancing_loss
from ..moe_block import MoEBlock
from ..routing import Routing
from .base import routed_block


def switch_route(logits: torch.Tensor, capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-1 routing with capacity: logits (N, E) -> weight (N,) = p of the chosen expert (fp32),
    expert (N,) int64, keep (N,) bool (False = dropped: its expert was full, first come first served)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (tokens, experts), got shape {tuple(logits.shape)}")
    N, E = logits.shape
    probs = torch.softmax(logits.float(), dim=-1)  # (N, E)
    weight, expert = probs.max(dim=-1)  # (N,), (N,)
    keep = keep_within_capacity(expert[:, None], E, expert_capacity(N, E, 1, capacity_factor))  # (N, 1)
    return weight, expert, keep[:, 0]


class SwitchRouter(CapacityRouter):
    """Top-1, weight = p (no renormalisation), C rows per expert, overflow dropped."""

    top_k = 1
    label = "Switch top-1"
    gating = "softmax -> top-1, weight = p (no renormalisation)"
    aux_loss_names = ("load_balancing",)

    @property
    def capacity_rule(self) -> str:
        return f"C = ceil({self.capacity_factor:g} N/E), overflow dropped"

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(x)  # (N, E)
        weight, expert, keep = switch_route(logits, self.capacity_factor)  # (N,), (N,), (N,)
        return Routing(
            logits, weight[:, None], expert[:, None], keep=keep[:, None], requested=torch.ones_like(keep)[:, None]
        )  # (N, 1) each: k = 1

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        return {"load_balancing": load_balancing_loss(routing.logits, self.num_experts, 1)}


def build_switch(config: MixtralConfig, capacity_factor: float = 1.25) -> MoEBlock:
    """Switch's top-1 router with capacity over `config`'s experts."""
    return routed_block(config, SwitchRouter(config.hidden_size, config.num_local_experts, capacity_factor))

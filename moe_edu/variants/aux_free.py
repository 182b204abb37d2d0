"""Auxiliary-loss-free load balancing (Wang et al. 2024, arXiv 2408.15664; adopted by DeepSeek-V3, §2.1.2).

Each expert i has a bias b_i that is added to its score *only to choose* the top k:

    chosen = top-k_i (s_i(x) + b_i)          weights = s_chosen / sum s_chosen   (no b in the weights)

After each training batch the bias is nudged by the load it produced, with a fixed step
gamma (the "bias update speed"): b_i -= gamma for an overloaded expert (load above the mean),
b_i += gamma for an underloaded one. No loss term, so no gradient that competes with the
language-modelling loss; the bias is a buffer, not a parameter. DeepSeek-V3 scores with a
sigmoid (`score="sigmoid"`); `score="softmax"` (the default) is Mixtral's softmax, so with
b = 0 this router routes exactly as Mixtral's. DeepSeek-V3 still adds a very small
sequence-wise balance loss; this module leaves it out to show the bias alone.

Unlike the Switch loss (notebook 07's blind spot: flat probabilities score a perfect k
whatever the hard choices), the update reads the hard counts themselves.
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..moe_block import MoEBlock
from ..routing import Routing, TopKRouter
from .base import routed_block

SCORES = ("softmax", "sigmoid")


def bias_update(bias: torch.Tensor, load_counts: torch.Tensor, speed: float) -> torch.Tensor:
    """One DeepSeek-V3 step: b - speed * sign(load - mean load). bias (E,), load_counts (E,) -> (E,)."""
    load = load_counts.to(bias.dtype)  # (E,)
    return bias - speed * torch.sign(load - load.mean())  # (E,)


class AuxFreeRouter(TopKRouter):
    """Top-k of (score + bias) picks the experts; the unbiased scores, renormalised, weigh them."""

    label = "Aux-loss-free bias (DeepSeek-V3)"
    gating = "top-k of (score + bias) -> unbiased scores, renormalised"
    aux_loss_names = ()

    def __init__(
        self, hidden_size: int, num_experts: int, top_k: int, *, bias_update_speed: float = 1e-3, score: str = "softmax"
    ) -> None:
        super().__init__(hidden_size, num_experts, top_k)
        if score not in SCORES:
            raise ValueError(f"AuxFreeRouter: score must be one of {SCORES}, got {score!r}")
        if not bias_update_speed >= 0:
            raise ValueError(f"AuxFreeRouter: bias_update_speed must be >= 0, got {bias_update_speed!r}")
        self.score, self.bias_update_speed = score, float(bias_update_speed)
        self.register_buffer("bias", torch.zeros(num_experts))  # (E,) selection only; never in the weights

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (N, E) fp32 -> affinities (N, E): softmax over experts, or an elementwise sigmoid."""
        return torch.softmax(logits, dim=-1) if self.score == "softmax" else torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(x)  # (N, E) fp32
        s = self.scores(logits)  # (N, E)
        expert_ids = torch.topk(s + self.bias.to(s.dtype), self.top_k, dim=-1).indices  # (N, k): biased choice
        chosen = s.gather(1, expert_ids)  # (N, k): unbiased scores
        weights = chosen / chosen.sum(dim=-1, keepdim=True)  # (N, k), sums to 1
        if self.training and self.bias_update_speed > 0:
            self.update_bias(expert_ids)
        return Routing(logits, weights, expert_ids, extras={"scores": s})

    @torch.no_grad()
    def update_bias(self, expert_ids: torch.Tensor) -> None:
        """Nudge the bias by the hard load of this batch's choices expert_ids (N, k)."""
        counts = torch.bincount(expert_ids.reshape(-1), minlength=self.num_experts)  # (E,)
        self.bias.copy_(bias_update(self.bias, counts, self.bias_update_speed))

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        return {}  # the point of the method

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, score={self.score}, bias_update_speed={self.bias_update_speed:g}"


def build_aux_free(config: MixtralConfig, bias_update_speed: float = 1e-3, score: str = "softmax") -> MoEBlock:
    """DeepSeek-V3's bias-balanced top-k router over `config`'s experts."""
    E, H = config.num_local_experts, config.hidden_size
    router = AuxFreeRouter(H, E, config.num_experts_per_tok, bias_update_speed=bias_update_speed, score=score)
    return routed_block(config, router)

"""Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing").

The experts choose instead of the tokens: S = softmax over experts of the router logits
(N, E); each expert takes the C tokens with its highest scores, C = ceil(capacity_factor * N / E),
and weights them by those scores. Every expert gets exactly C tokens (perfect balance, no
auxiliary loss), a token may get several experts or none (`dropped` counts the latter), and
capacity_factor is the *average* number of experts per token. The choice looks at the whole
batch, so a token's routing depends on the tokens after it: fine in training, awkward for
autoregressive decoding.
"""

from __future__ import annotations

import torch

from ..capacity import CapacityRouter, expert_capacity
from ..config import MixtralConfig
from ..moe_block import MoEBlock
from ..routing import Routing
from .base import routed_block


def expert_choice_route(logits: torch.Tensor, capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each expert picks its C best tokens: logits (N, E) -> gate (E, C) fp32 scores, token (E, C) int64,
    with S = softmax over experts and C = ceil(capacity_factor * N / E) (highest score first)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (tokens, experts), got shape {tuple(logits.shape)}")
    N, E = logits.shape
    scores = torch.softmax(logits.float(), dim=-1)  # (N, E)
    gate, token = torch.topk(scores.t(), expert_capacity(N, E, 1, capacity_factor), dim=-1)  # (E, C), (E, C)
    return gate, token


class ExpertChoiceRouter(CapacityRouter):
    """Every expert takes its top-C tokens; as assignments: (N, E) with `keep` marking the chosen (token, expert)."""

    label = "Expert choice"
    gating = "softmax over experts; each expert takes its top-C tokens"

    @property
    def top_k(self) -> int:
        """k of its `Routing`: all E experts are candidates for every token, `keep` marks those that
        took it; a token runs `experts_per_token` of them on average, not k."""
        return self.num_experts

    @property
    def experts_per_token(self) -> float:
        return self.capacity_factor

    @property
    def capacity_rule(self) -> str:
        return f"exactly C = ceil({self.capacity_factor:g} N/E) per expert"

    @property
    def k_text(self) -> str:
        return f"{self.capacity_factor:g} on average"

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(x)  # (N, E)
        N, E = logits.shape
        gate, token = expert_choice_route(logits, self.capacity_factor)  # (E, C), (E, C): each expert's best tokens
        weights = torch.zeros(E, N, dtype=gate.dtype, device=x.device).scatter(1, token, gate).t()  # (N, E)
        keep = torch.zeros(E, N, dtype=torch.bool, device=x.device).scatter(1, token, True).t()  # (N, E)
        expert_ids = torch.arange(E, device=x.device).expand(N, E)  # (N, E): slot j is expert j
        return Routing(logits, weights, expert_ids, keep=keep)


def build_expert_choice(config: MixtralConfig, capacity_factor: float | None = None) -> MoEBlock:
    """Expert-choice routing over `config`'s experts; capacity_factor defaults to k, so a token gets
    Mixtral's k experts on average."""
    c = float(config.num_experts_per_tok) if capacity_factor is None else capacity_factor
    return routed_block(config, ExpertChoiceRouter(config.hidden_size, config.num_local_experts, c))

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

from ..config import MixtralConfig
from ..capacity import check_capacity_factor, dispatch_assignments, expert_capacity
from .base import MoEOutput, RoutedMoE


def expert_choice_route(logits: torch.Tensor, capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each expert picks its C best tokens: logits (N, E) -> gate (E, C) fp32 scores, token (E, C) int64,
    with S = softmax over experts and C = ceil(capacity_factor * N / E) (highest score first)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (tokens, experts), got shape {tuple(logits.shape)}")
    N, E = logits.shape
    scores = torch.softmax(logits.float(), dim=-1)  # (N, E)
    gate, token = torch.topk(scores.t(), expert_capacity(N, E, 1, capacity_factor), dim=-1)  # (E, C), (E, C)
    return gate, token


class ExpertChoiceMoE(RoutedMoE):
    label = "Expert choice"
    gating = "softmax over experts; each expert takes its top-C tokens"
    aux_loss_names = ()

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int = 8,
                 capacity_factor: float = 2.0) -> None:
        super().__init__(hidden_size, intermediate_size, num_experts)
        self.capacity_factor = check_capacity_factor(capacity_factor)
        self.capacity_rule = f"exactly C = ceil({self.capacity_factor:g} N/E) per expert"
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MixtralConfig, capacity_factor: float | None = None) -> "ExpertChoiceMoE":
        """capacity_factor defaults to k, so a token gets Mixtral's k experts on average."""
        c = float(config.num_experts_per_tok) if capacity_factor is None else capacity_factor
        return cls(config.hidden_size, config.intermediate_size, config.num_local_experts, c)

    @property
    def experts_per_token(self) -> float:
        return self.capacity_factor

    def k_text(self) -> str:
        return f"{self.capacity_factor:g} on average"

    def capacity(self, num_tokens: int) -> int:
        return expert_capacity(num_tokens, self.num_experts, 1, self.capacity_factor)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        N, E = flat.shape[0], self.num_experts
        logits = self.router_logits(flat)  # (N, E)
        gate, token = expert_choice_route(logits, self.capacity_factor)  # (E, C), (E, C): each expert's best tokens
        C = gate.shape[1]
        expert = torch.arange(E, device=flat.device).repeat_interleave(C)  # (E*C,)
        y = dispatch_assignments(flat, self.experts, token.reshape(-1), expert, gate.reshape(-1))  # (N, H)
        experts_per_token = torch.bincount(token.reshape(-1), minlength=N)  # (N,)
        return MoEOutput(
            y=y.reshape(x.shape), router_logits=logits, aux_losses={},
            expert_load=torch.full((E,), C, dtype=torch.long, device=flat.device),  # (E,) exactly C each
            dropped=int((experts_per_token == 0).sum()), dropped_assignments=0, num_tokens=N,
        )

"""Soft MoE (Puigcerver et al. 2023, "From Sparse to Soft Mixtures of Experts").

No token is sent anywhere. Each expert owns p *slots*; slot s has a parameter vector phi_s
(Phi: (S, H), S = E p) and the logits of a group of m tokens are  L = X Phi^T  (m, S). Then

    D = softmax over the m tokens (each column)      dispatch: slot input  X~_s = sum_t D_ts x_t
    C = softmax over the S slots  (each row)         combine:  y_t = sum_s C_ts Expert_{e(s)}(X~_s)

Every slot is a weighted average of *all* tokens of its group, so every token's output depends
on every other token in the group, the future ones included: a causal decoder cannot use it
as is (token t would see tokens > t), and generating one token at a time has a group of one.
Load is perfectly even by construction (each expert processes exactly p slots per group) and
nothing is dropped; the cost per token falls as the group grows (E p expert calls per group).

With p = 1, Phi has the shape of Mixtral's router weight (E, H), so `copy_from_block` works.
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..experts import Experts
from ..routing import Router
from .base import MoEOutput, RoutedMoE


def soft_weights(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (G, m, S) -> dispatch (G, m, S), softmax over tokens m; combine (G, m, S), softmax over slots S."""
    return torch.softmax(logits, dim=1), torch.softmax(logits, dim=2)


class SoftRouter(Router):
    """Phi: one vector per slot, `weight` (E p, H); computes dispatch and combine weights for a group."""

    def __init__(
        self, hidden_size: int, num_experts: int, slots_per_expert: int = 1, tokens_per_group: int = 64
    ) -> None:
        for name, value in (("slots_per_expert", slots_per_expert), ("tokens_per_group", tokens_per_group)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SoftRouter: {name} must be a positive int, got {value!r}")
        super().__init__(hidden_size, num_experts * slots_per_expert)  # weight (E p, H)
        self.num_experts, self.slots_per_expert, self.tokens_per_group = num_experts, slots_per_expert, tokens_per_group

    @property
    def num_slots(self) -> int:
        return self.num_experts * self.slots_per_expert

    @property
    def experts_per_token(self) -> float:
        """Expert calls per token for accounting: E p slots shared by a group of `tokens_per_group` tokens."""
        return self.num_slots / self.tokens_per_group

    def forward(self, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xg (G, m, H) -> dispatch (G, m, S), combine (G, m, S), slot logits (G, m, S), all fp32."""
        logits = self.logits(xg)  # (G, m, S)
        return (*soft_weights(logits), logits)


class SoftMoE(RoutedMoE):
    """Soft MoE over the library's `Experts`; x (..., m, H): softmax over the m tokens of each sequence."""

    label = "Soft MoE (Puigcerver 2023)"
    gating = "slots = softmax-over-tokens mix; y = softmax-over-slots mix"
    capacity_rule = "p slots per expert (never drops)"
    aux_loss_names = ()

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int = 8,
        slots_per_expert: int = 1,
        tokens_per_group: int = 64,
    ) -> None:
        super().__init__(
            SoftRouter(hidden_size, num_experts, slots_per_expert, tokens_per_group),
            Experts(num_experts, hidden_size, intermediate_size),
        )

    @property
    def top_k(self) -> int:
        return self.num_experts  # every token reaches every expert (through the slots)

    def groups(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., m, H) -> (G, m, H): one group per sequence; a 2-D (m, H) input is one group."""
        flat = self.flatten(x)  # (N, H), validates x
        m = x.shape[-2] if x.dim() >= 3 else flat.shape[0]
        return flat.reshape(-1, m, self.hidden_size)  # (G, m, H)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        xg = self.groups(x)  # (G, m, H)
        G, m, H = xg.shape
        E, p = self.num_experts, self.gate.slots_per_expert
        dispatch, combine, logits = self.gate(xg)  # (G, m, S) each, fp32
        slots_in = torch.einsum("gms,gmh->gsh", dispatch, xg.float()).to(x.dtype)  # (G, S, H)
        per_expert = slots_in.reshape(G, E, p, H).transpose(0, 1).reshape(E, G * p, H)  # (E, G p, H)
        slots_out = torch.stack([self.experts.expert(e, per_expert[e]) for e in range(E)])  # (E, G p, H)
        slots_out = slots_out.reshape(E, G, p, H).transpose(0, 1).reshape(G, E * p, H)  # (G, S, H)
        y = torch.einsum("gms,gsh->gmh", combine, slots_out.float()).to(x.dtype)  # (G, m, H)
        per_expert_logits = logits.reshape(G * m, E, p).logsumexp(dim=-1)  # (N, E): an expert's slots pooled
        return MoEOutput(
            y=y.reshape(x.shape),
            router_logits=per_expert_logits,
            aux_losses={},
            load_counts=torch.full((E,), G * p, dtype=torch.long, device=x.device),  # slots per expert
            num_tokens=G * m,
        )

    def active_parameters(self) -> int:
        """Phi (every token scores every slot) + the expert share of one token (E p / m expert calls)."""
        return self.gate.weight.numel() + round(self.experts_per_token * self.expert_parameters)

    def flops_per_token(self) -> int:
        """2 x active, plus the dispatch and combine mixes: 2 S H multiply-adds per token each."""
        return 2 * self.active_parameters() + 4 * self.gate.weight.numel()

    def k_text(self) -> str:
        return f"soft: {self.gate.num_slots} slots / {self.gate.tokens_per_group} tokens"

    @classmethod
    def from_config(cls, config: MixtralConfig, slots_per_expert: int = 1, tokens_per_group: int = 64) -> SoftMoE:
        return cls(
            config.hidden_size, config.intermediate_size, config.num_local_experts, slots_per_expert, tokens_per_group
        )

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

With p = 1, Phi has the shape of Mixtral's router weight (E, H), so `base.copy_from_block` works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MixtralConfig
from ..experts import Experts
from ..moe_block import flatten_tokens
from ..routing import at_least_fp32
from ..validation import positive_int
from .base import MoEOutput


def soft_weights(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (G, m, S) -> dispatch (G, m, S), softmax over tokens m; combine (G, m, S), softmax over slots S."""
    return torch.softmax(logits, dim=1), torch.softmax(logits, dim=2)


class SoftRouter(nn.Module):
    """Phi: one vector per slot, `weight` (E p, H); computes dispatch and combine weights for a group.

    Not a `moe_edu.routing.Router`: it decides nothing (no `Routing`), it mixes. It carries the
    same table metadata as the routers, so notebook 09's table reads every variant alike.
    """

    label = "Soft MoE (Puigcerver 2023)"
    gating = "slots = softmax-over-tokens mix; y = softmax-over-slots mix"
    capacity_rule = "p slots per expert (never drops)"
    aux_loss_names: tuple[str, ...] = ()

    def __init__(
        self, hidden_size: int, num_experts: int, slots_per_expert: int = 1, tokens_per_group: int = 64
    ) -> None:
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("num_experts", num_experts),
            ("slots_per_expert", slots_per_expert),
            ("tokens_per_group", tokens_per_group),
        ):
            positive_int(f"SoftRouter: {name}", value)
        self.num_experts, self.slots_per_expert, self.tokens_per_group = num_experts, slots_per_expert, tokens_per_group
        self.weight = nn.Parameter(torch.empty(self.num_slots, hidden_size))  # (E p, H) Phi

    def reset_parameters(self, std: float = 0.02) -> None:
        if self.weight.device.type != "meta":
            nn.init.normal_(self.weight, 0.0, std)

    @property
    def num_slots(self) -> int:
        return self.num_experts * self.slots_per_expert

    @property
    def experts_per_token(self) -> float:
        """Expert calls per token for accounting: E p slots shared by a group of `tokens_per_group` tokens."""
        return self.num_slots / self.tokens_per_group

    @property
    def k_text(self) -> str:
        return f"soft: {self.num_slots} slots / {self.tokens_per_group} tokens"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., H) -> slot logits (..., S) in fp32."""
        return F.linear(at_least_fp32(x), at_least_fp32(self.weight))  # (..., S)

    def forward(self, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xg (G, m, H) -> dispatch (G, m, S), combine (G, m, S), slot logits (G, m, S), all fp32."""
        logits = self.logits(xg)  # (G, m, S)
        return (*soft_weights(logits), logits)

    def extra_repr(self) -> str:
        return f"slots={self.num_slots}, tokens_per_group={self.tokens_per_group}"


class SoftMoE(nn.Module):
    """Soft MoE over the library's `Experts`; x (..., m, H): softmax over the m tokens of each sequence.

    A sibling of `MoEBlock`, not a kind of it: no token is routed, so it has no `mix` or `route`;
    its forward returns the family's `MoEOutput`.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int = 8,
        slots_per_expert: int = 1,
        tokens_per_group: int = 64,
        *,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        self.gate = SoftRouter(hidden_size, num_experts, slots_per_expert, tokens_per_group)
        self.experts = Experts(num_experts, hidden_size, intermediate_size)
        self.hidden_size, self.num_experts, self.initializer_range = hidden_size, num_experts, initializer_range
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.gate.reset_parameters(self.initializer_range)
        self.experts.reset_parameters(self.initializer_range)

    def groups(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., m, H) -> (G, m, H): one group per sequence; a 2-D (m, H) input is one group."""
        flat = flatten_tokens(x, self.experts.gate_up_proj, type(self).__name__, any_rank=True)  # (N, H), validates x
        return flat.reshape(-1, x.shape[-2], self.hidden_size)  # (G, m, H)

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

    def mixing_flops_per_token(self) -> int:
        """The dispatch and combine mixes: 2 S H multiply-adds per token each (4 S H FLOPs)."""
        return 4 * self.gate.weight.numel()


def build_soft_moe(config: MixtralConfig, slots_per_expert: int = 1, tokens_per_group: int = 64) -> SoftMoE:
    """Soft MoE with `config`'s experts; with p = 1, Phi has the shape of Mixtral's router weight."""
    E, H, I = config.num_local_experts, config.hidden_size, config.intermediate_size
    return SoftMoE(H, I, E, slots_per_expert, tokens_per_group, initializer_range=config.initializer_range)

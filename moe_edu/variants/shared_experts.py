"""Shared experts plus fine-grained routed experts (DeepSeekMoE, Dai et al. 2024).

Two changes to Mixtral's layer, at the same total and active parameter count:
- fine-grained segmentation: split each of the E experts into m narrower ones (intermediate
  I/m) and route to k*m of them, so a token mixes more, smaller specialists;
- shared experts: S of those fine experts run on *every* token with weight 1 (common
  knowledge lives there), leaving E*m - S routed experts and k*m - S routed choices.

    y = sum_{s < S} FFN_s(x) + sum_{i in top-K(softmax(x W_g))} s_i FFN_i(x)     (no renormalisation)

Aux loss (expert-level balance): (N_r / K) * sum_i f_i P_i with f_i = share of tokens choosing i.
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..dispatch import grouped_dispatch
from ..experts import Experts
from ..losses import load_balancing_loss
from .base import MoEOutput, RoutedMoE


class SharedExpertMoE(RoutedMoE):
    label = "Shared + fine-grained (DeepSeekMoE)"
    gating = "S shared always on + softmax -> top-K routed (no renormalisation)"
    capacity_rule = "none (dropless)"
    aux_loss_names = ("expert_balance",)

    def __init__(self, hidden_size: int, intermediate_size: int, num_routed: int = 15, num_shared: int = 1,
                 top_k: int = 3) -> None:
        super().__init__(hidden_size, intermediate_size, num_routed)
        if isinstance(num_shared, bool) or not isinstance(num_shared, int) or num_shared < 1:
            raise ValueError(f"SharedExpertMoE: num_shared must be an int >= 1, got {num_shared!r}")
        if not 1 <= top_k <= num_routed:
            raise ValueError(f"SharedExpertMoE: top_k must be in [1, num_routed={num_routed}], got {top_k}")
        self.num_shared, self.top_k = num_shared, top_k
        self.shared = Experts(num_shared, hidden_size, intermediate_size)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: MixtralConfig, granularity: int = 2, num_shared: int = 1) -> "SharedExpertMoE":
        """Same total and active parameters as `config`'s layer: E*m experts of width I/m, k*m active."""
        E, k, I = config.num_local_experts, config.num_experts_per_tok, config.intermediate_size
        if isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1 or I % granularity:
            raise ValueError(f"granularity must be a positive int dividing intermediate_size={I}, got {granularity!r}")
        if not 1 <= num_shared < k * granularity:
            raise ValueError(f"num_shared must be in [1, k*granularity={k * granularity}), got {num_shared}")
        return cls(config.hidden_size, I // granularity, E * granularity - num_shared, num_shared,
                   k * granularity - num_shared)

    def active_parameters(self) -> int:
        return super().active_parameters() + self.num_shared * self.expert_parameters

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["experts"] = f"{self.num_shared} shared + {self.num_experts} routed (I/m)"
        info["k"] = f"{self.num_shared} + {self.top_k}"
        return info

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        N, S = flat.shape[0], self.num_shared
        logits = self.router_logits(flat)  # (N, E_r)
        probs = torch.softmax(logits, dim=-1)  # (N, E_r)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)  # (N, K), (N, K): not renormalised
        routed = grouped_dispatch(flat, self.experts, weights, chosen)  # (N, H)
        every = torch.arange(S, device=flat.device).expand(N, S)  # (N, S): every token, every shared expert
        shared = grouped_dispatch(flat, self.shared, torch.ones(N, S, device=flat.device), every)  # (N, H)
        balance = load_balancing_loss(logits, self.num_experts, self.top_k) / self.top_k
        return MoEOutput(
            y=(shared + routed).reshape(x.shape), router_logits=logits,
            aux_losses={"expert_balance": balance},
            expert_load=torch.bincount(chosen.reshape(-1), minlength=self.num_experts),  # (E_r,) routed only
            num_tokens=N,
        )

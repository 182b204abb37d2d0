"""Noisily gated top-k (Shazeer et al. 2017, "Outrageously Large Neural Networks", section 2.1, appendix A).

    H(x)_i = (x W_g)_i + StandardNormal() * Softplus((x W_noise)_i)      (noise only in training)
    G(x)   = Softmax(KeepTopK(H(x), k))

Two auxiliary losses, both squared coefficients of variation over the experts:
importance (sum of each expert's gates over the batch) and load (a smooth estimate of how
many tokens each expert receives: P(x, i) = Phi((x W_g)_i - kth_excluding(H(x), k, i)) / noise_i)).
The paper initialises W_g and W_noise to zero; we zero W_noise (so the noise std starts at
softplus(0) = 0.69) and keep W_g shareable with the other variants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MixtralConfig
from ..dispatch import grouped_dispatch
from ..routing import topk_softmax
from .base import MoEOutput, RoutedMoE


def cv_squared(v: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation var/mean^2 of a (E,) vector (0 for a single expert)."""
    v = v.float()
    if v.numel() < 2:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + eps)


def prob_in_topk(clean: torch.Tensor, noisy: torch.Tensor, std: torch.Tensor, k: int) -> torch.Tensor:
    """P(x, i): probability that expert i stays in the top k if only its own noise were redrawn.

    clean, noisy, std (N, E) -> (N, E). Expert i needs to beat the k-th largest of the *other*
    noisy logits: the (k+1)-th largest of H if i is currently in the top k, else the k-th.
    """
    top = torch.topk(noisy, k + 1, dim=-1).values  # (N, k+1)
    in_topk = noisy >= top[:, k - 1 : k]  # (N, E)
    threshold = torch.where(in_topk, top[:, k : k + 1], top[:, k - 1 : k])  # (N, E)
    normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
    return normal.cdf((clean - threshold) / std)  # (N, E)


class NoisyTopKMoE(RoutedMoE):
    label = "Noisy top-k (Shazeer 2017)"
    gating = "top-k of (logits + softplus-scaled noise) -> softmax"
    capacity_rule = "none (dropless)"
    aux_loss_names = ("importance", "load")

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int = 8, top_k: int = 2,
                 noise_epsilon: float = 1e-2) -> None:
        super().__init__(hidden_size, intermediate_size, num_experts)
        if not 1 <= top_k < num_experts:
            raise ValueError(f"NoisyTopKMoE: top_k must be in [1, num_experts={num_experts}) "
                             f"(the load loss needs an expert outside the top k), got {top_k}")
        self.top_k, self.noise_epsilon = top_k, noise_epsilon
        self.noise = nn.Linear(hidden_size, num_experts, bias=False)  # W_noise (E, H)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        super().reset_parameters(std)
        if self.noise.weight.device.type != "meta":
            nn.init.zeros_(self.noise.weight)  # as in the paper: noise std starts at softplus(0)

    @classmethod
    def from_config(cls, config: MixtralConfig) -> "NoisyTopKMoE":
        return cls(config.hidden_size, config.intermediate_size, config.num_local_experts, config.num_experts_per_tok)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        clean = self.router_logits(flat)  # (N, E)
        std = F.softplus(F.linear(flat.float(), self.noise.weight.float())) + self.noise_epsilon  # (N, E)
        noisy = clean + torch.randn_like(clean) * std if self.training else clean  # (N, E)
        weights, chosen = topk_softmax(noisy, self.top_k)  # (N, k), (N, k)
        y = grouped_dispatch(flat, self.experts, weights, chosen)  # (N, H)
        gates = torch.zeros_like(clean).scatter(1, chosen, weights)  # (N, E), k non-zeros per row
        if self.training:
            load = prob_in_topk(clean, noisy, std, self.top_k).sum(0)  # (E,) smooth, differentiable
        else:
            load = (gates > 0).sum(0).float()  # (E,) the actual counts
        return MoEOutput(
            y=y.reshape(x.shape), router_logits=noisy,
            aux_losses={"importance": cv_squared(gates.sum(0)), "load": cv_squared(load)},
            expert_load=torch.bincount(chosen.reshape(-1), minlength=self.num_experts),  # (E,)
            num_tokens=flat.shape[0],
        )

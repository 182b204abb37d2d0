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
from ..moe_block import MoEBlock
from ..routing import Router, Routing, at_least_fp32, topk_softmax
from ..validation import int_in_range
from .base import routed_block


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


class NoisyTopKRouter(Router):
    """Top-k of (logits + softplus-scaled Gaussian noise), softmax over the k; W_noise (E, H) starts at 0."""

    label = "Noisy top-k (Shazeer 2017)"
    gating = "top-k of (logits + softplus-scaled noise) -> softmax"
    aux_loss_names = ("importance", "load")

    def __init__(self, hidden_size: int, num_experts: int, top_k: int, noise_epsilon: float = 1e-2) -> None:
        super().__init__(hidden_size, num_experts)
        int_in_range(
            "NoisyTopKRouter: top_k (the load loss needs an expert outside the top k)", top_k, 1, num_experts - 1
        )
        self.top_k, self.noise_epsilon = top_k, noise_epsilon
        self.noise = nn.Linear(hidden_size, num_experts, bias=False)  # W_noise (E, H)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) W_g; W_noise = 0 as in the paper, so the noise std starts at softplus(0)."""
        super().reset_parameters(std)
        if self.noise.weight.device.type != "meta":
            nn.init.zeros_(self.noise.weight)

    def forward(self, x: torch.Tensor) -> Routing:
        clean = self.logits(x)  # (N, E)
        std = F.softplus(F.linear(at_least_fp32(x), at_least_fp32(self.noise.weight))) + self.noise_epsilon  # (N, E)
        noisy = clean + torch.randn_like(clean) * std if self.training else clean  # (N, E)
        weights, expert_ids = topk_softmax(noisy, self.top_k)  # (N, k), (N, k)
        return Routing(noisy, weights, expert_ids, extras={"clean": clean, "std": std})

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        """Importance and (smooth in training, counted at eval) load, each as a squared CV."""
        clean, std = routing.extras["clean"], routing.extras["std"]  # (N, E), (N, E)
        gates = torch.zeros_like(clean).scatter(1, routing.expert_ids, routing.weights)  # (N, E), k non-zeros per row
        if self.training:
            load = prob_in_topk(clean, routing.logits, std, self.top_k).sum(0)  # (E,) smooth, differentiable
        else:
            load = (gates > 0).sum(0).float()  # (E,) the actual counts
        return {"importance": cv_squared(gates.sum(0)), "load": cv_squared(load)}


def build_noisy_topk(config: MixtralConfig, noise_epsilon: float = 1e-2) -> MoEBlock:
    """Shazeer's noisy top-k router over `config`'s experts."""
    E, H = config.num_local_experts, config.hidden_size
    return routed_block(config, NoisyTopKRouter(H, E, config.num_experts_per_tok, noise_epsilon))

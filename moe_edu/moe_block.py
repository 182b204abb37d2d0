"""Mixtral's sparse mixture-of-experts block: router -> top-k -> experts -> weighted sum.

    y = sum_{i in top-k(x W_g)} softmax(top-k(x W_g))_i * SwiGLU_i(x)      (paper, eq. 1-2)

Same parameters and numbers as transformers' `MixtralSparseMoeBlock`; returns
`(y, router_logits)` with router_logits `(B*T, E)`, transformers' convention.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .config import MixtralConfig
from .dispatch import DISPATCHES, get_dispatch
from .experts import Experts
from .routing import TopKRouter


class SparseMoeBlock(nn.Module):
    def __init__(self, config: MixtralConfig, *, dispatch: str = "grouped", router_fp32: bool = True,
                 routing_order: str = "softmax_topk") -> None:
        super().__init__()
        get_dispatch(dispatch)  # validate the name now, not at the first forward
        self.config = config
        self.hidden_size = config.hidden_size
        self.num_experts, self.top_k = config.num_local_experts, config.num_experts_per_tok
        self.jitter_noise = config.router_jitter_noise
        self.dispatch = dispatch
        self.gate = TopKRouter(config.hidden_size, self.num_experts, self.top_k, fp32=router_fp32, order=routing_order)
        self.experts = Experts(self.num_experts, config.hidden_size, config.intermediate_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) for every weight, as transformers initialises Mixtral."""
        std = self.config.initializer_range
        for p in self.parameters():
            if p.device.type != "meta":
                nn.init.normal_(p, mean=0.0, std=std)

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SparseMoeBlock expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"SparseMoeBlock expects x of shape (batch, tokens, hidden_size={self.hidden_size}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"SparseMoeBlock expects a floating-point x, got dtype {x.dtype}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, H) -> y: (B, T, H), router_logits: (B*T, E)."""
        self.check_input(x)
        B, T, H = x.shape
        if self.training and self.jitter_noise > 0:  # transformers' multiplicative jitter
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)  # (B, T, H)
        flat = x.reshape(-1, H)  # (B*T, H)
        logits, weights, chosen = self.gate(flat)  # (B*T, E), (B*T, k), (B*T, k)
        y = DISPATCHES[self.dispatch](flat, self.experts, weights, chosen)  # (B*T, H)
        return y.reshape(B, T, H), logits

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Only the routing decision for x (B, T, H): logits (B*T, E), weights and experts (B*T, k)."""
        self.check_input(x)
        return self.gate(x.reshape(-1, self.hidden_size))

    # --- interop -------------------------------------------------------------
    def load_hf_state_dict(self, state_dict: Mapping[str, torch.Tensor], *, prefix: str = "") -> "SparseMoeBlock":
        """Load a transformers (v5 fused or v4 per-expert) or Mistral-native MoE state dict.

        Everything is checked before anything is copied: a mismatch raises
        `StateDictError` listing every missing, unexpected and mis-shaped key.
        """
        from .interop import load_block_state

        load_block_state(self, state_dict, prefix=prefix)
        return self

    def export_state_dict(self, layout: str = "v5") -> dict[str, torch.Tensor]:
        """This block's weights in transformers `v5`/`v4` or `mistral` key layout."""
        from .interop import export_block_state

        return export_block_state(self, layout)

    def extra_repr(self) -> str:
        return f"dispatch={self.dispatch!r}"

"""Rotary position embeddings (RoPE) in transformers' rotate-half layout."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        """theta^(-2i/D) for i < D/2, in fp32 exactly as transformers computes it."""
        exps = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim  # (D/2,)
        return 1.0 / (self.theta**exps)  # (D/2,)

    def reset_buffers(self, device: torch.device | str) -> None:
        """Recompute `inv_freq` on `device` (after building the model on the meta device)."""
        self.inv_freq = self.compute_inv_freq(device)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) -> cos, sin (T, D), computed in fp32 then cast."""
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # (..., D/2) each
    return torch.cat((-x2, x1), dim=-1)  # (..., D)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, D); cos/sin (T, D)."""
    return x * cos + rotate_half(x) * sin  # (B, heads, T, D)

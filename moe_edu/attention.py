"""Grouped-query self-attention with RoPE, an optional sliding window and a KV cache.

Uses `torch.nn.functional.scaled_dot_product_attention` (with `enable_gqa`), so the
same code takes the fused kernels on CPU and GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MixtralConfig
from .rope import apply_rotary


def build_attention_mask(
    q_len: int, past: int, device: torch.device, window: int | None, padding: torch.Tensor | None
) -> torch.Tensor | None:
    """Boolean (B or 1, 1, q_len, past+q_len) mask, True where attending is allowed.

    None means plain causal attention with no cache (SDPA's `is_causal` fast path).
    """
    if past == 0 and window is None and padding is None:
        return None
    q_pos = torch.arange(past, past + q_len, device=device)[:, None]  # (q, 1) absolute positions
    k_pos = torch.arange(past + q_len, device=device)[None, :]  # (1, S)
    allowed = k_pos <= q_pos  # (q, S) causal
    if window is not None:
        allowed = allowed & (k_pos > q_pos - window)  # (q, S) only the last `window` keys
    allowed = allowed[None, None]  # (1, 1, q, S)
    if padding is not None:
        allowed = allowed & padding[:, None, None, :].bool()  # (B, 1, q, S)
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # a padded query row attends anywhere: no NaN
    return allowed


class Attention(nn.Module):
    def __init__(self, config: MixtralConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.attention_head_dim,
        )
        H = config.hidden_size
        self.q_proj = nn.Linear(H, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(H, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(H, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, H, bias=False)
        self.dropout = config.attention_dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple]:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, T, D)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, D)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)  # (B, nkv, S, D)
            v = torch.cat([cache[1], v], dim=2)  # (B, nkv, S, D)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and T > 1,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.kv_heads != self.heads,
        )  # (B, nh, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, nh*D)
        return self.o_proj(out), (k, v)  # (B, T, H)

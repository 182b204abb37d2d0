"""Serving memory: where the bytes go — expert weights vs the KV cache.

    budget = memory_budget(PRESETS["mixtral-8x7b"], context_len=32768)   # bf16 weights and cache
    budget.kv_per_token   # 131,072 bytes = 2 (K and V) x 32 layers x 8 KV heads x 128 x 2 bytes
    budget.kv_total       # 4 GiB for one sequence of 32,768 tokens
    budget.weights_total  # 93.4 GB: every expert must be somewhere, even if a token uses 2 of 8

Grouped-query attention caches only the `num_key_value_heads` K/V heads, not one per query
head (8 instead of 32 for Mixtral: 4x less). With a `sliding_window` W the cache is a rolling
buffer of the last W tokens (Mistral 7B), so it stops growing at W; Mixtral v0.1 has none.
`kv_cache_bytes(past_key_values)` measures a real cache, to check the formula.

What a *decode step* reads is another matter: at batch B the B tokens choose different experts,
so a step reads the shared weights, the experts hit (`expected_experts_hit`, notebook 10's
E·(1 − (1 − k/E)^B) per layer) and the whole KV cache — `decode_step_bytes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..accounting import count_parameters
from ..config import MixtralConfig
from .expert_placement import expected_experts_hit

# bits per stored element, by name; torch dtypes are read from torch
DTYPE_BITS = {
    "fp32": 32,
    "float32": 32,
    "bf16": 16,
    "bfloat16": 16,
    "fp16": 16,
    "float16": 16,
    "fp8": 8,
    "int8": 8,
    "int4": 4,
}


def dtype_bits(dtype: str | torch.dtype | int) -> int:
    """Bits per element of a torch dtype, a name ("bf16", "int8", "int4", ...) or a bit count."""
    if isinstance(dtype, torch.dtype):
        if dtype.is_complex or dtype == torch.bool:
            raise ValueError(f"dtype must be a real floating-point or integer type for weights, got {dtype}")
        return torch.finfo(dtype).bits if dtype.is_floating_point else torch.iinfo(dtype).bits
    if isinstance(dtype, bool):
        raise TypeError("dtype must be a torch.dtype, a name or a number of bits, got a bool")
    if isinstance(dtype, int):
        if dtype <= 0:
            raise ValueError(f"dtype as a bit count must be positive, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPE_BITS:
        return DTYPE_BITS[dtype.lower()]
    raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype, a bit count or one of {sorted(DTYPE_BITS)}")


def _bytes(count: int, bits: int) -> int:
    """Bytes to store `count` elements of `bits` bits (rounded up to a whole byte)."""
    return -(-count * bits // 8)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes to serve a model: weights (all of them resident) + the KV cache of every sequence."""

    context_len: int  # tokens per sequence
    batch_size: int  # sequences served at once
    weights_total: int  # every parameter, bytes
    weights_active: int  # parameters one token reads (shared + its k experts), bytes
    expert_bytes: int  # one expert of one layer (w1, w3, w2), bytes
    kv_per_token: int  # K and V of one token, all layers, bytes
    kv_tokens: int  # tokens the cache holds per sequence: context_len, or the window if smaller

    @property
    def kv_total(self) -> int:
        """The whole KV cache: per-token bytes x tokens held x sequences."""
        return self.kv_per_token * self.kv_tokens * self.batch_size

    @property
    def total(self) -> int:
        return self.weights_total + self.kv_total

    def __str__(self) -> str:
        gib = 2**30
        return (
            f"weights {self.weights_total / 1e9:.1f} GB ({self.weights_active / 1e9:.1f} GB active per token), "
            f"KV cache {self.kv_total / gib:.2f} GiB ({self.kv_per_token:,} B/token x {self.kv_tokens:,} tokens "
            f"x {self.batch_size}), total {self.total / 1e9:.1f} GB"
        )


def kv_bytes_per_token(config: MixtralConfig, kv_dtype: str | torch.dtype | int = torch.bfloat16) -> int:
    """2 (K and V) x layers x KV heads x head_dim x bytes per element."""
    c = config
    return _bytes(2 * c.num_hidden_layers * c.num_key_value_heads * c.attention_head_dim, dtype_bits(kv_dtype))


def memory_budget(
    config: MixtralConfig,
    *,
    context_len: int,
    batch_size: int = 1,
    weight_dtype: str | torch.dtype | int = torch.bfloat16,
    kv_dtype: str | torch.dtype | int = torch.bfloat16,
) -> MemoryBudget:
    """Weights (total and active per token) and the KV cache of `batch_size` sequences of `context_len`.

    The cache is GQA-aware (only `num_key_value_heads` heads are stored) and, when the config
    has a `sliding_window`, a rolling buffer of min(context_len, window) tokens.
    """
    for name, value in (("context_len", context_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"memory_budget: {name} must be a positive int, got {value!r}")
    p = count_parameters(config)
    wbits = dtype_bits(weight_dtype)
    one_expert = 3 * config.hidden_size * config.intermediate_size
    window = config.sliding_window
    return MemoryBudget(
        context_len=context_len,
        batch_size=batch_size,
        weights_total=_bytes(p.total, wbits),
        weights_active=_bytes(p.active, wbits),
        expert_bytes=_bytes(one_expert, wbits),
        kv_per_token=kv_bytes_per_token(config, kv_dtype),
        kv_tokens=context_len if window is None else min(context_len, window),
    )


def kv_cache_bytes(past_key_values: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes held by a real KV cache: one (k, v) pair per layer, each (B, kv_heads, S, D)."""
    total = 0
    for i, pair in enumerate(past_key_values):
        if len(pair) != 2:
            raise ValueError(f"past_key_values[{i}] must be a (k, v) pair, got {len(pair)} tensors")
        total += sum(t.numel() * t.element_size() for t in pair)
    return total


def kv_equals_active_weights(
    config: MixtralConfig,
    *,
    batch_size: int = 1,
    weight_dtype: str | torch.dtype | int = torch.bfloat16,
    kv_dtype: str | torch.dtype | int = torch.bfloat16,
) -> int | None:
    """Context length from which the KV cache of `batch_size` sequences outweighs the active weights.

    The active weights are what *one* token reads; a decode step of `batch_size` tokens reads
    the experts all of them hit (about all of them from batch ~30): compare with
    `decode_step_bytes` for bandwidth, or with `memory_budget(...).weights_total` for capacity.

    A dense cache grows without bound; with a sliding window it stops at the window, so a
    result beyond `config.sliding_window` means the cache never gets there (`None`).
    """
    b = memory_budget(config, context_len=1, batch_size=batch_size, weight_dtype=weight_dtype, kv_dtype=kv_dtype)
    tokens = -(-b.weights_active // (b.kv_per_token * batch_size))
    return None if config.sliding_window is not None and tokens > config.sliding_window else tokens


@dataclass(frozen=True)
class DecodeStepBytes:
    """Bytes one decode step of `batch_size` sequences reads: weights (shared + experts hit) and KV."""

    experts_hit: float  # expected experts per layer with at least one of the batch's tokens
    weights: float  # shared weights + experts hit, all layers, bytes
    kv: int  # the whole KV cache of the batch, bytes

    @property
    def total(self) -> float:
        return self.weights + self.kv


def decode_step_bytes(
    config: MixtralConfig,
    *,
    context_len: int,
    batch_size: int = 1,
    weight_dtype: str | torch.dtype | int = torch.bfloat16,
    kv_dtype: str | torch.dtype | int = torch.bfloat16,
) -> DecodeStepBytes:
    """Expected bytes read by one decode step (one new token per sequence), uniform routing assumed."""
    b = memory_budget(
        config, context_len=context_len, batch_size=batch_size, weight_dtype=weight_dtype, kv_dtype=kv_dtype
    )
    p = count_parameters(config)
    hit = expected_experts_hit(config.num_local_experts, config.num_experts_per_tok, batch_size)
    shared = _bytes(p.total - p.experts, dtype_bits(weight_dtype))
    return DecodeStepBytes(hit, shared + config.num_hidden_layers * hit * b.expert_bytes, b.kv_total)

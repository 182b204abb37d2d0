"""Checkers for notebook 11 (serving Mixtral): KV-cache bytes, an LRU expert cache, int8 weights.

from moe_edu.course.exercises import serving as ex
ex.check_kv_bytes_per_token(my_fn); ex.hint("lru_hit_rate")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from moe_edu.course.exercises.core import Case, CheckFailed, Registry, randn, seal
from moe_edu.serving.expert_cache import LRUCache
from moe_edu.serving.quantize import quantize_int8

exercises = Registry("serving")
check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, bytes_per_value: int) -> int:
    """K and V of one token in every layer: 2 x layers x KV heads x head_dim x bytes."""
    return 2 * num_layers * num_kv_heads * head_dim * bytes_per_value


def lru_hit_rate(trace: list[int], capacity: int) -> float:
    """Share of the accesses in `trace` found in an LRU cache of `capacity` entries (starting empty)."""
    cache = LRUCache(capacity)
    for e in trace:
        cache.get(e)
    return cache.hits / len(trace)


def int8_round_trip(w: torch.Tensor) -> torch.Tensor:
    """w (out, in) -> its symmetric per-row int8 quantisation, dequantised to float32."""
    return quantize_int8(w).dequantize(torch.float32)


@exercises.add(
    "kv_bytes_per_token",
    reference=kv_bytes_per_token,
    hints=(
        "Each layer stores one K and one V vector per KV head: 2 tensors.",
        "Grouped-query attention: count num_kv_heads (8 for Mixtral), not the 32 query heads.",
        "Multiply: tensors per layer, layers, KV heads, values per head, bytes per value; an int (Mixtral bf16: 131072).",
    ),
)
def _kv_cases():
    return [
        Case("Mixtral 8x7B, bf16", (32, 8, 128, 2)),
        Case("no GQA: 32 KV heads", (32, 32, 128, 2)),
        Case("tiny preset, fp32", (4, 2, 8, 4)),
        Case("Mixtral 8x22B, int8 cache", (56, 8, 128, 1)),
    ]


@exercises.add(
    "lru_hit_rate",
    reference=lru_hit_rate,
    hints=(
        "Keep the cached keys in order of last use (a list, or collections.OrderedDict).",
        "A hit moves the key to the most-recent end; a miss inserts it there and, if the cache is over "
        "capacity, drops the least recently used key.",
        "Return the share of the accesses that were hits, as a float; a cache of capacity 0 never hits.",
    ),
)
def _lru_cases():
    return [
        Case("a b a c d b, capacity 2", ([0, 1, 0, 2, 3, 1], 2)),
        Case("capacity 1: only immediate repeats hit", ([5, 5, 3, 5, 5, 5], 1)),
        Case("capacity 0", ([1, 1, 1], 0)),
        Case("a cyclic scan one larger than the cache always misses", ([0, 1, 2, 3] * 3, 3)),
        Case("every expert fits", ([0, 1, 2, 3, 0, 1, 2, 3], 4)),
        Case(
            "a longer trace, capacity 3",
            (torch.randint(0, 8, (60,), generator=torch.Generator().manual_seed(11)).tolist(), 3),
        ),
    ]


def _with_zero_row() -> torch.Tensor:
    w = randn(4, 16, seed=113)
    w[2] = 0.0  # a row of zeros: max |w| = 0
    return w


CASTS = {"to", "type", "char", "int", "long", "short", "byte"}  # Tensor methods that can cast to an integer dtype


class NaNCastWatch(TorchFunctionMode):
    """Notes a float tensor holding NaN cast to an integer dtype: 0/0 on a row of zeros, then `.to(torch.int8)`.
    Casting NaN to an integer is undefined behaviour in C; on common CPUs it happens to give 0, which hides the bug."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        src = args[0] if args else None
        if (
            getattr(func, "__name__", "") in CASTS
            and isinstance(out, torch.Tensor)
            and not out.is_floating_point()
            and out.dtype != torch.bool
            and isinstance(src, torch.Tensor)
            and src.is_floating_point()
            and bool(torch.isnan(src).any())
        ):
            self.seen = True
        return out


def no_nan_cast(fn: Callable) -> Callable:
    """The student's int8_round_trip, failing the case when it casts NaN to an integer on the way."""

    def watched(*args: Any, **kwargs: Any) -> Any:
        with NaNCastWatch() as watch:  # modes are per thread: entered in the thread that runs `fn`
            out = fn(*args, **kwargs)
        if watch.seen:
            raise CheckFailed(
                "NaN was cast to an integer: the row of zeros has scale 0, so w / scale is 0/0 = NaN before "
                ".to(torch.int8) (it only happens to become 0 on this CPU): guard the scale"
            )
        return out

    return watched


@exercises.add(
    "int8_round_trip",
    reference=int8_round_trip,
    wrap=no_nan_cast,
    atol=1e-6,
    rtol=1e-5,
    hints=(
        "One scale per row (output channel): scale = max |w| over the row / 127, shape (out, 1).",
        "Codes: w / scale rounded to the nearest integer, clamped to [-127, 127], stored as torch.int8; "
        "to go back, multiply the codes (as floats) by the scale.",
        "A row of zeros has scale 0: clamp the scale to a tiny positive number (e.g. 1e-12) so 0/0 never happens.",
    ),
)
def _int8_cases():
    return [
        Case("(8, 32) normal weights", (randn(8, 32, seed=111),)),
        Case("rows of very different size", (randn(6, 24, seed=112) * torch.logspace(-3, 2, 6)[:, None],)),
        Case("a row of zeros", (_with_zero_row(),)),
    ]


check_kv_bytes_per_token = _kv_cases.check
check_lru_hit_rate = _lru_cases.check
check_int8_round_trip = _int8_cases.check

seal(__name__)  # the checkers above are captured now: a notebook cell cannot rebind them

"""Checks for user-facing arguments and config fields, each raising a `ValueError` that names the field.

One helper per kind of value, instead of the same `isinstance(...) and value > 0` written
in every module:

    hidden = positive_int("MixtralConfig.hidden_size", hidden)
    eps = finite_float("MixtralConfig.rms_norm_eps", eps, gt=0)
    p = probability("MixtralConfig.attention_dropout", p)

Every helper returns the value (so it can be used inline) and rejects `bool` where a number
is expected (`True` is an `int` in Python, never a layer count).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    """An int >= 1 (and <= `maximum` if given)."""
    return int_in_range(name, value, 1, maximum)


def nonnegative_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    """An int >= 0 (and <= `maximum` if given)."""
    return int_in_range(name, value, 0, maximum)


def int_in_range(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An int with low <= value <= high (either bound may be None)."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value}")
    return value


def index_in_range(name: str, value: Any, low: int, high: int) -> int:
    """An integer index low <= value <= high: a Python, numpy or 0-d torch integer; never a bool, float or str.

    `int(1.7)` is 1 and `int("3")` is 3: an index given as either is a mistake, not an expert number.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise ValueError(f"{name} must be an integer index, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer index, got {value!r}") from None
    return int_in_range(name, value, low, high)


def optional_positive_int(name: str, value: Any) -> int | None:
    """None, or an int >= 1."""
    return None if value is None else positive_int(name, value)


def finite_float(
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> float:
    """A finite real number (int or float, not bool) within the given open/closed bounds."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    bad = (
        (gt is not None and not value > gt)
        or (ge is not None and not value >= ge)
        or (lt is not None and not value < lt)
        or (le is not None and not value <= le)
    )
    if bad:
        bounds = [
            f"> {gt}" if gt is not None else "",
            f">= {ge}" if ge is not None else "",
            f"< {lt}" if lt is not None else "",
            f"<= {le}" if le is not None else "",
        ]
        raise ValueError(f"{name} must be {' and '.join(b for b in bounds if b)}, got {value!r}")
    return value


def positive_float(name: str, value: Any) -> float:
    """A finite number > 0."""
    return finite_float(name, value, gt=0)


def nonnegative_float(name: str, value: Any) -> float:
    """A finite number >= 0."""
    return finite_float(name, value, ge=0)


def probability(name: str, value: Any) -> float:
    """A finite number in [0, 1]."""
    return finite_float(name, value, ge=0, le=1)


def boolean(name: str, value: Any) -> bool:
    """A real `bool` (not "no", not 0)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def one_of(name: str, value: Any, choices: Collection) -> Any:
    """One of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(repr, choices))}, got {value!r}")
    return value


def token_id(name: str, value: Any, vocab_size: int, *, optional: bool = True) -> int | None:
    """A token id in [0, vocab_size), or None when `optional`."""
    if value is None and optional:
        return None
    return int_in_range(name, value, 0, vocab_size - 1)

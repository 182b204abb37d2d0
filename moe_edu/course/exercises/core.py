"""The generic exercise runner: student function vs reference on seeded cases, one printed line.

A checker never raises into the notebook. It prints exactly one line:

    ✓ router_logits: all 4 cases pass
    ✗ router_logits: case 2 (bf16 input, T=5): output dtype: expected torch.float32, got torch.bfloat16
    ○ router_logits: not attempted yet (the stub still raises NotImplementedError)

and returns a `Verdict` (bool-like, shows nothing as a cell's value) that is true only
when every case passes. `use(name, fn)` is the twin that later notebook cells call: the
student's function when it passes (silently), else the reference with one line saying so,
so a notebook stays usable top to bottom before any exercise is done.

Every call gets its own deep copy of the case's arguments (the reference runs first, on its
own copy), a student function that loops is stopped after `TIME_LIMIT` seconds, and numbers
are compared by value whatever their type (int, float, numpy scalar, `Fraction`, one-element
tensor; booleans are never numbers). Under nbgrader (`NBGRADER_EXECUTION` set) a failing
check also raises `AssertionError`, so an autograded checker cell scores 0.

Grades that hold: the flag is read once, when this module is imported (the notebook's locked setup
cell imports it before any student code runs), so unsetting the variable later changes nothing.
Each checker module ends with `seal(__name__)`: its checkers are captured at import, reading
`ex.check_<name>` always returns that original (verified by identity against the capture), and
rebinding or deleting it raises. `integrity.py` scans the graded notebooks afterwards.
"""

from __future__ import annotations

import contextlib
import html
import math
import numbers
import os
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from IPython.display import display

from moe_edu.course.exercises.calling import TimeLimitExceeded, _call, _fresh  # noqa: F401 (re-exported)

PASS, FAIL, TODO = "✓", "✗", "○"
MAX_SHOWN = 3  # mismatching entries named in a failure line
TIME_LIMIT = 10.0  # seconds one student call may take before it is stopped
# Read once, at import: a student's `os.environ.pop("NBGRADER_EXECUTION")` later cannot switch grading off.
GRADING: bool = bool(os.environ.get("NBGRADER_EXECUTION"))


class CheckFailed(Exception):
    """Raised by an exercise's `wrap` when the answer is right by value but wrong in how it was made
    (a view where a copy is asked for, NaN cast to int8): reported as the case's failure line."""


class Verdict(int):
    """A checker's result: truthy when every case passed. Behaves like a bool, but shows
    nothing as a cell's last value (the printed line already says it all)."""

    def __new__(cls, ok: bool) -> Verdict:
        return super().__new__(cls, bool(ok))

    def __repr__(self) -> str:
        return str(bool(self))

    def _ipython_display_(self) -> None:
        pass


COLOURS = {PASS: "#1a7f37", FAIL: "#cf222e", TODO: "#6e7781"}  # green, red, grey


def emit(symbol: str, line: str) -> None:
    """Show one checker line: printed as plain text, and in a Jupyter kernel also as coloured HTML
    (✓ green, ✗ red, ○ grey) with the same text/plain. Inside a checked call (stdout redirected)
    or outside a kernel it is a plain print."""
    stdout = sys.stdout
    if type(stdout).__module__ != "ipykernel.iostream":
        print(line)
        return
    colour = COLOURS.get(symbol, "inherit")
    display(
        {"text/plain": line, "text/html": f'<pre style="margin:0;color:{colour}">{html.escape(line)}</pre>'}, raw=True
    )


@dataclass(frozen=True)
class Case:
    """One seeded input: `label` says in words what is special about it."""

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Seeded normal tensor that never touches the global RNG."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or _is_bool(v):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, float) or _type_name(v).startswith("numpy.float"):
        return f"{float(v):.4g}"
    return str(v) if isinstance(v, numbers.Number) else repr(v)


def _type_name(v: Any) -> str:
    """`int`, `numpy.bool_`, `fractions.Fraction`: the type as the student would write it."""
    t = type(v)
    if t.__module__ == "builtins":
        return t.__name__
    if t.__module__ == "numpy":
        return "numpy.bool_" if t.__name__ in ("bool", "bool_") else f"numpy.{t.__name__}"
    return f"{t.__module__}.{t.__qualname__}"


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or _type_name(v) == "numpy.bool_"


def _kind(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}"
    if _is_bool(v) or isinstance(v, numbers.Number):
        return f"{_type_name(v)} {_fmt(v)}"
    return _type_name(v)


def _exact_int(v: Any) -> int | None:
    """`v` as an int when it is an integer by type (int, numpy integer, Fraction n/1, integer
    one-element tensor), else None. Floats are not: an int answer is counted, not measured."""
    if isinstance(v, torch.Tensor):
        if v.numel() == 1 and not v.is_floating_point() and not v.is_complex() and v.dtype != torch.bool:
            return int(v.item())
        return None
    if _is_bool(v) or not isinstance(v, numbers.Rational):  # int, numpy integer, Fraction
        return None
    return int(v) if v.denominator == 1 else None


def _real(v: Any) -> float | None:
    """`v` as a float when it is a real number (int, float, numpy scalar, Fraction, Decimal,
    one-element non-bool tensor), else None."""
    if isinstance(v, torch.Tensor):
        return float(v.item()) if v.numel() == 1 and v.dtype != torch.bool and not v.is_complex() else None
    if _is_bool(v) or not isinstance(v, (numbers.Real, __import__("decimal").Decimal)):
        return None
    return float(v)


def compare(
    expected: Any, got: Any, *, atol: float, rtol: float, where: str = "output", names: Sequence[str] | None = None
) -> str | None:
    """None when `got` matches `expected`, else one short sentence saying the first difference.

    `names` label the parts of a tuple output (e.g. ("weights", "experts")) in the message.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where}: expected a tensor of shape {tuple(expected.shape)}, got {_kind(got)}"
        if got.shape != expected.shape:
            return f"{where} shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        if got.dtype != expected.dtype:
            return f"{where} dtype: expected {expected.dtype}, got {got.dtype}"
        e, g = expected.detach().cpu(), got.detach().cpu()
        if e.is_floating_point():
            tol = max(atol, 1e-2) if e.dtype in (torch.bfloat16, torch.float16) else atol
            bad = ~torch.isclose(g.double(), e.double(), atol=tol, rtol=rtol, equal_nan=True)
        else:
            bad = g != e
        if not bad.any():
            return None
        if e.dim() == 0:
            return f"{where}: expected {_fmt(e.item())}, got {_fmt(g.item())}"
        idx = bad.nonzero()[:MAX_SHOWN].tolist()
        shown = "; ".join(
            f"{list(i)}: expected {_fmt(e[tuple(i)].item())}, got {_fmt(g[tuple(i)].item())}" for i in idx
        )
        return f"{where} differs at {int(bad.sum())} of {bad.numel()} entries, first {shown}"
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            n = len(got) if isinstance(got, (tuple, list)) else None
            return f"{where}: expected a tuple of {len(expected)} values, got " + (
                f"{n} values" if n is not None else _kind(got)
            )
        for i, (e, g) in enumerate(zip(expected, got, strict=False)):
            part = names[i] if names and i < len(names) else f"{where}[{i}]"
            msg = compare(e, g, atol=atol, rtol=rtol, where=part)
            if msg:
                return msg
        return None
    if isinstance(expected, bool):
        # a bool: Python or numpy bool, or a one-element bool tensor (never the int 0 / 1)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got.item())
        if not _is_bool(got):
            return f"{where}: expected bool {expected}, got {_kind(got)}"
        return None if bool(got) == expected else f"{where}: expected {expected}, got {bool(got)}"
    if isinstance(expected, int):
        value = _exact_int(got)
        if value is None:
            return f"{where}: expected int {_fmt(expected)}, got {_kind(got)}"
        return (
            None
            if value == expected
            else (f"{where}: expected {_fmt(expected)}, got {_fmt(value)} (off by {_fmt(value - expected)})")
        )
    if isinstance(expected, float):
        value = _real(got)
        if value is None:
            return f"{where}: expected a number {_fmt(expected)}, got {_kind(got)}"
        return (
            None
            if math.isclose(value, expected, rel_tol=rtol, abs_tol=atol)
            else (f"{where}: expected {_fmt(expected)}, got {_fmt(value)}")
        )
    return None if got == expected else f"{where}: expected {expected!r}, got {got!r}"


def _outcome(
    fn: Callable,
    reference: Callable,
    cases: Sequence[Case],
    normalize: Callable | None,
    atol: float,
    rtol: float,
    names: Sequence[str] | None = None,
    time_limit: float = TIME_LIMIT,
) -> tuple[str, str]:
    """(symbol, message) for one student function; never raises. The reference runs first, on
    its own copy of the case, so nothing the student's call does can change the expected answer."""
    if not callable(fn):
        return FAIL, f"expected a function, got {_type_name(fn)}"
    for n, case in enumerate(cases, 1):
        try:
            expected = _call(reference, case)
        except Exception as err:  # pragma: no cover - a failing reference is our bug
            return FAIL, f"case {n} ({case.label}): the reference failed ({type(err).__name__}: {err})"
        try:
            got = _call(fn, case, time_limit)
        except NotImplementedError:
            return TODO, "not attempted yet (the stub still raises NotImplementedError)"
        except CheckFailed as err:
            return FAIL, f"case {n} ({case.label}): {err}"
        except TimeLimitExceeded:
            return FAIL, (
                f"case {n} ({case.label}): your function did not finish within {time_limit:g} s, "
                "so the check gave up on it (an endless loop? a slow loop over tokens?)"
            )
        except Exception as err:  # the student's bug, reported rather than raised
            return (
                FAIL,
                f"case {n} ({case.label}): your function raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(
                    ": "
                ),
            )
        try:
            if normalize is not None:
                expected = normalize(expected)
                with contextlib.suppress(Exception):  # a wrong output shape/type: compare() explains it better
                    got = normalize(got)
            msg = compare(expected, got, atol=atol, rtol=rtol, names=names)
        except Exception as err:  # a checker bug must not crash the notebook either
            return FAIL, f"case {n} ({case.label}): could not compare outputs ({type(err).__name__}: {err})"
        if msg:
            return FAIL, f"case {n} ({case.label}): {msg}"
    return PASS, f"all {len(cases)} cases pass"


@dataclass
class Exercise:
    """One exercise: a reference, seeded cases, hints, and how to compare."""

    name: str
    reference: Callable
    cases: Callable[[], Iterable[Case]]
    hints: Sequence[str] = ()
    atol: float = 1e-5
    rtol: float = 1e-4
    normalize: Callable | None = None  # applied to both outputs first (e.g. sort top-k slots)
    outputs: Sequence[str] | None = None  # names of a tuple output's parts, for messages
    time_limit: float = TIME_LIMIT  # seconds per student call
    wrap: Callable[[Callable], Callable] | None = None  # wraps the student's function: may raise CheckFailed

    def outcome(self, fn: Callable) -> tuple[str, str]:
        try:
            cases = list(self.cases())
        except Exception as err:  # pragma: no cover - a broken case generator is our bug
            return FAIL, f"could not build the test cases ({type(err).__name__}: {err})"
        if self.wrap is not None and callable(fn):
            fn = self.wrap(fn)
        with torch.random.fork_rng(devices=[]):
            return _outcome(
                fn, self.reference, cases, self.normalize, self.atol, self.rtol, self.outputs, self.time_limit
            )

    def check(self, fn: Callable) -> Verdict:
        """Print one line (✓ / ✗ / ○) and return whether every case passes (a bool-like `Verdict`).
        Under nbgrader's validate/autograde runs a failure also raises, so the cell scores 0."""
        symbol, message = self.outcome(fn)
        line = f"{symbol} {self.name}: {message}"
        emit(symbol, line)
        if symbol != PASS and GRADING:
            raise AssertionError(line)
        return Verdict(symbol == PASS)

    def use(self, fn: Callable) -> Callable:
        """The student's function when it passes every case (silently); else the reference, and
        one line saying that the cells below run the reference instead."""
        symbol, _ = self.outcome(fn)
        if symbol == PASS:
            return fn
        why = "yours is not attempted yet" if symbol == TODO else "yours does not pass its checker yet"
        emit(symbol, f"{symbol} {self.name}: the cells below use moe_edu's reference ({why})")
        return self.reference

    def hint(self, level: int | None = None) -> None:
        """Print hint `level` (1-based), or all hints, one per line."""
        if not self.hints:
            print(f"no hints for {self.name}")
            return
        if level is None:
            for i, h in enumerate(self.hints, 1):
                print(f"hint {i}/{len(self.hints)} for {self.name}: {h}")
            return
        i = min(max(int(level), 1), len(self.hints))
        print(f"hint {i}/{len(self.hints)} for {self.name}: {self.hints[i - 1]}")


ALL: dict[str, Exercise] = {}  # "module.name" -> Exercise, every registered exercise
ORIGINAL: dict[str, dict[str, Any]] = {}  # checker module -> its public names as captured at import (`seal`)
SEALED_PREFIXES = ("check", "hint", "use", "reference", "exercises")  # names a student's cell may not rebind


class SealedModule(types.ModuleType):
    """A checker module whose checkers cannot be rebound: reading a sealed name returns the object
    captured at import (so `ex.__dict__` edits change nothing), rebinding or deleting it raises."""

    def __getattribute__(self, name: str) -> Any:
        captured = ORIGINAL.get(types.ModuleType.__getattribute__(self, "__name__"), {})
        if name in captured:
            return captured[name]
        return types.ModuleType.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ORIGINAL.get(self.__name__, {}):
            raise AttributeError(
                f"{self.__name__}.{name} is read-only: the checker cells always call moe_edu's original "
                "(give your own function another name)"
            )
        types.ModuleType.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in ORIGINAL.get(self.__name__, {}):
            raise AttributeError(
                f"{self.__name__}.{name} is read-only: the checker cells always call moe_edu's original"
            )
        types.ModuleType.__delattr__(self, name)


def seal(module_name: str) -> None:
    """Capture a checker module's checkers (`check_*`, `check`, `hint`, `use`, `reference`, `exercises`)
    and make the module a `SealedModule`. Called once, as the module's last line."""
    module = sys.modules[module_name]
    ORIGINAL[module_name] = {
        k: v for k, v in vars(module).items() if k.startswith(SEALED_PREFIXES) and not k.startswith("_")
    }
    module.__class__ = SealedModule


def is_original(module_name: str, name: str, obj: Any) -> bool:
    """True when `obj` is the very checker `module_name.name` captured at import (identity, not equality)."""
    return name in ORIGINAL.get(module_name, {}) and ORIGINAL[module_name][name] is obj


class Registry:
    """The exercises of one notebook; each checker module makes one and exposes its methods."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.exercises: dict[str, Exercise] = {}

    def add(
        self,
        name: str,
        *,
        reference: Callable,
        hints: Sequence[str] = (),
        atol: float = 1e-5,
        rtol: float = 1e-4,
        normalize: Callable | None = None,
        outputs: Sequence[str] | None = None,
        wrap: Callable[[Callable], Callable] | None = None,
    ) -> Callable:
        """Decorator for a function returning the cases; registers an `Exercise` called `name`."""

        def register(cases: Callable[[], Iterable[Case]]) -> Exercise:
            ex = Exercise(name, reference, cases, tuple(hints), atol, rtol, normalize, outputs, wrap=wrap)
            self.exercises[name] = ex
            ALL[f"{self.topic}.{name}"] = ex
            return ex

        return register

    def get(self, name: str) -> Exercise:
        try:
            return self.exercises[name]
        except KeyError:
            raise KeyError(f"no exercise {name!r} in {self.topic}; choose one of {sorted(self.exercises)}") from None

    def check(self, name: str, fn: Callable) -> Verdict:
        try:
            ex = self.get(name)
        except KeyError as err:
            emit(FAIL, f"{FAIL} {name}: {err.args[0]}")
            return Verdict(False)
        return ex.check(fn)

    def hint(self, name: str, level: int | None = None) -> None:
        """Print the hints for exercise `name` (all of them, or only hint `level`)."""
        try:
            self.get(name).hint(level)
        except KeyError as err:
            print(err.args[0])

    def use(self, name: str, fn: Callable) -> Callable:
        """`fn` when it passes exercise `name`, else the library's reference (with one line saying so).
        Same argument order as `check(name, fn)`."""
        return self.get(name).use(fn)

    def reference(self, name: str) -> Callable:
        return self.get(name).reference

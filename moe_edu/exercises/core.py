"""The generic exercise runner: student function vs reference on seeded cases, one printed line.

A checker never raises into the notebook. It prints exactly one line:

    ✓ router_logits: all 4 cases pass
    ✗ router_logits: case 2 (bf16 input, T=5): output dtype: expected torch.float32, got torch.bfloat16
    ○ router_logits: not attempted yet (the stub still raises NotImplementedError)

and returns a `Verdict` (bool-like, shows nothing as a cell's value) that is true only
when every case passes. `use(fn, name)` is the silent twin that
later notebook cells call: the student's function when it passes, else the reference,
so a notebook stays usable top to bottom before any exercise is done.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

PASS, FAIL, TODO = "✓", "✗", "○"
MAX_SHOWN = 3  # mismatching entries named in a failure line


class Verdict(int):
    """A checker's result: truthy when every case passed. Behaves like a bool, but shows
    nothing as a cell's last value (the printed line already says it all)."""

    def __new__(cls, ok: bool) -> "Verdict":
        return super().__new__(cls, bool(ok))

    def __repr__(self) -> str:
        return str(bool(self))

    def _ipython_display_(self) -> None:
        pass


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
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return repr(v)


def _kind(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}"
    return f"{type(v).__name__} {_fmt(v)}" if isinstance(v, (bool, int, float)) else type(v).__name__


def compare(expected: Any, got: Any, *, atol: float, rtol: float, where: str = "output",
            names: Sequence[str] | None = None) -> str | None:
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
        shown = "; ".join(f"{list(i)}: expected {_fmt(e[tuple(i)].item())}, got {_fmt(g[tuple(i)].item())}"
                          for i in idx)
        return f"{where} differs at {int(bad.sum())} of {bad.numel()} entries, first {shown}"
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            n = len(got) if isinstance(got, (tuple, list)) else None
            return f"{where}: expected a tuple of {len(expected)} values, got " + (
                f"{n} values" if n is not None else _kind(got))
        for i, (e, g) in enumerate(zip(expected, got)):
            part = names[i] if names and i < len(names) else f"{where}[{i}]"
            msg = compare(e, g, atol=atol, rtol=rtol, where=part)
            if msg:
                return msg
        return None
    if isinstance(expected, bool):
        if not isinstance(got, (bool, torch.Tensor)) or (isinstance(got, torch.Tensor) and got.numel() != 1):
            return f"{where}: expected bool {expected}, got {_kind(got)}"
        return None if bool(got) == expected else f"{where}: expected {expected}, got {bool(got)}"
    if isinstance(expected, int):
        if isinstance(got, bool) or not isinstance(got, int):
            return f"{where}: expected int {_fmt(expected)}, got {_kind(got)}"
        return None if got == expected else f"{where}: expected {_fmt(expected)}, got {_fmt(got)} (off by {_fmt(got - expected)})"
    if isinstance(expected, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"{where}: expected a number {_fmt(expected)}, got {_kind(got)}"
        return None if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) else (
            f"{where}: expected {_fmt(expected)}, got {_fmt(float(got))}")
    return None if got == expected else f"{where}: expected {expected!r}, got {got!r}"


def _fresh(value: Any) -> Any:
    """A private copy of an argument, so an in-place edit cannot leak into the next call."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (nn.Module, list, dict)):
        return copy.deepcopy(value)
    return value


def _call(fn: Callable, case: Case) -> Any:
    """Call quietly: the student's prints and warnings must not add lines to the checker's one."""
    args = tuple(_fresh(a) for a in case.args)
    kwargs = {k: _fresh(v) for k, v in case.kwargs.items()}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return fn(*args, **kwargs)


def _outcome(fn: Callable, reference: Callable, cases: Sequence[Case], normalize: Callable | None,
             atol: float, rtol: float, names: Sequence[str] | None = None) -> tuple[str, str]:
    """(symbol, message) for one student function; never raises."""
    if not callable(fn):
        return FAIL, f"expected a function, got {type(fn).__name__}"
    for n, case in enumerate(cases, 1):
        try:
            got = _call(fn, case)
        except NotImplementedError:
            return TODO, "not attempted yet (the stub still raises NotImplementedError)"
        except Exception as err:  # the student's bug, reported rather than raised
            return FAIL, f"case {n} ({case.label}): your function raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
        try:
            expected = _call(reference, case)
            if normalize is not None:
                expected = normalize(expected)
                try:
                    got = normalize(got)
                except Exception:  # a wrong output shape/type: compare() explains it better
                    pass
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

    def outcome(self, fn: Callable) -> tuple[str, str]:
        try:
            cases = list(self.cases())
        except Exception as err:  # pragma: no cover - a broken case generator is our bug
            return FAIL, f"could not build the test cases ({type(err).__name__}: {err})"
        with torch.random.fork_rng(devices=[]):
            return _outcome(fn, self.reference, cases, self.normalize, self.atol, self.rtol, self.outputs)

    def check(self, fn: Callable) -> Verdict:
        """Print one line (✓ / ✗ / ○) and return whether every case passes (a bool-like `Verdict`)."""
        symbol, message = self.outcome(fn)
        print(f"{symbol} {self.name}: {message}")
        return Verdict(symbol == PASS)

    def use(self, fn: Callable) -> Callable:
        """The student's function when it passes every case, else the reference; prints nothing."""
        return fn if self.outcome(fn)[0] == PASS else self.reference

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


class Registry:
    """The exercises of one notebook; each checker module makes one and exposes its methods."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.exercises: dict[str, Exercise] = {}

    def add(self, name: str, *, reference: Callable, hints: Sequence[str] = (), atol: float = 1e-5,
            rtol: float = 1e-4, normalize: Callable | None = None,
            outputs: Sequence[str] | None = None) -> Callable:
        """Decorator for a function returning the cases; registers an `Exercise` called `name`."""

        def register(cases: Callable[[], Iterable[Case]]) -> Exercise:
            ex = Exercise(name, reference, cases, tuple(hints), atol, rtol, normalize, outputs)
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
            print(f"{FAIL} {name}: {err.args[0]}")
            return Verdict(False)
        return ex.check(fn)

    def hint(self, name: str, level: int | None = None) -> None:
        """Print the hints for exercise `name` (all of them, or only hint `level`)."""
        try:
            self.get(name).hint(level)
        except KeyError as err:
            print(err.args[0])

    def use(self, fn: Callable, name: str) -> Callable:
        """`fn` when it passes exercise `name`, else the library's reference (silent)."""
        return self.get(name).use(fn)

    def reference(self, name: str) -> Callable:
        return self.get(name).reference

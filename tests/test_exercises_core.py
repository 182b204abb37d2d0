"""The generic checker core: one line, never raises, precise failure messages."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch

from moe_edu.course.exercises import core
from moe_edu.course.exercises.core import ALL, Case, Registry, compare, randn

reg = Registry("_test_core")


def _double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@reg.add("double", reference=_double, hints=("multiply by two",))
def _double_cases():
    return [Case("small", (randn(3, seed=1),)), Case("matrix", (randn(2, 3, seed=2),))]


ALL.pop("_test_core.double")  # keep the library-wide registry to real exercises


def run(capsys, fn) -> tuple[bool, str]:
    ok = reg.check("double", fn)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return ok, lines[0]


def test_pass_line(capsys):
    assert run(capsys, lambda x: x + x) == (True, "✓ double: all 2 cases pass")


def test_not_attempted(capsys):
    def stub(x):
        raise NotImplementedError()

    ok, line = run(capsys, stub)
    assert not ok and "not attempted" in line and not line.startswith("✓")


def test_exception_is_reported(capsys):
    def boom(x):
        raise TypeError("bad operand")

    ok, line = run(capsys, boom)
    assert not ok
    assert line == "✗ double: case 1 (small): your function raised TypeError: bad operand"


def test_values_shape_dtype(capsys):
    ok, line = run(capsys, lambda x: 3 * x)
    assert not ok and line.startswith("✗ double: case 1 (small): output differs at 3 of 3 entries, first [0]: expected")
    assert "shape: expected (3,), got (1, 3)" in run(capsys, lambda x: (2 * x)[None])[1]
    assert "dtype: expected torch.float32, got torch.float64" in run(capsys, lambda x: (2 * x).double())[1]
    assert "expected a tensor of shape (3,), got list" in run(capsys, lambda x: (2 * x).tolist())[1]


def test_student_prints_are_swallowed_and_inputs_protected(capsys):
    def noisy(x):
        print("debug")
        x.mul_(2)  # in place: must not change what the reference sees
        return x

    assert run(capsys, noisy)[0]


def test_global_rng_untouched():
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    reg.get("double").use(lambda x: torch.rand_like(x))
    assert torch.equal(torch.rand(1), a)


def test_use_says_when_it_falls_back(capsys):
    def stub(x):
        raise NotImplementedError()

    good = lambda x: x * 2
    assert reg.use("double", good) is good
    assert capsys.readouterr().out == ""  # a passing function is used silently
    assert reg.use("double", stub) is _double
    assert capsys.readouterr().out == "○ double: the cells below use moe_edu's reference (yours is not attempted yet)\n"
    assert reg.use("double", lambda x: x) is _double
    assert (
        capsys.readouterr().out
        == "✗ double: the cells below use moe_edu's reference (yours does not pass its checker yet)\n"
    )


def test_endless_loop_is_stopped_with_a_clear_line(capsys, monkeypatch):
    monkeypatch.setattr(reg.get("double"), "time_limit", 0.5)

    def loops(x):
        while True:
            x = x + 0

    start = time.perf_counter()
    ok, line = run(capsys, loops)
    assert not ok and line == (
        "✗ double: case 1 (small): your function did not finish within 0.5 s, so the check gave up on it "
        "(an endless loop? a slow loop over tokens?)"
    )
    assert time.perf_counter() - start < 5
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "moe_edu-checker"]  # the loop really stopped
    assert run(capsys, lambda x: 2 * x)[0]  # and the kernel still works


def test_grad_mode_and_errors_cross_the_worker_thread(capsys):
    assert run(capsys, lambda x: (2 * x).requires_grad_(False) if not torch.is_grad_enabled() else None)[0]
    assert "raised KeyError" in run(capsys, lambda x: {}["k"])[1]


def test_nbgrader_autograde_raises_on_failure(capsys, monkeypatch):
    monkeypatch.setattr(core, "GRADING", True)  # what importing core under NBGRADER_EXECUTION sets
    assert reg.check("double", _double)
    with pytest.raises(AssertionError, match="not attempted"):
        reg.check("double", lambda x: (_ for _ in ()).throw(NotImplementedError()))
    assert capsys.readouterr().out.count("\n") == 2  # the line is still printed


def test_hint_and_unknown_names(capsys):
    reg.hint("double")
    assert capsys.readouterr().out == "hint 1/1 for double: multiply by two\n"
    assert not reg.check("nope", _double)
    assert capsys.readouterr().out.startswith("✗ nope: no exercise 'nope'")


def test_numbers_of_any_exact_type_are_accepted_and_bools_named():
    assert compare(3, np.int64(3), atol=0, rtol=0) is None
    assert compare(3, Fraction(6, 2), atol=0, rtol=0) is None
    assert compare(3, torch.tensor(3), atol=0, rtol=0) is None
    assert compare(3, Fraction(7, 2), atol=0, rtol=0) == "output: expected int 3, got fractions.Fraction 7/2"
    assert compare(3, np.float64(3.0), atol=0, rtol=0) == "output: expected int 3, got numpy.float64 3"
    assert compare(1, np.bool_(True), atol=0, rtol=0) == "output: expected int 1, got numpy.bool_ True"
    assert compare(0.5, Fraction(1, 2), atol=0, rtol=0) is None
    assert compare(0.5, np.float32(0.5), atol=0, rtol=0) is None
    assert compare(0.5, Decimal("0.5"), atol=0, rtol=0) is None
    assert compare(0.5, np.float64(0.7), atol=0, rtol=0) == "output: expected 0.5, got 0.7"
    assert compare(1.0, np.bool_(True), atol=0, rtol=0) == "output: expected a number 1, got numpy.bool_ True"
    assert compare(1.0, True, atol=0, rtol=0) == "output: expected a number 1, got bool True"
    assert compare(True, np.bool_(True), atol=0, rtol=0) is None
    assert compare(True, torch.tensor(True), atol=0, rtol=0) is None
    assert compare(True, np.bool_(False), atol=0, rtol=0) == "output: expected True, got False"
    assert compare(True, 1, atol=0, rtol=0) == "output: expected bool True, got int 1"
    assert compare(True, "yes", atol=0, rtol=0) == "output: expected bool True, got str"


def test_compare_scalars():
    assert compare(3, 3, atol=0, rtol=0) is None
    assert compare(3, 4, atol=0, rtol=0) == "output: expected 3, got 4 (off by 1)"
    assert "expected int 3, got float" in compare(3, 3.0, atol=0, rtol=0)
    assert compare(True, False, atol=0, rtol=0) == "output: expected True, got False"
    assert compare(0.5, 0.5 + 1e-9, atol=1e-6, rtol=0) is None
    assert "expected a tuple of 2 values, got 1 values" in compare((1, 2), (1,), atol=0, rtol=0)
    assert compare((torch.ones(2), 1), (torch.ones(2), 2), atol=0, rtol=0).startswith("output[1]")


def test_verdict_is_bool_like_and_silent_in_ipython(capsys):
    ok = reg.check("double", _double)
    capsys.readouterr()
    assert ok and ok == True and repr(ok) == "True" and isinstance(ok, int)  # noqa: E712
    assert ok._ipython_display_() is None
    assert repr(reg.check("double", lambda x: x)) == "False"

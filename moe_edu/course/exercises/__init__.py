"""Exercise checkers for `notebooks/exercises/`: one module per course notebook.

In a notebook::

    from moe_edu.course.exercises import gating as ex
    ex.check_router_logits(my_router_logits)   # prints one line: ✓ / ✗ ... / ○ not attempted;
                                               # returns a bool-like Verdict that shows nothing as a cell value
    ex.hint("router_logits")                   # all hints; ex.hint("router_logits", 1) only the first
    router_logits = ex.use("router_logits", my_router_logits)  # yours if it passes, else the reference

Every checker runs the student's function and the library's reference on the same seeded
cases (`torch.random.fork_rng`, so the notebook's own RNG stream is untouched), prints
exactly one deterministic line and returns a true or false `Verdict`. It never raises: a stub that still
raises `NotImplementedError` prints "not attempted", any other exception is reported as
"✗ ... your function raised TypeError: ...", a wrong output names the first failing case
and the first difference (type, shape, dtype, or the first mismatching entries).

Adding a checker (about 10 lines, in the module of its notebook or a new one)::

    from moe_edu.course.exercises.core import Case, Registry, randn

    exercises = Registry("capacity")                      # once per module
    check, hint, use, reference = exercises.check, exercises.hint, exercises.use, exercises.reference

    @exercises.add("capacity", reference=moe_edu.some_reference, hints=("first hint", "second hint"),
                   atol=1e-5, rtol=1e-4, normalize=None)   # normalize: applied to both outputs first
    def _capacity_cases():                                 # seeded inputs, labelled in words
        return [Case("T=8, E=4, factor 1.0", (randn(8, 4, seed=1), 1.0)),
                Case("overflow: all tokens pick expert 0", (torch.zeros(8, 4), 1.0))]

    check_capacity = _capacity_cases.check                 # `add` returns the Exercise

A new module goes into `MODULES` below (so `load_all()` finds it). In the notebook source, the
checker cell is `ex.check_capacity(capacity)` and later cells use
`capacity_fn = ex.use("capacity", capacity)`, so the student render still runs before the
exercise is done.

Outputs may be tensors, tuples/lists of them, ints, floats or bools; `outputs=("weights",
"experts")` names the parts of a tuple in messages; `normalize` makes e.g. the order of top-k
slots irrelevant (see `topk.by_expert`). Arguments are cloned before each call, so in-place
edits by the student cannot leak into the reference's inputs. A test in
`tests/test_exercises.py` parametrised over `load_all()` checks that every registered reference
passes its own checker, that a stub is "not attempted" and that an exception is reported; add
two typical wrong implementations of yours in `tests/test_exercises_<topic>.py`, e.g.
`assert ex.outcome(wrong)[0] == "✗" and "dtype" in ex.outcome(wrong)[1]` (`outcome` is the
silent (symbol, message) pair behind the printed line).

Every call gets a deep copy of the arguments, the reference runs first on its own copy, and a
student call that runs past `core.TIME_LIMIT` seconds is stopped with a clear line. `use` prints
one line when it falls back to the reference.

Modules: `gating` (01), `topk` (02), `sparse` (03), `combining` (04), `smoe_block` (05),
`routing_explorer` (06), `load_balancing` (07), `repetition` (08), `family` (09), `scaling` (10),
`serving` (11), `adapting` (12).
"""

from __future__ import annotations

import importlib

from moe_edu.course.exercises.core import ALL, Case, Exercise, Registry, Verdict, compare, randn

MODULES = (
    "gating",
    "topk",
    "sparse",
    "combining",
    "smoe_block",
    "routing_explorer",
    "load_balancing",
    "repetition",
    "family",
    "scaling",
    "serving",
    "adapting",
)

__all__ = ["ALL", "Case", "Exercise", "Registry", "Verdict", "compare", "randn", "load_all", *MODULES]


def load_all() -> dict[str, Exercise]:
    """Import every checker module so `ALL` holds every exercise."""
    for m in MODULES:
        importlib.import_module(f".{m}", __name__)
    return ALL


def __getattr__(name: str):
    if name in MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'moe_edu.course.exercises' has no attribute {name!r}")

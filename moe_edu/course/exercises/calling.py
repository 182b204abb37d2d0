"""Calling a student's function safely: a private deep copy of the inputs, prints and warnings
swallowed, no autograd, and a time limit that stops an endless loop without signals (so it
works in any Jupyter kernel and leaves the kernel usable)."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch


def _fresh(value: Any) -> Any:
    """A private deep copy of an argument (tensors inside tuples, lists, dicts and modules too),
    so an in-place edit by one call can reach neither the other call nor the next case."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_fresh(v) for v in value) if type(value) in (tuple, list) else copy.deepcopy(value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return copy.deepcopy(value)


class TimeLimitExceeded(Exception):
    """Raised inside a student's call that ran past the checker's time limit."""


def _stop(thread: threading.Thread) -> None:
    """Ask `thread` to raise TimeLimitExceeded at its next Python instruction (a loop stops there)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(TimeLimitExceeded))


def _call(fn: Callable, case: Any, time_limit: float | None = None) -> Any:
    """Call quietly on a private copy of the case (a `core.Case`): the student's prints and warnings must not add
    lines to the checker's one. With `time_limit`, the call runs in a worker thread (so this works
    in any Jupyter kernel, no signals) and is stopped when it runs longer: TimeLimitExceeded."""
    args = tuple(_fresh(a) for a in case.args)
    kwargs = {k: _fresh(v) for k, v in case.kwargs.items()}

    def run() -> Any:
        with torch.no_grad():  # grad mode is per thread: set it in the thread that computes
            return fn(*args, **kwargs)

    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        if time_limit is None:
            return run()
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = run()
            except BaseException as err:  # handed to the caller below
                result["error"] = err

        worker = threading.Thread(target=target, name="moe_edu-checker", daemon=True)
        worker.start()
        try:
            worker.join(time_limit)
        except BaseException:  # e.g. the user interrupts the kernel: stop the worker too
            _stop(worker)
            raise
        if worker.is_alive():
            _stop(worker)
            worker.join(1.0)
            raise TimeLimitExceeded(time_limit)
        if "error" in result:
            raise result["error"]
        return result.get("value")

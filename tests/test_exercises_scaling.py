"""Checkers of exercise 10 (scaling out): the reference passes, honest variants pass, typical
mistakes are caught; the reference agrees with the library's expert-parallel conventions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from moe_edu.course.exercises import scaling as ex

EXERCISES = ex.exercises.exercises


def _per_rank_loop(chosen, E, W):
    per = E // W
    return torch.tensor([sum(int(e) // per == r for e in chosen.reshape(-1)) for r in range(W)])


def _traffic_loop(chosen, E, W):
    T = chosen.shape[0]
    m = torch.zeros(W, W, dtype=torch.int64)
    for t in range(T):
        for e in chosen[t]:
            m[t // (T // W), int(e) // (E // W)] += 1
    return m


HONEST = {
    "tokens_per_rank": _per_rank_loop,
    "traffic": _traffic_loop,
    "parallel_efficiency": lambda load: (
        Fraction(int(load.sum() * 4), int(load.max() * 4) * len(load))
        if not load.is_floating_point()
        else np.float64(load.sum() / (load.max() * len(load)))
    ),
}

WRONG = {
    "tokens_per_rank": [
        (
            lambda c, E, W: torch.bincount(c.reshape(-1) // (E // W)),
            "case 5 (ranks 2 and 3 receive nothing, W=4): output shape",
        ),
        (lambda c, E, W: torch.bincount(c.reshape(-1) % W, minlength=W), "differs at"),
        (lambda c, E, W: torch.bincount(c[:, 0] // (E // W), minlength=W), "differs at"),
    ],
    "traffic": [
        (lambda c, E, W: _traffic_loop(c, E, W).T, "case 1 (T=8, E=8, k=2, W=4): output differs"),
        (lambda c, E, W: _traffic_loop(c[:, :1], E, W), "output differs"),
        (lambda c, E, W: _traffic_loop(c, E, W).float(), "dtype: expected torch.int64, got torch.float32"),
    ],
    "parallel_efficiency": [
        (
            lambda load: float(load.double().min() / load.double().max()),
            "case 2 (one hot rank: [10, 2, 2, 2]): output: expected 0.4, got 0.2",
        ),
        (lambda load: float(load.double().max() / load.double().mean()), "expected 0.4, got 2.5"),
        (lambda load: bool(load.max() == load.min()), "output: expected a number 1, got bool True"),
        (lambda load: np.bool_(True), "output: expected a number 1, got numpy.bool_ True"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_reference_and_honest_variants_pass(one_line, name):
    assert one_line(EXERCISES[name].check, EXERCISES[name].reference)[0]
    ok, line = one_line(EXERCISES[name].check, HONEST[name])  # numpy scalars and Fractions count as numbers
    assert ok, line


@pytest.mark.parametrize(("name", "i"), [(n, i) for n in sorted(WRONG) for i in range(len(WRONG[n]))])
def test_wrong_implementation_is_caught(one_line, name, i):
    fn, phrase = WRONG[name][i]
    ok, line = one_line(EXERCISES[name].check, fn)
    assert not ok and line.startswith(f"✗ {name}: case ") and phrase in line, line


def test_traffic_rows_and_columns_are_the_per_rank_counts():
    chosen = ex._routing(16, 8, 2, seed=5)
    m = ex.traffic_reference(chosen, 8, 4)
    assert torch.equal(m.sum(0), ex.tokens_per_rank_reference(chosen, 8, 4))
    assert m.sum(1).tolist() == [8, 8, 8, 8]  # every rank sends its 4 tokens' 2 assignments

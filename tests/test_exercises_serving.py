"""Checkers of exercise 11 (serving): the references pass, typical mistakes are caught, stubs are 'not attempted'."""

import pytest
import torch

from moe_edu.course.exercises import serving as ex


def test_references_pass(one_line):
    assert one_line(ex.check_kv_bytes_per_token, ex.kv_bytes_per_token)[0]
    assert one_line(ex.check_lru_hit_rate, ex.lru_hit_rate)[0]
    assert one_line(ex.check_int8_round_trip, ex.int8_round_trip)[0]
    assert ex.kv_bytes_per_token(32, 8, 128, 2) == 131_072


def stub(*args):
    raise NotImplementedError()


def test_stub_is_not_attempted(one_line):
    ok, line = one_line(ex.check_lru_hit_rate, stub)
    assert not ok and line.startswith("○ lru_hit_rate: not attempted")


@pytest.mark.parametrize(
    "fn",
    [
        lambda L, kv, d, b: L * kv * d * b,  # forgot V
        lambda L, kv, d, b: 2 * L * 4 * kv * d * b,  # query heads instead of KV heads
        lambda L, kv, d, b: 2 * L * kv * d * b / 1,  # a float, not an int
    ],
)
def test_kv_mistakes_are_caught(one_line, fn):
    ok, line = one_line(ex.check_kv_bytes_per_token, fn)
    assert not ok and line.startswith("✗ kv_bytes_per_token: case 1")


def fifo_hit_rate(trace, capacity):  # evicts the oldest insertion, not the least recently used
    cache, hits = [], 0
    for e in trace:
        if e in cache:
            hits += 1
            continue
        cache.append(e)
        if len(cache) > capacity:
            cache.pop(0)
    return hits / len(trace)


def unbounded_hit_rate(trace, capacity):  # never evicts
    return sum(e in trace[:i] for i, e in enumerate(trace)) / len(trace)


@pytest.mark.parametrize("fn", [fifo_hit_rate, unbounded_hit_rate])
def test_lru_mistakes_are_caught(one_line, fn):
    ok, line = one_line(ex.check_lru_hit_rate, fn)
    assert not ok and line.startswith("✗ lru_hit_rate: case")


def per_tensor(w):  # one scale for the whole matrix
    s = w.abs().max() / 127
    return torch.round(w / s).clamp(-127, 127) * s


def divides_by_zero(w):  # no clamp: a zero row gives NaN
    s = w.abs().amax(1, keepdim=True) / 127
    return torch.round(w / s).clamp(-127, 127) * s


def truncates(w):  # int() truncation instead of rounding
    s = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
    return (w / s).to(torch.int8).float() * s


@pytest.mark.parametrize(("fn", "case"), [(per_tensor, "case 1"), (divides_by_zero, "case 3"), (truncates, "case 1")])
def test_int8_mistakes_are_caught(one_line, fn, case):
    ok, line = one_line(ex.check_int8_round_trip, fn)
    assert not ok and line.startswith(f"✗ int8_round_trip: {case}")

"""Checkers of exercise 08 (consecutive repetition): the reference passes, typical mistakes are caught."""

import math

import pytest
import torch

from moe_edu.course.exercises import repetition as ex


def same_slot_only(c):  # compares slot j with slot j only: misses a swapped top-2
    return (c[1:, 0] == c[:-1, 0]).float().mean().item(), (c[1:] == c[:-1]).any(-1).float().mean().item()


def divides_by_tokens(c):  # T instead of T - 1 pairs
    prev, cur = c[:-1], c[1:]
    overlap = (prev[:, :, None] == cur[:, None, :]).any(-1).any(-1).sum().item()
    return (prev[:, 0] == cur[:, 0]).sum().item() / len(c), overlap / len(c)


def counts_not_rates(c):
    prev, cur = c[:-1], c[1:]
    return float((prev[:, 0] == cur[:, 0]).sum()), float((prev[:, :, None] == cur[:, None, :]).any(-1).any(-1).sum())


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (same_slot_only, "top-k overlap: expected"),
        (divides_by_tokens, "expected"),
        (counts_not_rates, "expected"),
    ],
)
def test_repetition_mistakes_are_caught(one_line, fn, message):
    ok, line = one_line(ex.check_consecutive_repetition, fn)
    assert not ok and line.startswith("✗ consecutive_repetition: case") and message in line


@pytest.mark.parametrize(
    "fn",
    [
        lambda E, k: k / E,  # "two slots, 1/8 each"
        lambda E, k: math.comb(E - k, k) / math.comb(E, k),  # the chance of *no* overlap
        lambda E, k: 1 - ((E - k) / E) ** k,  # draws with replacement
    ],
)
def test_baseline_mistakes_are_caught(one_line, fn):
    ok, line = one_line(ex.check_random_topk_overlap_rate, fn)
    assert not ok and line.startswith("✗ random_topk_overlap_rate: case")


def test_references_pass(one_line):
    assert one_line(ex.check_consecutive_repetition, ex.consecutive_repetition)[0]
    assert one_line(ex.check_random_topk_overlap_rate, ex.reference("random_topk_overlap_rate"))[0]
    assert ex.consecutive_repetition(torch.tensor([[1, 2], [1, 2]])) == (1.0, 1.0)

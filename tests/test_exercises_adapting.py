"""Checkers of notebook 12's exercises (moe_edu.course.exercises.adapting): references pass, typical mistakes fail.

Imported inside the tests: importing registers the exercises in moe_edu.course.exercises.ALL, which
tests/test_exercises.py compares with its own list."""

from __future__ import annotations

import torch


def ex():
    from moe_edu.course.exercises import adapting

    return adapting


def test_references_pass_and_stub_is_not_attempted():
    m = ex()
    for name in ("upcycle_weights", "pruned_routing", "bias_update"):
        assert m.exercises.get(name).outcome(m.reference(name))[0] == "✓", name

    def stub(*args):
        raise NotImplementedError()

    assert m.exercises.get("bias_update").outcome(stub)[0] == "○"


def test_typical_mistakes_are_caught():
    m = ex()
    get = m.exercises.get

    # upcycling: only the first expert copied, the others left at zero
    def zeros(gu, d, E):
        return torch.cat([gu, gu.new_zeros(E - 1, *gu.shape[1:])]), torch.cat([d, d.new_zeros(E - 1, *d.shape[1:])])

    assert get("upcycle_weights").outcome(zeros)[0] == "✗"

    # pruning: the dropped expert removed after the softmax, weights not renormalised (they no longer sum to 1)
    def no_renorm(logits, d, k):
        probs = torch.softmax(logits.float(), -1).index_fill(1, torch.tensor([d]), 0.0)  # (T, E)
        return torch.topk(probs, k, -1)

    sym, msg = get("pruned_routing").outcome(no_renorm)
    assert sym == "✗" and "weights" in msg

    # pruning: the dropped expert still chosen
    def ignore_drop(logits, d, k):
        w, i = torch.topk(torch.softmax(logits.float(), -1), k, -1)
        return w / w.sum(-1, keepdim=True), i

    assert get("pruned_routing").outcome(ignore_drop)[0] == "✗"
    # bias update with the sign flipped (rewarding the overloaded experts)
    flipped = lambda b, c, s: b + s * torch.sign(c.to(b.dtype) - c.to(b.dtype).mean())
    assert get("bias_update").outcome(flipped)[0] == "✗"

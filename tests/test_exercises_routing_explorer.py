"""Checkers of exercise 06 (routing explorer): the reference passes, honest variants pass,
typical mistakes are caught with a line that names them."""

from __future__ import annotations

import pytest
import torch

from moe_edu.course.exercises import routing_explorer as ex

EXERCISES = ex.exercises.exercises


def _loads_via_bincount(logits, k):
    chosen = logits.float().topk(k, -1).indices  # (L, T, k)
    return torch.stack([torch.bincount(c.reshape(-1), minlength=logits.shape[-1]) for c in chosen])


def _topk_softmax_order(logits, layer, t, k):  # top-k of the logits, then softmax: the same numbers
    top = logits[layer, t].float().topk(k)
    return torch.softmax(top.values, -1), top.indices


HONEST = {
    "first_choices": lambda l: torch.softmax(l.float(), -1).max(-1).indices,
    "layer_loads": _loads_via_bincount,
    "token_topk": _topk_softmax_order,
}

WRONG = {
    "first_choices": [
        (lambda l: l.float().argmax(1), "case 1 (L=2, T=5, E=8): output shape"),
        (lambda l: l.float().argmax(-1).int(), "dtype: expected torch.int64, got torch.int32"),
        (lambda l: torch.softmax(l.float(), -1).max(-1).values, "dtype: expected torch.int64, got torch.float32"),
        (lambda l: l.float().argmin(-1), "differs at"),
    ],
    "layer_loads": [
        (lambda l, k: _loads_via_bincount(l, 1), "case 1 (L=2, T=6, E=8, k=2 (Mixtral)): output differs"),
        (lambda l, k: _loads_via_bincount(l, k).float(), "dtype: expected torch.int64, got torch.float32"),
        (
            lambda l, k: torch.stack([torch.bincount(c.reshape(-1)) for c in l.float().topk(k, -1).indices]),
            "case 5 (nobody picks the last expert, L=2, T=5, E=8, k=2): your function raised RuntimeError",
        ),
        (lambda l, k: _loads_via_bincount(l.transpose(0, 1), k), "shape"),
    ],
    "token_topk": [
        (lambda l, layer, t, k: torch.softmax(l[layer, t].float(), -1).topk(k), "weights differs at"),
        (lambda l, layer, t, k: _topk_softmax_order(l, t, layer, k), "raised IndexError"),
        (
            lambda l, layer, t, k: (
                _topk_softmax_order(l, layer, t, k)[0].to(l.dtype),
                _topk_softmax_order(l, layer, t, k)[1],
            ),
            "case 4 (bf16 logits, k=2): weights dtype: expected torch.float32, got torch.bfloat16",
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_reference_and_honest_variants_pass(one_line, name):
    assert one_line(EXERCISES[name].check, EXERCISES[name].reference)[0]
    ok, line = one_line(EXERCISES[name].check, HONEST[name])
    assert ok, line


@pytest.mark.parametrize(("name", "i"), [(n, i) for n in sorted(WRONG) for i in range(len(WRONG[n]))])
def test_wrong_implementation_is_caught(one_line, name, i):
    fn, phrase = WRONG[name][i]
    ok, line = one_line(EXERCISES[name].check, fn)
    assert not ok and line.startswith(f"✗ {name}: case ") and phrase in line, line


def test_reference_agrees_with_the_trace_methods():
    from moe_edu.course.widgets.trace import RoutingTrace

    logits = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(0))  # (L, T, E)
    trace = RoutingTrace(
        text="abcdef", token_ids=list(range(6)), tokens=list("abcdef"), logits=logits, num_input_tokens=6, top_k=2
    )
    assert torch.equal(ex.first_choices_reference(logits), trace.first_choices())
    loads = ex.layer_loads_reference(logits, 2)
    assert all(torch.allclose(loads[l].double() / 12, trace.load(l).double()) for l in range(3))
    w, e = ex.token_topk_reference(logits, 1, 4, 2)
    tw, te = trace.topk(1)
    assert torch.equal(e, te[4]) and torch.allclose(w, tw[4])

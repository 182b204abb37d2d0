"""Every exercise checker: the reference passes, typical mistakes are caught with a helpful
line, a stub is "not attempted", and an exception in student code is reported, not raised."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moe_edu.course.exercises import load_all
from moe_edu.dispatch import dense_dispatch, grouped_dispatch, loop_dispatch
from moe_edu.losses import load_balancing_loss, router_z_loss
from moe_edu.routing import softmax_topk, topk_softmax

EXERCISES = load_all()


def _topk_mask(p, k, dim=-1):
    return torch.zeros_like(p, dtype=torch.bool).scatter_(dim, torch.topk(p, k, dim=dim).indices, True)


def _sort(c, E, stable=True, minlength=True, descending=False):
    flat = c.reshape(-1)
    counts = torch.bincount(flat, minlength=E if minlength else 0)
    return torch.argsort(flat, stable=stable, descending=descending), counts


def _block(x, gate, w1, w3, w2, k, renorm=True, fp32=True):
    from moe_edu.course.exercises.smoe_block import moe_block_reference

    y, logits = moe_block_reference(x, gate, w1, w3, w2, k)
    if not renorm:  # forgot to renormalise: weights are the raw top-k softmax probabilities
        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(logits, -1)
        w, e = torch.topk(probs, k, -1)
        y = torch.stack(
            [
                sum(
                    w[t, j]
                    * F.linear(F.silu(F.linear(flat[t], w1[e[t, j]])) * F.linear(flat[t], w3[e[t, j]]), w2[e[t, j]])
                    for j in range(k)
                )
                for t in range(flat.shape[0])
            ]
        )
        y = y.reshape(x.shape)
    return y, (logits if fp32 else logits.half())


def _bf16_router(x, gate, w1, w3, w2, k):
    """Right block, but the router logits computed in the input's dtype (bf16) and cast afterwards."""
    from moe_edu.course.exercises.smoe_block import moe_block_reference

    y, _ = moe_block_reference(x, gate, w1, w3, w2, k)
    return y, F.linear(x.reshape(-1, x.shape[-1]), gate).float()


def _edit_inputs_to_agree(a, b):
    """A cheat: overwrite a with b in place, then report agreement."""
    a[0].copy_(b[0])
    a[1].copy_(b[1])
    return True


def _lb(l, E, k):
    return load_balancing_loss(l, E, k)


# name -> [(wrong implementation, a phrase the failure line must contain)]
WRONG = {
    "gating.router_logits": [
        (lambda x, w: x @ w.T, "dtype: expected torch.float32, got torch.bfloat16"),
        (lambda x, w: x.float() @ w.float(), "raised RuntimeError"),
        (lambda x, w: x.float() @ w.float().T + 1, "differs at"),
    ],
    "gating.router_probs": [
        (lambda l: torch.softmax(l.float(), dim=0), "case 1 (T=4, E=4): output differs at"),
        (lambda l: torch.softmax(l, dim=-1), "dtype: expected torch.float32, got torch.bfloat16"),
        (lambda l: torch.exp(l.float()), "differs at"),
    ],
    "topk.topk_mask": [
        (lambda p, k: _topk_mask(p, k + 1), "expected False, got True"),
        (lambda p, k: _topk_mask(p, k).float(), "dtype: expected torch.bool, got torch.float32"),
        (lambda p, k: _topk_mask(p, k, dim=0), "differs at"),
    ],
    "topk.topk_renormalised": [
        (lambda l, k: torch.topk(torch.softmax(l.float(), -1), k, -1), "weights differs at"),
        (lambda l, k: (softmax_topk(l, k)[0], softmax_topk(l, k)[1] + 1), "experts differs at"),
        (lambda l, k: softmax_topk(l, k)[::-1], "weights dtype: expected torch.float32, got torch.int64"),
        (lambda l, k: softmax_topk(l, k)[0], "expected a tuple of 2 values, got a tensor"),
    ],
    "sparse.tokens_per_expert": [
        (
            lambda c, E: torch.bincount(c.reshape(-1)),
            "case 3 (the last expert is never chosen): output shape: expected (4,), got (3,)",
        ),
        (lambda c, E: torch.bincount(c.reshape(-1) + 1, minlength=E)[:E], "differs at"),
        (lambda c, E: torch.bincount(c[:, 0], minlength=E), "differs at"),
    ],
    "sparse.loop_dispatch": [
        (lambda x, ex, w, c: grouped_dispatch(x, ex, torch.ones_like(w), c), "case 1 (T=6, E=4, k=2): output differs"),
        (lambda x, ex, w, c: grouped_dispatch(x, ex, w, (c + 1) % ex.num_experts), "output differs"),
        (lambda x, ex, w, c: grouped_dispatch(x, ex, w.flip(-1), c), "output differs"),
    ],
    "sparse.sort_by_expert": [
        (lambda c, E: _sort(c, E, minlength=False), "case 3 (the last expert is never chosen): counts shape"),
        (lambda c, E: _sort(c, E, descending=True), "order differs at"),
        (lambda c, E: (torch.argsort(c.reshape(-1), stable=True) // c.shape[1], _sort(c, E)[1]), "order differs at"),
    ],
    "sparse.grouped_dispatch": [
        (lambda x, ex, w, c: dense_dispatch(x, ex, w / 2, c), "output differs"),
        (lambda x, ex, w, c: loop_dispatch(x, ex, w, c).double(), "dtype: expected torch.float32, got torch.float64"),
    ],
    "combining.topk_softmax": [
        (
            lambda l, k: (torch.softmax(torch.topk(l, k, -1).values.float(), 0), torch.topk(l, k, -1).indices),
            "weights differs at",
        ),
        (
            lambda l, k: (torch.softmax(torch.topk(l, k, -1).values, -1), torch.topk(l, k, -1).indices),
            "weights dtype: expected torch.float32, got torch.bfloat16",
        ),
        (
            lambda l, k: (torch.topk(torch.softmax(l.float(), -1), k, -1).values, torch.topk(l, k, -1).indices),
            "weights differs at",
        ),
    ],
    "combining.same_routing": [
        (
            lambda a, b, atol=1e-6: _edit_inputs_to_agree(a, b),
            "case 4 (one weight off by 1e-3): output: expected False, got True",
        ),
        (
            lambda a, b, atol=1e-6: torch.allclose(a[0], b[0], atol=atol) and torch.equal(a[1], b[1]),
            "case 3 (same routing, slots swapped): output: expected True, got False",
        ),
        (
            lambda a, b, atol=1e-6: torch.equal(a[1].sort(-1).values, b[1].sort(-1).values),
            "case 4 (one weight off by 1e-3): output: expected False, got True",
        ),
        (
            lambda a, b, atol=1e-6: torch.allclose(a[0].sort(-1).values, b[0].sort(-1).values, atol=atol),
            "expected False, got True",
        ),
    ],
    "combining.combine": [
        (lambda o, w: o.mean(1), "case 1 (T=4, k=2, H=8): output differs at"),
        (lambda o, w: (o * w[..., None]).sum(1), "dtype: expected torch.bfloat16, got torch.float32"),
        (lambda o, w: (o * w[:, None, :]).sum(1), "raised RuntimeError"),
        (lambda o, w: (o * w[..., None].to(o.dtype)).sum(1), "case 5 (bf16 outputs that nearly cancel"),
    ],
    "smoe_block.swiglu_expert": [
        (lambda x, w1, w3, w2: F.linear(F.silu(F.linear(x, w3)) * F.linear(x, w1), w2), "output differs at"),
        (lambda x, w1, w3, w2: F.linear(F.relu(F.linear(x, w1)) * F.linear(x, w3), w2), "output differs at"),
        (lambda x, w1, w3, w2: F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2.T), "raised RuntimeError"),
    ],
    "smoe_block.moe_block": [
        (lambda *a: _block(*a, renorm=False), "y differs at"),
        (lambda *a: _block(*a, fp32=False), "router_logits dtype: expected torch.float32, got torch.float16"),
        (lambda *a: _block(*a)[0], "expected a tuple of 2 values, got a tensor"),
        (_bf16_router, "case 4 (bf16 x and weights: router logits in float32"),
    ],
    "smoe_block.active_parameters": [
        (
            lambda c: __import__("moe_edu").count_parameters(c).total,
            "case 1 (mixtral-8x7b): output: expected 12,879,925,248, got 46,702,792,704",
        ),
        (
            lambda c: (
                __import__("moe_edu").count_parameters(c).active
                - c.num_hidden_layers * c.num_local_experts * c.hidden_size
            ),
            "expected 12,879,925,248, got",
        ),
        (lambda c: float(__import__("moe_edu").count_parameters(c).active), "expected int 12,879,925,248, got float"),
        (
            lambda c: __import__("moe_edu").count_parameters(c.replace(tie_word_embeddings=False)).active,
            "case 5 (tiny with tie_word_embeddings=True",
        ),
    ],
    "load_balancing.load_balancing_loss": [
        (lambda l, E, k: _lb(l, E, k) / E, "case 1 (T=8, E=4, k=2): output: expected 2.04, got"),
        (lambda l, E, k: _lb(l, E, 1), "output: expected"),
        (lambda l, E, k: _lb(l, E, k).reshape(1), "shape: expected (), got (1,)"),
    ],
    "load_balancing.router_z_loss": [
        (lambda l: torch.logsumexp(l.float(), -1).mean(), "case 1 (T=8, E=4): output: expected"),
        (lambda l: torch.logsumexp(l.float(), -1).pow(2).sum(), "output: expected"),
        (lambda l: torch.logsumexp(l, -1).pow(2).mean(), "dtype: expected torch.float32, got torch.bfloat16"),
        (
            lambda l: torch.log(torch.exp(l.float()).sum(-1)).pow(2).mean(),
            "case 4 (huge logits (about 100: exp overflows",
        ),
    ],
}


MODULES_HERE = ("gating", "topk", "sparse", "combining", "smoe_block", "load_balancing")


def test_every_exercise_has_wrong_implementations():
    # exercises of later modules keep their wrong implementations in tests/test_exercises_<topic>.py
    assert sorted(WRONG) == sorted(n for n in EXERCISES if n.split(".")[0] in MODULES_HERE)
    assert len(EXERCISES) >= 12
    assert all(len(w) >= 2 for w in WRONG.values())
    assert all(len(ex.hints) >= 2 for ex in EXERCISES.values())


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_reference_passes(one_line, name):
    ex = EXERCISES[name]
    ok, line = one_line(ex.check, ex.reference)
    assert ok and line.startswith(f"✓ {ex.name}: all ") and line.endswith(" cases pass")
    assert ex.use(ex.reference) is ex.reference


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_stub_is_not_attempted(one_line, name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    ex = EXERCISES[name]
    ok, line = one_line(ex.check, stub)
    assert not ok and "not attempted" in line and not line.startswith(("✓", "✗"))
    assert ex.use(stub) is ex.reference


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_exception_in_student_code_is_reported(one_line, name):
    def buggy(*args, **kwargs):
        return args[0].no_such_method()

    ok, line = one_line(EXERCISES[name].check, buggy)
    assert not ok and line.startswith("✗") and "case 1 (" in line and "your function raised AttributeError" in line


@pytest.mark.parametrize(("name", "i"), [(n, i) for n in sorted(WRONG) for i in range(len(WRONG[n]))])
def test_wrong_implementation_is_caught(one_line, name, i):
    fn, phrase = WRONG[name][i]
    ex = EXERCISES[name]
    ok, line = one_line(ex.check, fn)
    assert not ok and line.startswith(f"✗ {ex.name}: case "), line
    assert phrase in line, line
    assert ex.use(fn) is ex.reference


def test_checker_output_is_deterministic(one_line):
    ex = EXERCISES["gating.router_probs"]
    wrong = WRONG["gating.router_probs"][0][0]
    assert one_line(ex.check, wrong) == one_line(ex.check, wrong)


def test_library_orders_both_pass_topk_renormalised(one_line):
    assert one_line(EXERCISES["topk.topk_renormalised"].check, topk_softmax)[0]
    assert one_line(EXERCISES["load_balancing.router_z_loss"].check, router_z_loss)[0]


def _same_routing_sorting_in_place(a, b, atol=1e-6):
    """An honest answer that sorts both routings' slots in place before comparing."""
    for w, e in (a, b):
        e_sorted, order = e.sort(-1)
        w.copy_(w.gather(-1, order))
        e.copy_(e_sorted)
    return torch.equal(a[1], b[1]) and torch.allclose(a[0].float(), b[0].float(), rtol=0.0, atol=atol)


def _combine_einsum(o, w):
    return torch.einsum("tkh,tk->th", o.float(), w.float()).to(o.dtype)


def _block_per_token(x, gate, w1, w3, w2, k):
    """An honest block written differently: a per-token loop accumulating y in x's dtype."""
    B, T, H = x.shape
    flat = x.reshape(-1, H)
    logits = flat.float() @ gate.float().T
    w, e = torch.softmax(logits, -1).topk(k, -1)
    w = w / w.sum(-1, keepdim=True)
    y = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for j in range(k):
            i = e[t, j]
            h = F.silu(flat[t] @ w1[i].T) * (flat[t] @ w3[i].T)
            y[t] += (w[t, j] * (h @ w2[i].T)).to(y.dtype)
    return y.reshape(B, T, H), logits


def _active_with_tied(c):
    from moe_edu import count_parameters

    full = count_parameters(c.replace(tie_word_embeddings=False)).active
    return full - c.vocab_size * c.hidden_size if c.tie_word_embeddings else full


# honest answers written differently from the reference: each checker defect's fix must accept them
HONEST = {
    "combining.same_routing": _same_routing_sorting_in_place,
    "combining.combine": _combine_einsum,
    "smoe_block.moe_block": _block_per_token,
    "smoe_block.active_parameters": _active_with_tied,
    "load_balancing.router_z_loss": lambda l: (
        (l.float().max(-1).values + torch.log(torch.exp(l.float() - l.float().max(-1, keepdim=True).values).sum(-1)))
        .pow(2)
        .mean()
    ),
}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_answer_written_differently_passes(one_line, name):
    ok, line = one_line(EXERCISES[name].check, HONEST[name])
    assert ok, line

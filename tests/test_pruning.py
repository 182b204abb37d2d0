"""Expert pruning and merging (moe_edu.adapting.pruning): shapes, re-routing with renormalised top-k, merge weights."""

from __future__ import annotations

import numpy
import pytest
import torch

import moe_edu
from moe_edu.adapting.pruning import (
    expert_similarity,
    expert_usage,
    layer_inputs,
    least_used,
    merge_experts,
    most_similar_pair,
    prune_experts,
    pruned_routing,
    random_experts,
    reconstruction_errors,
)

CFG = moe_edu.get_config("tiny").replace(vocab_size=128, num_hidden_layers=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return moe_edu.MixtralForCausalLM(CFG).eval()


IDS = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))


def test_prune_shapes_and_kept_weights(model):
    pruned = prune_experts(model, [3, 0])
    assert pruned.config.num_local_experts == 7
    for layer, old, d in zip(pruned.model.layers, model.model.layers, (3, 0), strict=True):
        assert layer.mlp.gate.weight.shape == (7, 64) and layer.mlp.experts.gate_up_proj.shape == (7, 448, 64)
        keep = [e for e in range(8) if e != d]
        assert torch.equal(layer.mlp.experts.down_proj, old.mlp.experts.down_proj[keep])
    assert pruned(IDS).logits.shape == (2, 16, 128)


def test_pruned_block_equals_masking_the_logit_and_renormalising(model):
    """Re-routing among E-1 experts = old router with the dropped logit at -inf, top-k renormalised."""
    d = 5
    pruned = prune_experts(model, [d, d])
    old, new = model.model.layers[0].mlp, pruned.model.layers[0].mlp
    x = torch.randn(3, 12, 64)  # (B, T, H)
    logits = old.gate.logits(x.reshape(-1, 64))  # (N, E)
    logits[:, d] = float("-inf")
    w, ids = torch.topk(torch.softmax(logits, -1), 2, dim=-1)  # (N, k)
    w = w / w.sum(-1, keepdim=True)
    assert torch.allclose(w.sum(-1), torch.ones(36))
    outs = old.experts.dense(x.reshape(-1, 64))  # (E, N, H)
    want = sum(w[:, j, None] * outs[ids[:, j], torch.arange(36)] for j in range(2))  # (N, H)
    torch.testing.assert_close(new(x)[0].reshape(-1, 64), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(new.route(x).weights.sum(-1), torch.ones(36))


def test_merge_is_usage_weighted_average(model):
    usage = torch.tensor([[0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], [0.125] * 8])
    merged = merge_experts(model, [(1, 6), (2, 3)], usage)
    a, b = model.model.layers[0].mlp, merged.model.layers[0].mlp
    want = (0.3 * a.experts.gate_up_proj[1] + 0.1 * a.experts.gate_up_proj[6]) / 0.4
    torch.testing.assert_close(b.experts.gate_up_proj[1], want)
    assert b.experts.gate_up_proj.shape[0] == 7
    assert torch.equal(b.gate.weight[1], a.gate.weight[1])  # the more used expert's router row
    assert torch.equal(b.experts.down_proj[6], a.experts.down_proj[7])  # later experts shift down one slot
    with pytest.raises(ValueError, match="pairs"):
        merge_experts(model, [(1, 1), (2, 3)], usage)
    with pytest.raises(ValueError, match="usage"):
        merge_experts(model, [(1, 2), (2, 3)], usage[0])


def test_usage_similarity_and_choices(model):
    usage = expert_usage(model, [IDS])
    assert usage.shape == (2, 8) and torch.allclose(usage.sum(1), torch.ones(2, dtype=usage.dtype))
    xs = layer_inputs(model, IDS)
    assert [tuple(x.shape) for x in xs] == [(32, 64), (32, 64)]
    sim = expert_similarity(model.model.layers[0].mlp.experts, xs[0])
    assert sim.shape == (8, 8) and torch.allclose(sim.diagonal(), torch.ones(8), atol=1e-5)
    sim2 = torch.eye(4)
    sim2[0, 2] = sim2[2, 0] = 0.9
    assert most_similar_pair(sim2) == (0, 2)
    assert least_used(torch.tensor([[0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])) == [1, 0]
    r = random_experts(2, 8, seed=3)
    assert r == random_experts(2, 8, seed=3) and all(0 <= e < 8 for e in r)


def test_prune_errors(model):
    with pytest.raises(ValueError, match="drop"):
        prune_experts(model, [8, 0])
    tiny = moe_edu.MixtralForCausalLM(CFG.replace(num_local_experts=2, num_experts_per_tok=2))
    with pytest.raises(ValueError, match="top_k"):
        prune_experts(tiny, [0, 0])


def test_pruned_routing_never_picks_the_dropped_expert_and_renormalises():
    from moe_edu.adapting.pruning import pruned_routing

    logits = torch.randn(20, 8, generator=torch.Generator().manual_seed(2))
    logits[:, 4] += 5.0  # everyone's first choice is the expert we drop
    w, ids = pruned_routing(logits, 4, 2)
    assert not (ids == 4).any() and torch.allclose(w.sum(-1), torch.ones(20))
    rest = [e for e in range(8) if e != 4]
    w2, ids2 = torch.topk(torch.softmax(logits[:, rest], -1), 2, dim=-1)  # the E-1 router directly
    torch.testing.assert_close(w, w2 / w2.sum(-1, keepdim=True))
    assert torch.equal(ids, torch.tensor(rest)[ids2])
    with pytest.raises(ValueError, match="dropped"):
        pruned_routing(logits, 8, 2)


def test_reconstruction_errors_equal_the_pruned_layers_output_change(model):
    """Lu et al.'s layer-wise criterion: error[d] is exactly how far dropping d moves the layer's output."""
    x = layer_inputs(model, IDS)[1]  # (N, H): what layer 1's MoE block receives
    errors = reconstruction_errors(model.model.layers[1].mlp, x)
    assert errors.shape == (8,) and bool((errors >= 0).all())
    with torch.no_grad():
        y_full = model.model.layers[1].mlp(x[None])[0][0]  # (N, H)
        for d in (0, 5):
            y = prune_experts(model, [0, d]).model.layers[1].mlp(x[None])[0][0]  # (N, H)
            assert abs(float((y - y_full).pow(2).mean()) - float(errors[d])) < 1e-6 * max(1.0, float(errors[d]))
    # an expert no row picks costs nothing to drop
    logits = model.model.layers[1].mlp.gate.logits(x)  # (N, E)
    unused = set(range(8)) - set(torch.topk(logits, 2, dim=-1).indices.flatten().tolist())
    assert all(float(errors[e]) == 0.0 for e in unused)


def test_silent_coercions_are_value_errors(model):
    """`prune_experts(drop=[1.7] * L)` dropped expert 1, `["3"]` expert 3, `[True]` expert 1; usage extrapolated."""
    for bad in (1.7, "3", True, None):
        with pytest.raises(ValueError, match=r"drop\[0\] must be an integer index"):
            prune_experts(model, [bad, 0])
    pruned = prune_experts(model, [torch.tensor(1), np_int(2)])  # integer scalars of any library are indices
    assert pruned.config.num_local_experts == 7
    usage = torch.full((2, 8), 0.125)
    with pytest.raises(ValueError, match=r"pairs\[0\] must be an integer index"):
        merge_experts(model, [(0, 1.5), (2, 3)], usage)
    for bad in (-1.0, float("inf"), float("nan")):
        broken = usage.clone()
        broken[0, 1] = bad
        with pytest.raises(ValueError, match="finite shares >= 0"):
            merge_experts(model, [(0, 1), (2, 3)], broken)
    with pytest.raises(ValueError, match="top_k"):
        pruned_routing(torch.randn(4, 8), 0, -1)
    with pytest.raises(ValueError, match="batches is empty"):
        expert_usage(model, [])


def np_int(value):
    return numpy.int64(value)

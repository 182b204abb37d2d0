"""Parity of SparseMoeBlock with transformers' MixtralSparseMoeBlock and with mistral-inference."""

import random

import pytest
import torch
import torch.nn.functional as F
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as HFBlock  # a test dependency

from moe_edu import DISPATCHES, PRESETS, SparseMoeBlock
from moe_edu.dispatch import DECODE_MAX_ASSIGNMENTS, choose_path
from moe_edu.layouts import v5_to_layout

LAYOUT_SEEDS = {"v5": 1, "v4": 2, "mistral": 3}  # fixed: the configs reproduce in any process


def random_configs(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        e = rng.randint(2, 16)
        yield (
            PRESETS["tiny"].replace(
                hidden_size=rng.choice([8, 16, 24, 64]),
                intermediate_size=rng.choice([12, 32, 56, 100]),
                num_attention_heads=2,
                num_key_value_heads=1,
                num_local_experts=e,
                num_experts_per_tok=rng.randint(1, min(4, e)),
            ),
            rng.choice([1, 3, 7, 13, 31]),
            rng.choice([1, 2, 3]),
        )


def hf_block(config, seed):
    torch.manual_seed(seed)
    hf = HFBlock(config.to_hf()).eval()
    with torch.no_grad():  # unit-scale activations: errors are then relative errors
        for p in hf.parameters():
            p.normal_(0, p.shape[-1] ** -0.5)
    return hf


@pytest.mark.parametrize("layout", ["v5", "v4", "mistral"])
@pytest.mark.parametrize("dispatch", sorted(DISPATCHES))
def test_matches_transformers_on_random_configs(layout, dispatch):
    for i, (config, tokens, batch) in enumerate(random_configs(12, seed=LAYOUT_SEEDS[layout])):
        hf = hf_block(config, i)
        ours = SparseMoeBlock(config, dispatch=dispatch).eval()
        ours.load_hf_state_dict(v5_to_layout(hf.state_dict(), layout))
        x = torch.randn(batch, tokens, config.hidden_size)
        with torch.no_grad():
            want = hf(x.clone())
            got, logits = ours(x)
        err = (got - want).abs().max().item()
        assert err <= 1e-5, (config, tokens, err)
        assert logits.shape == (batch * tokens, config.num_local_experts)
        torch.testing.assert_close(logits, F.linear(x.reshape(-1, config.hidden_size), hf.gate.weight))


def test_export_loads_into_transformers():
    config = PRESETS["tiny"]
    ours = SparseMoeBlock(config).eval()
    hf = HFBlock(config.to_hf()).eval()
    hf.load_state_dict(ours.export_state_dict("v5"))
    x = torch.randn(2, 9, config.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x), rtol=0, atol=1e-6)


def mistral_inference_moe(x, gate_w, w1, w2, w3, k):
    """mistral-inference's MoeLayer: top-k on the logits, then softmax over those k."""
    gate_logits = x @ gate_w.T
    weights, selected = torch.topk(gate_logits, k)
    weights = F.softmax(weights, dim=1, dtype=torch.float).to(x.dtype)
    results = torch.zeros_like(x)
    for i in range(gate_w.shape[0]):
        batch_idx, nth = torch.where(selected == i)
        h = F.silu(x[batch_idx] @ w1[i].T) * (x[batch_idx] @ w3[i].T)
        results[batch_idx] += weights[batch_idx, nth, None] * (h @ w2[i].T)
    return results


@pytest.mark.parametrize("order", ["softmax_topk", "topk_softmax"])
def test_matches_mistral_inference_ordering(order):
    for i, (config, tokens, _) in enumerate(random_configs(8, seed=7)):
        torch.manual_seed(i)
        block = SparseMoeBlock(config, routing_order=order).eval()
        x = torch.randn(tokens, config.hidden_size)
        e = block.experts
        want = mistral_inference_moe(x, block.gate.weight, e.w1, e.w2, e.w3, config.num_experts_per_tok)
        with torch.no_grad():
            got = block(x[None])[0][0]
        assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("tokens", [1, 4, 8])
def test_decode_path_matches_transformers(tokens):
    """The default block at inference with T*k <= DECODE_MAX_ASSIGNMENTS takes the no-sort decode path."""
    config = PRESETS["tiny"]
    hf = hf_block(config, tokens)
    ours = SparseMoeBlock(config).eval()
    ours.load_hf_state_dict(hf.state_dict())
    x = torch.randn(1, tokens, config.hidden_size)
    assert tokens * config.num_experts_per_tok <= DECODE_MAX_ASSIGNMENTS
    with torch.no_grad():
        assert choose_path(x[0], ours.experts, config.num_experts_per_tok) == "decode"
        torch.testing.assert_close(ours(x)[0], hf(x.clone()), rtol=0, atol=1e-5)

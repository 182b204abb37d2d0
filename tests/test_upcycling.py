"""Sparse upcycling (moe_edu.adapting.upcycling): the upcycled MoE is the dense function at step 0."""

from __future__ import annotations

import pytest
import torch

import moe_edu
from moe_edu.adapting.upcycling import dense_config, expert_spread, upcycle_block, upcycle_model

CFG = moe_edu.get_config("tiny").replace(vocab_size=128, num_hidden_layers=2)


def dense_model(seed: int = 0) -> moe_edu.MixtralForCausalLM:
    torch.manual_seed(seed)
    return moe_edu.MixtralForCausalLM(dense_config(CFG)).eval()


def test_dense_config_is_one_ffn():
    d = dense_config(CFG)
    assert (d.num_local_experts, d.num_experts_per_tok, d.hidden_size, d.intermediate_size) == (1, 1, 64, 224)


@pytest.mark.parametrize(("E", "k"), [(8, 2), (4, 1), (4, 4)])
def test_upcycled_model_equals_dense_at_step_0(E, k):
    dense = dense_model()
    moe = upcycle_model(dense, E, k, seed=1).eval()
    assert moe.config.num_local_experts == E and moe.config.num_experts_per_tok == k
    ids = torch.randint(0, CFG.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(moe(ids).logits, dense(ids).logits, atol=1e-5, rtol=1e-5)
    router = moe.model.layers[0].mlp.gate.weight
    assert router.abs().sum() > 0  # a fresh, non-trivial router: routing differs per token
    assert expert_spread(moe.model.layers[0].mlp) == 0.0


def test_upcycle_block_equals_dense_block_and_noise_breaks_equality():
    torch.manual_seed(0)
    dense = moe_edu.SparseMoeBlock(dense_config(CFG)).eval()
    x = torch.randn(2, 10, CFG.hidden_size)  # (B, T, H)
    y_dense, _ = dense(x)
    block = upcycle_block(dense, 8, 2).eval()
    y, logits = block(x)
    assert logits.shape == (20, 8)
    torch.testing.assert_close(y, y_dense, atol=1e-6, rtol=1e-5)
    noisy = upcycle_block(dense, 8, 2, noise_std=0.05, generator=torch.Generator().manual_seed(0)).eval()
    assert (noisy(x)[0] - y_dense).abs().max() > 1e-4 and expert_spread(noisy) > 0.01


def test_router_gradient_breaks_symmetry():
    """Experts start identical; one step with different tokens per expert moves them apart."""
    moe = upcycle_model(dense_model(), 8, 2, seed=0, aux_loss_coef=0.0).train()
    ids = torch.randint(0, CFG.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1))
    moe(ids, labels=ids).loss.backward()
    g = moe.model.layers[0].mlp.experts.down_proj.grad  # (E, H, I)
    assert not torch.allclose(g[0], g[1])


def test_upcycle_rejects_a_model_that_is_already_sparse():
    with pytest.raises(ValueError, match="num_experts=1"):
        upcycle_model(moe_edu.MixtralForCausalLM(CFG), 8, 2)


def test_upcycle_weights_copies_and_owns_its_memory():
    from moe_edu.adapting.upcycling import upcycle_weights

    gu, d = torch.randn(1, 6, 4), torch.randn(1, 4, 3)
    gu8, d8 = upcycle_weights(gu, d, 8)
    assert gu8.shape == (8, 6, 4) and d8.shape == (8, 4, 3)
    assert all(torch.equal(gu8[e], gu[0]) and torch.equal(d8[e], d[0]) for e in range(8))
    gu8[1] += 1.0
    assert not torch.equal(gu8[0], gu8[1])  # not views of one tensor
    with pytest.raises(ValueError, match="one expert"):
        upcycle_weights(gu8, d8, 2)


@pytest.mark.parametrize("aux", [0.0, 0.1])
def test_zero_router_gets_a_gradient_only_from_the_aux_loss(aux):
    """All logits tie, every token goes to the same two experts: the task loss gives the router exactly zero
    gradient; the load-balancing loss does not (d/dl_j of E*sum f_e P_e is prop. to P_j (f_j - sum f_e P_e))."""
    moe = upcycle_model(dense_model(), 8, 2, router_std=0.0, seed=0, aux_loss_coef=aux).train()
    ids = torch.randint(0, CFG.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1))
    out = moe(ids, labels=ids)
    out.loss.backward()
    chosen = torch.topk(out.router_logits[0], 2, dim=-1).indices  # (T, 2): ties broken the same way for all
    assert len(torch.unique(chosen)) == 2
    a, b = torch.unique(chosen).tolist()
    idle = [e for e in range(8) if e not in (a, b)]
    g = moe.model.layers[0].mlp.gate.weight.grad  # (E, H)
    if aux == 0.0:
        assert torch.count_nonzero(g) == 0
    else:
        assert g.abs().max() > 1e-6
        torch.testing.assert_close(g[a], g[b])  # the two chosen experts stay tied with each other
        torch.testing.assert_close(g[idle[0]], g[idle[-1]])  # and so do the six idle ones
        assert not torch.allclose(g[a], g[idle[0]])  # but the groups separate

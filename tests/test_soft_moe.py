"""Soft MoE invariants (moe_edu.variants.soft_moe): dispatch/combine softmaxes, equivariance, non-causality."""

from __future__ import annotations

import pytest
import torch

import moe_edu
from moe_edu.variants.base import active_parameters, copy_from_block, expert_parameters, flops_per_token
from moe_edu.variants.compare import compare
from moe_edu.variants.soft_moe import SoftMoE, SoftRouter, build_soft_moe, soft_weights

CFG = moe_edu.get_config("tiny")
H, I, E = CFG.hidden_size, CFG.intermediate_size, CFG.num_local_experts


def soft(p: int = 1, seed: int = 0) -> SoftMoE:
    torch.manual_seed(seed)
    return SoftMoE(H, I, E, slots_per_expert=p).eval()


def x_batch(B: int = 2, m: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, m, H, generator=torch.Generator().manual_seed(seed))  # (B, m, H)


@pytest.mark.parametrize("p", [1, 3])
def test_dispatch_sums_over_tokens_and_combine_over_slots(p):
    moe = soft(p)
    dispatch, combine, logits = moe.gate(x_batch())
    assert dispatch.shape == combine.shape == logits.shape == (2, 12, E * p)
    torch.testing.assert_close(dispatch.sum(dim=1), torch.ones(2, E * p))  # each slot: a convex mix of tokens
    torch.testing.assert_close(combine.sum(dim=2), torch.ones(2, 12))  # each token: a convex mix of slots
    assert (dispatch > 0).all() and (combine > 0).all()


def test_matches_a_plain_loop_reference():
    moe = soft(2)
    x = x_batch(1, 10)[0]  # (m, H): one group
    logits = x @ moe.gate.weight.T  # (m, S)
    D, C = torch.softmax(logits, 0), torch.softmax(logits, 1)
    slots = D.T @ x  # (S, H)
    outs = torch.stack([moe.experts.expert(s // 2, slots[s : s + 1])[0] for s in range(E * 2)])  # (S, H)
    torch.testing.assert_close(moe(x).y, C @ outs, atol=1e-5, rtol=1e-4)
    d2, c2 = soft_weights(logits[None])
    torch.testing.assert_close(d2[0], D) and torch.testing.assert_close(c2[0], C)


def test_permutation_equivariant_within_a_sequence():
    moe = soft(2)
    x = x_batch()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(moe(x[:, perm]).y, moe(x).y[:, perm], atol=1e-5, rtol=1e-4)


def test_not_causal_a_future_token_changes_the_past():
    moe = soft()
    x = x_batch(1, 8)
    x2 = x.clone()
    x2[0, -1] += 3.0  # change only the last token
    assert (moe(x2).y[0, :-1] - moe(x).y[0, :-1]).abs().max() > 1e-4


def test_sequences_do_not_mix_and_load_is_even():
    moe = soft(2)
    x = x_batch(3, 8)
    out = moe(x)
    torch.testing.assert_close(out.y[1:2], moe(x[1:2]).y)  # each sequence is its own group
    assert out.load_counts.tolist() == [3 * 2] * E and out.dropped == 0 and out.num_tokens == 24
    assert out.router_logits.shape == (24, E)


def test_copy_from_block_accounting_and_table_row():
    moe = copy_from_block(build_soft_moe(CFG), moe_edu.SparseMoeBlock(CFG))
    assert moe.gate.weight.shape == (E, H)
    assert moe.gate.experts_per_token == E / 64
    assert active_parameters(moe) == E * H + round(E / 64 * expert_parameters(moe.experts))
    table, _ = compare({"soft": moe}, x_batch(4, 64))
    row = table.rows[0]
    assert row["k"] == "soft: 8 slots / 64 tokens" and row["load CV"] == 0.0 and row["dropped tokens %"] == 0.0
    with pytest.raises(ValueError, match="slots_per_expert"):
        SoftRouter(H, E, 0)
    with pytest.raises(ValueError, match="expects"):
        moe(torch.randn(4, 3))


def test_bf16_keeps_dtype():
    moe = soft().to(torch.bfloat16)
    out = moe(x_batch().bfloat16())
    assert out.y.dtype == torch.bfloat16 and out.router_logits.dtype == torch.float32


def test_cost_grows_with_slots_per_token_and_meets_top2_at_p_2m_over_e():
    big = moe_edu.get_config("mixtral-8x7b")
    with torch.device("meta"):
        mixtral = moe_edu.SparseMoeBlock(big)
        costs = {p: flops_per_token(build_soft_moe(big, slots_per_expert=p, tokens_per_group=64)) for p in (1, 16, 32)}
    assert costs[1] < costs[16] < costs[32]
    assert abs(costs[32] / costs[16] - 2) < 0.01  # linear in slots per token
    assert abs(costs[16] / flops_per_token(mixtral) - 1) < 0.02  # Ep/m = 2 expert calls: Mixtral's top-2

"""Auxiliary-loss-free balancing (moe_edu.variants.aux_free): the bias picks, never weighs; load evens out."""

from __future__ import annotations

import pytest
import torch

import moe_edu
from moe_edu.variants import build_variant, moe_output
from moe_edu.variants.aux_free import AuxFreeRouter, bias_update
from moe_edu.variants.base import copy_from_block

CFG = moe_edu.get_config("tiny")
H, I, E = CFG.hidden_size, CFG.intermediate_size, CFG.num_local_experts


def skewed(n: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, H, generator=g) + 2.0 * torch.randn(H, generator=g)  # (n, H): a shared offset skews routing


def test_bias_update_rule():
    b = torch.zeros(4)
    new = bias_update(b, torch.tensor([10, 2, 4, 0]), 0.1)  # mean 4
    assert torch.allclose(new, torch.tensor([-0.1, 0.1, 0.0, 0.1]))


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_bias_changes_the_choice_but_not_the_weights(score):
    torch.manual_seed(0)
    r = build_variant("aux_free", CFG, score=score).gate.eval()  # the block initialises the router weight
    x = skewed(64)
    base = r(x)
    r.bias[base.expert_ids[:, 0].mode().values] = -10.0  # push the most popular first choice out
    moved = r(x)
    assert not torch.equal(moved.expert_ids, base.expert_ids)
    s = r.scores(r.logits(x))  # (N, E) unbiased
    want = s.gather(1, moved.expert_ids)
    torch.testing.assert_close(moved.weights, want / want.sum(-1, keepdim=True))  # weights from unbiased scores
    torch.testing.assert_close(moved.weights.sum(-1), torch.ones(64))


def test_zero_bias_is_mixtral_and_eval_does_not_update():
    block = moe_edu.SparseMoeBlock(CFG).eval()
    free = copy_from_block(build_variant("aux_free", CFG), block).eval()
    mixtral = copy_from_block(build_variant("mixtral", CFG), block).eval()
    x = skewed(40)
    torch.testing.assert_close(moe_output(free, x).y, moe_output(mixtral, x).y)
    assert moe_output(free, x).aux_losses == {} and torch.equal(free.gate.bias, torch.zeros(E))


def test_training_forward_nudges_bias_and_load_evens_out():
    """Routing only, no gradient step: the bias alone evens the hard load of a skewed batch."""
    torch.manual_seed(0)
    moe = build_variant("aux_free", CFG, bias_update_speed=0.002).train()
    x = skewed()
    imbalance = lambda: float((c := moe_output(moe, x).load_counts.float()).max() / c.mean())
    with torch.no_grad():
        first = imbalance()  # this training forward also nudges the bias once
        for _ in range(200):
            moe.gate(x)  # a training-mode routing call updates the bias
        moe.eval()
        last, bias = imbalance(), moe.gate.bias.clone()
        assert torch.equal(moe.gate.bias, bias)  # eval mode leaves it alone
    assert first > 2.0 and last < 1.3
    assert bias.abs().max() > 0 and len(list(moe.parameters())) == 3  # bias is a buffer, not a parameter
    assert "gate.bias" in moe.state_dict()


def test_errors():
    with pytest.raises(ValueError, match="score"):
        AuxFreeRouter(H, E, 2, score="tanh")
    with pytest.raises(ValueError, match="bias_update_speed"):
        AuxFreeRouter(H, E, 2, bias_update_speed=-1.0)

"""Adaptive k: top-p (Huang et al. 2024) and ratio skipping (Lu et al. 2024) on Mixtral's router."""

import pytest
import torch

from moe_edu import SparseMoeBlock, get_config
from moe_edu.variants.adaptive_k import AdaptiveKRouter, experts_per_token, ratio_keep, top_p_keep


def test_top_p_keeps_the_fewest_reaching_p():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2]])
    keep = top_p_keep(probs, 0.5)
    assert keep.tolist() == [[True, False, False], [True, True, False], [True, False, False]]
    assert top_p_keep(probs, 1.0).all()


def test_ratio_keep():
    w = torch.tensor([[0.8, 0.2], [0.55, 0.45]])
    assert ratio_keep(w, 0.5).tolist() == [[True, False], [True, True]]
    assert ratio_keep(w, 0.0).all()


def test_adaptive_block_runs_fewer_experts_and_threshold_one_is_mixtral():
    cfg = get_config("tiny")
    torch.manual_seed(0)
    block = SparseMoeBlock(cfg).eval()
    x = torch.randn(1, 64, cfg.hidden_size) * 4
    y_ref, _ = block(x)
    original = block.gate
    block.gate = AdaptiveKRouter.like(original, rule="top_p", threshold=1.0)  # keep all 2: Mixtral again
    y_all, _ = block(x)
    assert torch.allclose(y_all, y_ref, atol=1e-6)
    block.gate = AdaptiveKRouter.like(original, rule="ratio", threshold=0.9)
    routing = block.gate(x[0])
    n = experts_per_token(routing)
    assert 1.0 <= n < 2.0
    y_skip, _ = block(x)
    one = routing.keep.sum(1) == 1  # tokens left with one expert get exactly that expert's output
    first = routing.expert_ids[one, 0]
    expected = torch.stack(
        [block.experts.expert(int(e), x[0, t][None])[0] for t, e in zip(torch.nonzero(one)[:, 0], first, strict=True)]
    )
    assert torch.allclose(y_skip[0, one], expected, atol=1e-5)
    assert block.gate.weight is original.weight  # shares, does not copy


def test_top_p_over_more_candidates_can_use_more_experts():
    torch.manual_seed(0)
    r = AdaptiveKRouter(16, 8, 4, rule="top_p", threshold=0.9)
    torch.nn.init.normal_(r.weight, 0.0, 0.02)
    routing = r(torch.randn(128, 16) * 0.01)  # near-uniform router: unsure about every token
    assert experts_per_token(routing) > 2
    assert torch.allclose(routing.weights.sum(-1), torch.ones(128))
    assert (routing.weights[~routing.keep] == 0).all()


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="rule"):
        AdaptiveKRouter(8, 4, 2, rule="entropy")
    with pytest.raises(ValueError, match="threshold"):
        AdaptiveKRouter(8, 4, 2, threshold=0.0)
    with pytest.raises(ValueError, match="beta"):
        ratio_keep(torch.ones(2, 2), 1.5)

"""Routing statistics: exact random baselines, repetition counts, expert load."""

import pytest
import torch

from moe_edu import PRESETS, MixtralForCausalLM
from moe_edu.analysis import (
    load_by_domain,
    load_imbalance,
    load_share,
    random_first_choice_rate,
    random_topk_overlap_rate,
    repetition_by_domain,
    repetition_counts,
    repetition_rates,
    route,
    route_domains,
)
from moe_edu.tokenizer import Tokenizer


def test_baselines_exact():
    assert random_first_choice_rate(8) == 0.125
    assert random_topk_overlap_rate(8, 2) == pytest.approx(13 / 28)  # 1 - C(6,2)/C(8,2) = 46.4 %
    assert random_topk_overlap_rate(8, 1) == pytest.approx(1 / 8)
    assert random_topk_overlap_rate(8, 5) == 1.0  # two 5-subsets of 8 always meet
    with pytest.raises(ValueError, match="top_k"):
        random_topk_overlap_rate(8, 9)


def random_routing(T, E, k, gen):
    return torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)])  # (T, k)


def test_uniform_random_routing_matches_baselines():
    gen = torch.Generator().manual_seed(0)
    first, overlap = repetition_rates([random_routing(20000, 8, 2, gen)])
    assert abs(first - 0.125) < 0.01 and abs(overlap - 13 / 28) < 0.015


def test_repetition_counts_by_hand():
    chosen = torch.tensor([[0, 1], [0, 2], [3, 0], [4, 5]])
    # pairs: (0,1)->(0,2) first same, overlap; (0,2)->(3,0) overlap only; (3,0)->(4,5) neither
    assert repetition_counts(chosen) == (1, 2, 3)
    assert repetition_counts(chosen[:1]) == (0, 0, 0)
    # pairs never cross sequences
    assert repetition_rates([chosen[:2], chosen[2:]]) == (0.5, 0.5)
    with pytest.raises(ValueError, match="chosen"):
        repetition_counts(torch.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        repetition_rates([chosen[:1]])


def test_expert_load_and_imbalance():
    load = load_share(torch.tensor([[0, 1], [0, 2]]), 4)
    assert load.tolist() == [0.5, 0.25, 0.25, 0.0]
    assert load_imbalance(torch.full((8,), 1 / 8)) == 1.0
    assert load_imbalance(torch.eye(8)[0]) == 8.0
    with pytest.raises(ValueError, match="num_experts"):
        load_share(torch.tensor([[9]]), 4)


def test_route_domains_on_a_random_model():
    torch.manual_seed(0)
    cfg = PRESETS["tiny"].replace(vocab_size=300)
    model = MixtralForCausalLM(cfg).eval()
    tok = Tokenizer.train(["hello world, the experts route tokens"] * 10, vocab_size=300)
    chosen = route(model, tok.encode("hello world"))
    assert chosen.shape == (cfg.num_hidden_layers, len(tok.encode("hello world")), 2)
    routed = route_domains(model, tok, {"a": ["hello world " * 20], "b": ["the experts route tokens"]}, max_tokens=30)
    assert sum(s.shape[1] for s in routed["a"]) <= 30
    loads = load_by_domain(routed, 8)
    assert loads["a"].shape == (4, 8) and torch.allclose(loads["a"].sum(-1), torch.ones(4, dtype=torch.float64))
    reps = repetition_by_domain(routed)
    assert reps["b"].shape == (4, 2) and bool((reps["b"][:, 0] <= reps["b"][:, 1]).all())
    with pytest.raises(ValueError, match="no document"):
        route_domains(model, tok, {"c": ["h"]})

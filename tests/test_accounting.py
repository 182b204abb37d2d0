import pytest
import torch

from moe_edu import PRESETS, MixtralForCausalLM, SparseMoeBlock, count_parameters, flops_per_token


@pytest.mark.parametrize(
    "name, total, active",
    [
        ("mixtral-8x7b", 46_702_792_704, 12_879_925_248),
        ("mixtral-8x22b", 140_620_634_112, 39_152_031_744),
    ],
)
def test_exact_published_counts(name, total, active):
    p = count_parameters(PRESETS[name])
    assert (p.total, p.active) == (total, active)
    assert isinstance(p.total, int) and isinstance(p.active, int)


@pytest.mark.parametrize("name", ["tiny", "small", "mixtral-8x7b", "mixtral-8x22b"])
def test_formula_equals_instantiated_model(name):
    config = PRESETS[name]
    with torch.device("meta"):
        model = MixtralForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config).total


def test_active_counts_k_of_e_experts():
    c = PRESETS["tiny"]
    p = count_parameters(c)
    one_expert = 3 * c.hidden_size * c.intermediate_size
    assert p.total - p.active == c.num_hidden_layers * (c.num_local_experts - c.num_experts_per_tok) * one_expert
    dense = count_parameters(c.replace(num_experts_per_tok=c.num_local_experts))
    assert dense.active == dense.total
    with torch.device("meta"):
        block = SparseMoeBlock(c)
    assert sum(p.numel() for p in block.experts.parameters()) == p.experts // c.num_hidden_layers


def test_flops_per_token():
    c = PRESETS["mixtral-8x7b"]
    f = flops_per_token(c)
    p = count_parameters(c)
    assert f.dense_equivalent - f.active == 2 * (p.experts - p.active_experts)
    assert f.active == 2 * (p.active - p.embedding - p.norms)  # every active matrix weight multiplies once
    assert 0.25 < f.ratio < 0.3
    assert flops_per_token(c, context=4096).active > f.active


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="context must be an int"):
        flops_per_token(PRESETS["tiny"], context=-1)
    with pytest.raises(TypeError, match="expects a MixtralConfig"):
        count_parameters({"hidden_size": 64})

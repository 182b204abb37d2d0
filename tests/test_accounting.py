import pytest
import torch

from moe_edu import PRESETS, MixtralForCausalLM, SparseMoeBlock, count_parameters, flops_per_token


@pytest.mark.parametrize(
    ("name", "total", "active"),
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


def test_model_shape_without_extras_is_mixtral():
    from moe_edu.accounting import ModelShape

    for name in ("tiny", "mixtral-8x7b"):
        assert count_parameters(ModelShape(PRESETS[name])) == count_parameters(PRESETS[name])
        assert flops_per_token(ModelShape(PRESETS[name])) == flops_per_token(PRESETS[name])


def test_model_shape_extras_count_what_they_add():
    from moe_edu.accounting import ModelShape

    c = PRESETS["tiny"]
    H, L, E, k, I = c.hidden_size, c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok, c.intermediate_size
    base = count_parameters(c)
    shared = count_parameters(ModelShape(c, shared_intermediate_size=32, shared_gate=True))
    assert shared.total - base.total == L * (3 * H * 32 + H) and shared.active - base.active == L * (3 * H * 32 + H)
    dense = count_parameters(ModelShape(c, dense_layers=1, dense_intermediate_size=100))
    assert base.total - dense.total == E * 3 * H * I + E * H - 3 * H * 100
    assert base.active - dense.active == k * 3 * H * I + E * H - 3 * H * 100
    kv = c.num_key_value_heads * c.attention_head_dim
    assert count_parameters(ModelShape(c, attention_bias=True)).total - base.total == L * (H + 2 * kv)
    assert count_parameters(ModelShape(c, qk_norm=True)).total - base.total == L * (H + kv)
    with pytest.raises(ValueError, match=r"ModelShape.shared_gate"):
        ModelShape(c, shared_gate=True)
    with pytest.raises(ValueError, match=r"ModelShape.dense_layers"):
        ModelShape(c, dense_layers=L + 1, dense_intermediate_size=4)


def test_open_moes_match_their_published_counts():
    from moe_edu.presets import OPEN_MOES

    assert {"mixtral-8x7b", "mixtral-8x22b", "olmoe-1b-7b", "qwen1.5-moe-a2.7b", "dbrx"} <= set(OPEN_MOES)
    for name, m in OPEN_MOES.items():
        p = count_parameters(m.shape)
        assert abs(p.total / 1e9 - m.total_b) <= m.tolerance_b, name
        assert abs(p.active / 1e9 - m.active_b) <= m.tolerance_b, name


def test_qwen_moe_non_embedding_active_is_the_published_two_billion():
    from moe_edu.presets import QWEN1_5_MOE_A2_7B

    p = count_parameters(QWEN1_5_MOE_A2_7B)  # the Qwen blog: "2.0 billion non-embedding parameters" active
    assert abs((p.active - p.embedding - p.lm_head) / 1e9 - 2.0) <= 0.1

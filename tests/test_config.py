import dataclasses
import json

import pytest

import moe_edu
from moe_edu import PRESETS, MixtralConfig
from moe_edu.presets import get_config

TINY = PRESETS["tiny"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_experts_per_tok": 0}, "num_experts_per_tok"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
        ({"num_local_experts": 0}, "num_local_experts"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": -64}, "hidden_size"),
        ({"intermediate_size": 0}, "intermediate_size"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"hidden_size": 66}, "hidden_size"),  # not divisible by 8 heads
        ({"num_key_value_heads": 3}, "num_attention_heads"),  # 8 heads not divisible by 3
        ({"num_key_value_heads": 0}, "num_key_value_heads"),
        ({"head_dim": 7}, "head_dim"),  # odd: no rotary pairs
        ({"sliding_window": 0}, "sliding_window"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
        ({"router_aux_loss_coef": -0.1}, "router_aux_loss_coef"),
        ({"router_jitter_noise": 1.5}, "router_jitter_noise"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"hidden_size": 64.0}, "hidden_size"),
        ({"num_local_experts": True}, "num_local_experts"),
        # the gaps found adversarially (issue 14):
        ({"attention_dropout": 1.5}, "attention_dropout"),
        ({"rms_norm_eps": float("inf")}, "rms_norm_eps"),
        ({"initializer_range": float("inf")}, "initializer_range"),
        ({"rope_theta": float("inf")}, "rope_theta"),
        ({"rope_theta": float("nan")}, "rope_theta"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings"),
        ({"bos_token_id": 512}, "bos_token_id"),
        ({"eos_token_id": -1}, "eos_token_id"),
        ({"pad_token_id": "0"}, "pad_token_id"),
        ({"sliding_window": True}, "sliding_window"),
        ({"head_dim": True}, "head_dim"),
    ],
)
def test_invalid_configs_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TINY.replace(**changes)


def test_presets_exist_and_are_valid():
    for name in ("tiny", "small", "mixtral-8x7b", "mixtral-8x22b"):
        assert isinstance(PRESETS[name], MixtralConfig)
    with pytest.raises(KeyError, match="unknown preset 'nope'"):
        get_config("nope")


def test_mixtral_8x7b_is_the_published_config():
    c = PRESETS["mixtral-8x7b"]
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (4096, 14336, 32)
    assert (c.num_attention_heads, c.num_key_value_heads, c.attention_head_dim) == (32, 8, 128)
    assert (c.num_local_experts, c.num_experts_per_tok, c.vocab_size) == (8, 2, 32000)
    assert c.rope_theta == 1e6 and c.max_position_embeddings == 32768


def test_scaled_keeps_mixtral_ratios():
    big = PRESETS["mixtral-8x7b"]
    for width in (64, 128, 256, 512, 1024, 2048):
        s = big.scaled(width, num_hidden_layers=2)
        assert s.hidden_size == width and s.num_hidden_layers == 2
        assert s.intermediate_size / s.hidden_size == pytest.approx(3.5)
        assert s.num_attention_heads // s.num_key_value_heads == 4
        assert (s.num_local_experts, s.num_experts_per_tok) == (8, 2)
        assert s.num_attention_heads * s.attention_head_dim <= width * 2
    assert big.scaled(4096) == big  # scaling to its own width changes nothing but the label
    assert big.scaled(512, num_local_experts=16).num_local_experts == 16


def test_config_round_trips_through_dict_json_and_transformers(tmp_path):
    c = PRESETS["small"]
    assert MixtralConfig.from_dict(c.to_dict()) == c
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    assert MixtralConfig.from_json(tmp_path) == c
    transformers = pytest.importorskip("transformers")
    hf = c.to_hf()
    assert isinstance(hf, transformers.MixtralConfig)
    back = MixtralConfig.from_dict(hf.to_dict())
    assert dataclasses.replace(back, router_z_loss_coef=c.router_z_loss_coef) == c
    with pytest.raises(ValueError, match="unknown MixtralConfig fields"):
        MixtralConfig.from_dict({**c.to_dict(), "bogus": 1}, strict=True)


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read a Mixtral config"):
        MixtralConfig.from_json(tmp_path)


def test_package_imports_lazily_and_lists_its_api():
    assert "SparseMoeBlock" in dir(moe_edu)
    with pytest.raises(AttributeError):
        moe_edu.does_not_exist  # noqa: B018


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([1, 2], "JSON object"),
        ({"eos_token_id": []}, "eos_token_id"),
        ({"rope_parameters": 5}, "rope_parameters"),
        ({"num_hidden_layers": [4]}, "num_hidden_layers"),
        ({"hidden_size": {"a": 1}}, "hidden_size"),
    ],
)
def test_bad_config_json_shapes_are_value_errors_naming_the_field(data, field):
    """Not a raw TypeError / IndexError from deep inside."""
    with pytest.raises(ValueError, match=field):
        MixtralConfig.from_dict(data)


def test_scaled_rejects_zero_instead_of_using_the_default():
    with pytest.raises(ValueError, match="num_hidden_layers"):
        TINY.scaled(128, num_hidden_layers=0)
    with pytest.raises(ValueError, match="head_dim"):
        TINY.scaled(128, head_dim=0)
    assert TINY.scaled(128).num_hidden_layers == TINY.num_hidden_layers


def test_presets_cannot_be_changed_by_accident():
    with pytest.raises(TypeError):
        PRESETS["tiny"] = TINY.replace(hidden_size=128)
    assert get_config("tiny") is TINY


def test_validation_helpers_name_the_field():
    from moe_edu import validation as v

    assert v.positive_int("f", 3) == 3 and v.probability("p", 1) == 1 and v.token_id("t", None, 5) is None
    for call, message in [
        (lambda: v.positive_int("MyConfig.width", 0), r"MyConfig.width must be an int in \[1, inf\], got 0"),
        (lambda: v.positive_int("n", True), "n must be an int, got True"),
        (lambda: v.finite_float("x", float("nan")), "x must be a finite number"),
        (lambda: v.positive_float("lr", 0.0), "lr must be > 0"),
        (lambda: v.probability("p", 1.01), "p must be >= 0 and <= 1"),
        (lambda: v.boolean("flag", 1), "flag must be True or False"),
        (lambda: v.one_of("mode", "c", ("a", "b")), "mode must be one of"),
        (lambda: v.token_id("eos", 5, 5), r"eos must be an int in \[0, 4\]"),
        (lambda: v.int_in_range("k", 9, 1, 8), r"k must be an int in \[1, 8\], got 9"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()

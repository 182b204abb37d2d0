"""Memory budget: Mixtral 8x7B's numbers to the byte, and the formula against a real KV cache."""

import pytest
import torch

import moe_edu
from moe_edu.serving.expert_placement import expected_experts_hit
from moe_edu.serving.memory import (
    decode_step_bytes,
    dtype_bits,
    kv_bytes_per_token,
    kv_cache_bytes,
    kv_equals_active_weights,
    memory_budget,
)

MIXTRAL = moe_edu.PRESETS["mixtral-8x7b"]


def test_mixtral_8x7b_bf16():
    b = memory_budget(MIXTRAL, context_len=32768)
    assert b.kv_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    assert b.kv_total == 4 * 2**30
    assert b.weights_total == 46_702_792_704 * 2
    assert b.weights_active == 12_879_925_248 * 2
    assert b.expert_bytes == 3 * 4096 * 14336 * 2 == 352_321_536
    assert b.total == b.weights_total + b.kv_total
    assert round(b.weights_total / 1e9, 1) == 93.4


def test_gqa_and_batch_and_dtypes():
    no_gqa = MIXTRAL.replace(num_key_value_heads=32)
    assert memory_budget(no_gqa, context_len=32768).kv_total == 16 * 2**30
    b = memory_budget(MIXTRAL, context_len=4096, batch_size=32, weight_dtype="int4", kv_dtype=torch.float32)
    assert b.kv_total == 2 * 32 * 8 * 128 * 4 * 4096 * 32
    assert b.weights_total == 46_702_792_704 // 2
    assert kv_bytes_per_token(MIXTRAL, "int8") == 65_536
    assert dtype_bits(torch.bfloat16) == 16 and dtype_bits(torch.int8) == 8 and dtype_bits(3) == 3


def test_sliding_window_is_a_rolling_buffer():
    mistral_like = MIXTRAL.replace(sliding_window=4096)
    assert memory_budget(mistral_like, context_len=32768).kv_tokens == 4096
    assert memory_budget(mistral_like, context_len=1000).kv_tokens == 1000
    assert memory_budget(mistral_like, context_len=32768).kv_total == 131_072 * 4096


def test_kv_outweighs_active_weights():
    n = kv_equals_active_weights(MIXTRAL)
    assert n == -(-12_879_925_248 * 2 // 131_072)
    assert kv_equals_active_weights(MIXTRAL, batch_size=32) == -(-12_879_925_248 * 2 // (131_072 * 32))
    assert kv_equals_active_weights(MIXTRAL.replace(sliding_window=4096)) is None


def test_a_batched_decode_step_reads_nearly_every_expert():
    assert expected_experts_hit(8, 2, 1) == 2 and expected_experts_hit(8, 2, 0) == 0
    assert (
        expected_experts_hit(8, 2, 32) == pytest.approx(8 * (1 - 0.75**32)) and expected_experts_hit(8, 2, 32) > 7.999
    )
    one = decode_step_bytes(MIXTRAL, context_len=4096)
    assert one.weights == 12_879_925_248 * 2 and one.kv == 131_072 * 4096  # batch 1: the active weights
    big = decode_step_bytes(MIXTRAL, context_len=32768, batch_size=32)
    assert abs(big.weights / (46_702_792_704 * 2) - 1) < 1e-3  # batch 32: about all 93.4 GB
    assert big.kv == 128 * 2**30 and big.total == big.weights + big.kv
    with pytest.raises(ValueError, match="top_k"):
        expected_experts_hit(8, 9, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_formula_matches_the_decoders_cache(dtype):
    cfg = moe_edu.PRESETS["tiny"]
    torch.manual_seed(0)
    model = moe_edu.MixtralForCausalLM(cfg).to(dtype).eval()
    B, T = 3, 17
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        out = model(ids[:, :2], past_key_values=out.past_key_values, use_cache=True)  # two more tokens
    b = memory_budget(cfg, context_len=T + 2, batch_size=B, kv_dtype=dtype)
    assert kv_cache_bytes(out.past_key_values) == b.kv_total
    k = out.past_key_values[0][0]
    assert tuple(k.shape) == (B, cfg.num_key_value_heads, T + 2, cfg.attention_head_dim)


def test_weights_match_a_real_model():
    cfg = moe_edu.PRESETS["tiny"]
    model = moe_edu.MixtralForCausalLM(cfg).to(torch.bfloat16)
    real = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory_budget(cfg, context_len=1).weights_total == real


@pytest.mark.parametrize("bad", [{"context_len": 0}, {"context_len": 4, "batch_size": -1}, {"context_len": 2.5}])
def test_bad_input_names_the_field(bad):
    field = "batch_size" if "batch_size" in bad else "context_len"
    with pytest.raises(ValueError, match=field):
        memory_budget(MIXTRAL, **bad)
    with pytest.raises(ValueError, match="unknown dtype"):
        memory_budget(MIXTRAL, context_len=1, weight_dtype="fp7")

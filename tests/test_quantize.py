"""Weight-only quantisation: error bounds, packing, memory, and the model copy."""

import pytest
import torch

import moe_edu
from moe_edu.serving.quantize import (
    pack_int4,
    quantize,
    quantize_int4,
    quantize_int8,
    quantize_model_experts,
    unpack_int4,
)


def test_int8_round_trip_within_half_a_step():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    q = quantize_int8(w)
    assert q.codes.dtype == torch.int8 and q.scale.shape == (16, 1)
    err = (q.dequantize() - w).abs()
    assert (err <= q.scale / 2 + 1e-7).all()
    assert (q.codes.abs().amax(1) == 127).all()  # each row's largest weight uses the full range
    assert q.nbytes == 16 * 64 + 16 * 4


def test_int4_groups_and_packing():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    q = quantize_int4(w, group_size=16)
    assert q.codes.shape == (8, 32) and q.codes.dtype == torch.uint8 and q.scale.shape == (8, 4)
    err = (q.dequantize() - w).abs().reshape(8, 4, 16)
    assert (err <= q.scale[:, :, None] / 2 + 1e-6).all()
    assert q.nbytes == 8 * 32 + 8 * 4 * 4
    v = torch.arange(-8, 8).repeat(3, 2)  # (3, 32) every int4 value
    assert torch.equal(unpack_int4(pack_int4(v), 32), v.to(torch.int8))


def test_exact_values_survive():
    w = torch.tensor([[127.0, -64.0, 0.0, 1.0]])
    assert torch.equal(quantize_int8(w).dequantize(), w)
    w4 = torch.tensor([[7.0, -7.0, 0.0, 3.0]])
    assert torch.equal(quantize_int4(w4, group_size=4).dequantize(), w4)


def test_bad_input():
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(torch.randn(4, 10), group_size=4)
    with pytest.raises(ValueError, match="2-D"):
        quantize_int8(torch.randn(3))
    with pytest.raises(ValueError, match="scheme"):
        quantize(torch.randn(2, 4), "int3")


def test_model_copy_quantises_experts_and_optionally_the_router():
    torch.manual_seed(0)
    cfg = moe_edu.PRESETS["tiny"]
    model = moe_edu.MixtralForCausalLM(cfg).eval()
    q, stored = quantize_model_experts(model, "int8")
    E, H, I, L = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    assert stored == L * E * (3 * H * I + (2 * I + H) * 4)  # int8 codes + one fp32 scale per row
    a, b = model.model.layers[0].mlp, q.model.layers[0].mlp
    assert not torch.equal(a.experts.gate_up_proj, b.experts.gate_up_proj)
    assert torch.equal(a.gate.weight, b.gate.weight)  # router left in full precision
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, q.model.layers[0].self_attn.q_proj.weight)
    q2, stored4 = quantize_model_experts(model, "int4", group_size=32, router="int4")
    assert not torch.equal(a.gate.weight, q2.model.layers[0].mlp.gate.weight) and stored4 < stored
    ids = torch.randint(0, cfg.vocab_size, (1, 12))
    with torch.no_grad():
        assert (model(ids).logits - q(ids).logits).abs().max() < 1e-2


def test_symmetric_int4_uses_15_of_16_levels():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    codes = unpack_int4(quantize_int4(w, 16).codes, 64)
    assert codes.min() == -7 and codes.max() == 7  # -8, the nibble's 16th level, is never produced

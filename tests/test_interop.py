"""State-dict layouts: v5 fused, v4 per-expert, Mistral-native; strict all-or-nothing loading."""

import pytest
import torch

import moe_edu
from moe_edu import PRESETS, SparseMoeBlock, StateDictError
from moe_edu.layouts import detect_layout, v5_to_layout

CONFIG = PRESETS["tiny"]


@pytest.fixture
def block():
    torch.manual_seed(0)
    return SparseMoeBlock(CONFIG).eval()


@pytest.mark.parametrize("layout", ["v5", "v4", "mistral"])
def test_round_trip_through_every_layout(block, layout):
    sd = block.export_state_dict(layout)
    assert detect_layout(sd) == layout
    other = SparseMoeBlock(CONFIG).load_hf_state_dict(sd)
    for k, v in block.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_layout_key_names(block):
    assert set(block.export_state_dict("v5")) == {"gate.weight", "experts.gate_up_proj", "experts.down_proj"}
    v4 = block.export_state_dict("v4")
    assert v4["experts.3.w1.weight"].shape == (CONFIG.intermediate_size, CONFIG.hidden_size)
    assert v4["experts.3.w2.weight"].shape == (CONFIG.hidden_size, CONFIG.intermediate_size)
    assert torch.equal(v4["experts.3.w1.weight"], block.experts.w1[3])  # w1 = gate = first half
    assert torch.equal(v4["experts.3.w3.weight"], block.experts.w3[3])
    assert "feed_forward.experts.7.w3.weight" in block.export_state_dict("mistral")
    with pytest.raises(ValueError, match="layout"):
        block.export_state_dict("v3")


def test_prefixed_state_dict(block):
    sd = {f"model.layers.2.mlp.{k}": v for k, v in block.export_state_dict("v4").items()}
    sd["model.layers.2.self_attn.q_proj.weight"] = torch.zeros(1)  # other keys are ignored with a prefix
    other = SparseMoeBlock(CONFIG).load_hf_state_dict(sd, prefix="model.layers.2.mlp.")
    assert torch.equal(other.gate.weight, block.gate.weight)


def assert_untouched(target, before):
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was partly loaded"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda sd: sd.pop("gate.weight"), "missing keys.*gate.weight"),
        (lambda sd: sd.update(extra=torch.zeros(1)), "unexpected keys.*extra"),
        (
            lambda sd: sd.update({"experts.down_proj": torch.zeros(8, 64, 10)}),
            r"experts.down_proj: expected shape \(8, 64, 224\), got \(8, 64, 10\)",
        ),
        (lambda sd: sd.update({"gate.weight": torch.zeros(4, 64)}), r"gate.weight: expected shape \(8, 64\)"),
    ],
)
def test_mismatched_v5_state_dicts_are_listed_and_nothing_loads(block, mutate, message):
    target = SparseMoeBlock(CONFIG)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    sd = block.export_state_dict("v5")
    mutate(sd)
    with pytest.raises(StateDictError, match=message):
        target.load_hf_state_dict(sd)
    assert_untouched(target, before)


def test_v4_with_missing_and_extra_experts(block):
    target = SparseMoeBlock(CONFIG)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    sd = block.export_state_dict("v4")
    del sd["experts.5.w2.weight"]
    sd["experts.8.w1.weight"] = sd["experts.0.w1.weight"]
    with pytest.raises(StateDictError) as err:
        target.load_hf_state_dict(sd)
    assert "experts.5.w2.weight" in str(err.value) and "experts.8.w1.weight" in str(err.value)
    assert_untouched(target, before)
    sd = block.export_state_dict("v4")
    sd["experts.2.w3.weight"] = torch.zeros(10, 64)
    with pytest.raises(StateDictError, match=r"experts.2.w3.weight: expected shape \(224, 64\)"):
        target.load_hf_state_dict(sd)


def test_wrong_experts_count_and_types(block):
    small = SparseMoeBlock(CONFIG.replace(num_local_experts=4))
    with pytest.raises(StateDictError, match=r"missing|unexpected|expected shape"):
        small.load_hf_state_dict(block.export_state_dict("v5"))
    with pytest.raises(TypeError, match="mapping"):
        small.load_hf_state_dict([("gate.weight", torch.zeros(1))])
    with pytest.raises(StateDictError, match="prefix"):
        small.load_hf_state_dict(block.export_state_dict("v5"), prefix="model.")


def test_dtype_is_converted_on_load(block):
    sd = {k: v.to(torch.bfloat16) for k, v in block.export_state_dict("v5").items()}
    target = SparseMoeBlock(CONFIG).load_hf_state_dict(sd)
    assert target.gate.weight.dtype == torch.float32
    torch.testing.assert_close(target.gate.weight, block.gate.weight, rtol=1e-2, atol=1e-2)


def test_v5_to_v4_matches_transformers_conversion(block):
    # transformers builds gate_up_proj[e] = cat([w1, w3]) when it converts v4 checkpoints
    v5 = block.export_state_dict("v5")
    v4 = v5_to_layout(v5, "v4")
    for j in range(CONFIG.num_local_experts):
        fused = torch.cat([v4[f"experts.{j}.w1.weight"], v4[f"experts.{j}.w3.weight"]])
        assert torch.equal(fused, v5["experts.gate_up_proj"][j])


def test_integer_tensors_are_refused_with_a_clear_message():
    """One strict loader for memory and files: dtypes are checked with keys and shapes, before any copy."""
    block = SparseMoeBlock(PRESETS["tiny"])
    sd = {k: v.clone() for k, v in block.state_dict().items()}
    sd["gate.weight"] = sd["gate.weight"].long()
    before = block.gate.weight.detach().clone()
    with pytest.raises(StateDictError, match=r"gate.weight: expected a floating-point tensor, got dtype int64"):
        block.load_hf_state_dict(sd)
    assert torch.equal(block.gate.weight, before)


def test_one_loader_for_memory_and_files():
    import moe_edu.io.checkpoint as pretrained
    import moe_edu.layouts as interop
    import moe_edu.loading as loading

    assert interop.check_and_load is loading.check_and_load and pretrained.load_into is loading.load_into
    assert interop.StateDictError is loading.StateDictError is moe_edu.StateDictError

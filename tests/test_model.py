"""The Mixtral decoder against transformers' MixtralForCausalLM: logits, losses, masks, cache, generate, interop."""

import pytest
import torch

import moe_edu.attention
import moe_edu.model
from moe_edu import MixtralConfig, MixtralForCausalLM, StateDictError
from moe_edu.layouts import model_from_v5, model_to_v5
from moe_edu.rope import apply_rotary

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

BASE = {
    "vocab_size": 97,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "max_position_embeddings": 64,
}
CONFIGS = {  # GQA ratios 1, 2 and 8; E and k vary; head_dim != hidden/heads; other thetas
    "gqa1": MixtralConfig(**BASE, num_key_value_heads=8, num_local_experts=4, num_experts_per_tok=1, rope_theta=1e4),
    "gqa2": MixtralConfig(**BASE, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2),
    "gqa8": MixtralConfig(
        **BASE, num_key_value_heads=1, num_local_experts=6, num_experts_per_tok=3, head_dim=16, rope_theta=5e5
    ),
    "window": MixtralConfig(**BASE, num_key_value_heads=2, sliding_window=5, rms_norm_eps=1e-6),
}


def pair(cfg: MixtralConfig, seed: int = 0):
    """transformers' model (random init) and ours with the same weights, both in eval mode."""
    torch.manual_seed(seed)
    hf_cfg = cfg.to_hf()
    hf_cfg._attn_implementation = "sdpa"
    hf = transformers.MixtralForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # norms away from 1 so that their weights matter
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return hf, MixtralForCausalLM(cfg).load_hf_state_dict(hf.state_dict()).eval()


def ids_for(cfg, B=3, T=11, seed=1):
    return torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))  # (B, T)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_and_router_logits_match_transformers(name):
    cfg = CONFIGS[name]
    hf, ours = pair(cfg)
    ids = ids_for(cfg)
    with torch.no_grad():
        theirs = hf(input_ids=ids, output_router_logits=True)
        mine = ours(ids, output_router_logits=True)
    assert mine.logits.shape == (3, 11, cfg.vocab_size)
    assert (mine.logits - theirs.logits).abs().max().item() <= 1e-4
    assert len(mine.router_logits) == cfg.num_hidden_layers
    for a, b in zip(mine.router_logits, theirs.router_logits, strict=False):
        assert a.shape == (3 * 11, cfg.num_local_experts)
        assert (a - b).abs().max().item() <= 1e-5


def test_sliding_window_changes_logits_beyond_the_window():
    cfg = CONFIGS["window"]
    _, ours = pair(cfg)
    full = MixtralForCausalLM(cfg.replace(sliding_window=None)).load_hf_state_dict(ours.state_dict()).eval()
    ids = ids_for(cfg, T=12)
    with torch.no_grad():
        a, b = ours(ids).logits, full(ids).logits
    assert (a[:, :5] - b[:, :5]).abs().max() < 1e-5  # the first `window` tokens see the same keys (masks differ)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_left_padding_matches_transformers_on_real_tokens():
    cfg = CONFIGS["gqa2"]
    hf, ours = pair(cfg)
    ids = ids_for(cfg, B=2, T=9)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # row 0 is left-padded by 3
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, output_router_logits=True)
        mine = ours(ids, attention_mask=mask, output_router_logits=True)
        unpadded = ours(ids[:1, 3:]).logits
    real = mask.bool()
    assert (mine.logits[real] - theirs.logits[real]).abs().max().item() <= 1e-4
    assert torch.isfinite(mine.logits).all()
    assert (mine.aux_loss - theirs.aux_loss).abs().item() <= 1e-5  # padding left out of the aux loss alike
    assert mine.logits[0, 3:].shape == unpadded[0].shape  # and the real tokens ignore the padding ...
    assert not torch.allclose(mine.logits[0, 3:], unpadded[0])  # ... but keep their absolute positions


@pytest.mark.parametrize("name", ["gqa2", "gqa8"])
def test_loss_with_aux_loss_matches_transformers(name):
    cfg = CONFIGS[name].replace(router_aux_loss_coef=0.02)
    hf, ours = pair(cfg)
    ids = ids_for(cfg)
    labels = ids.clone()
    labels[:, :2] = -100
    with torch.no_grad():
        theirs = hf(input_ids=ids, labels=labels, output_router_logits=True)
        mine = ours(ids, labels=labels)
    assert abs(mine.aux_loss.item() - theirs.aux_loss.item()) <= 1e-5
    assert abs(mine.loss.item() - theirs.loss.item()) <= 1e-5
    assert mine.loss.item() != pytest.approx(mine.loss.item() - 0.02 * mine.aux_loss.item())


def test_z_loss_is_added_with_its_coefficient():
    cfg = CONFIGS["gqa2"]
    _, ours = pair(cfg)
    ids = ids_for(cfg)
    z = MixtralForCausalLM(cfg.replace(router_z_loss_coef=0.1)).load_hf_state_dict(ours.state_dict()).eval()
    with torch.no_grad():
        plain, with_z = ours(ids, labels=ids), z(ids, labels=ids)
    assert with_z.z_loss.item() > 0
    assert with_z.loss.item() == pytest.approx(plain.loss.item() + 0.1 * with_z.z_loss.item(), abs=1e-6)


def test_backward_gradients_match_transformers():
    cfg = CONFIGS["gqa2"]
    hf, ours = pair(cfg)
    hf.train(), ours.train()
    ids = ids_for(cfg)
    hf(input_ids=ids, labels=ids, output_router_logits=True).loss.backward()
    ours(ids, labels=ids).loss.backward()
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert (p.grad - theirs[name].grad).abs().max().item() <= 1e-5, name


@pytest.mark.parametrize("name", ["gqa2", "window"])
def test_kv_cache_equals_full_forward(name):
    cfg = CONFIGS[name]
    _, ours = pair(cfg)
    ids = ids_for(cfg, B=2, T=10)
    with torch.no_grad():
        full = ours(ids).logits  # (B, T, V)
        out = ours(ids[:, :4], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(4, 10):
            out = ours(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
    assert cache[0][0].shape == (2, cfg.num_key_value_heads, 10, cfg.attention_head_dim)
    assert (torch.cat(steps, dim=1) - full).abs().max().item() <= 1e-5


def test_greedy_generate_matches_transformers():
    cfg = CONFIGS["gqa2"].replace(eos_token_id=None, bos_token_id=None)
    hf, ours = pair(cfg)
    ids = ids_for(cfg, B=2, T=5)
    theirs = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    mine = ours.generate(ids, max_new_tokens=12)
    assert mine.shape == (2, 17)
    assert torch.equal(mine, theirs)


def test_sampling_is_seeded_and_stops_at_eos():
    cfg = CONFIGS["gqa2"]
    _, ours = pair(cfg)
    ids = ids_for(cfg, B=2, T=4)
    a = ours.generate(ids, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    b = ours.generate(ids, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 12)
    first = int(ours.generate(ids[:1], 1)[0, -1])
    stopped = ours.generate(ids[:1], 8, eos_token_id=first)
    assert stopped.shape == (1, 5)


# --- interop -------------------------------------------------------------------
def test_v4_keys_load_like_v5():
    cfg = CONFIGS["gqa2"]
    hf, ours = pair(cfg)
    v4 = model_from_v5(hf.state_dict(), cfg, "v4")
    assert "model.layers.1.block_sparse_moe.experts.7.w2.weight" in v4 and not any(".mlp." in k for k in v4)
    other = MixtralForCausalLM(cfg).load_hf_state_dict(v4)
    for k, v in ours.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    old_style = {k.replace(".block_sparse_moe.", ".mlp."): v for k, v in v4.items()}  # per-expert under mlp.
    assert torch.equal(MixtralForCausalLM(cfg).load_hf_state_dict(old_style).lm_head.weight, ours.lm_head.weight)


@pytest.mark.parametrize("name", ["gqa2", "gqa8"])
def test_mistral_keys_round_trip_and_rotary_permutation(name):
    cfg = CONFIGS[name]
    _, ours = pair(cfg)
    mistral = ours.hf_state_dict("mistral")
    assert "layers.0.attention.wq.weight" in mistral and "layers.1.feed_forward.experts.0.w1.weight" in mistral
    wq_hf, wq_m = ours.state_dict()["model.layers.0.self_attn.q_proj.weight"], mistral["layers.0.attention.wq.weight"]
    assert not torch.equal(wq_hf, wq_m)  # rows really are permuted
    back = model_to_v5(mistral, cfg)
    for k, v in ours.state_dict().items():
        assert torch.equal(back[k], v), k
    # Mistral's RoPE rotates interleaved pairs (complex numbers); transformers' rotates halves.
    D, T = cfg.attention_head_dim, 7
    x = torch.randn(T, cfg.hidden_size)  # (T, H)
    cos, sin = ours.model.rotary_emb(torch.arange(T), torch.float32)  # (T, D)
    q_hf = apply_rotary((x @ wq_hf.T).view(T, -1, D).transpose(0, 1), cos, sin)  # (nh, T, D)
    q_m = torch.view_as_complex((x @ wq_m.T).view(T, -1, D // 2, 2))  # (T, nh, D/2)
    angles = torch.polar(torch.ones(T, D // 2), torch.arange(T)[:, None] * ours.model.rotary_emb.inv_freq)  # (T, D/2)
    q_m = torch.view_as_real(q_m * angles[:, None]).transpose(0, 1)  # (nh, T, D/2, 2)
    assert (torch.cat([q_m[..., 0], q_m[..., 1]], dim=-1) - q_hf).abs().max().item() <= 1e-5


def test_mismatched_state_dict_lists_every_problem():
    cfg = CONFIGS["gqa2"]
    hf, ours = pair(cfg)
    sd = dict(hf.state_dict())
    del sd["model.norm.weight"]
    sd["model.extra.weight"] = torch.zeros(3)
    sd["lm_head.weight"] = torch.zeros(5, cfg.hidden_size)
    before = ours.lm_head.weight.clone()
    with pytest.raises(StateDictError) as err:
        ours.load_hf_state_dict(sd)
    msg = str(err.value)
    assert "model.norm.weight" in msg and "model.extra.weight" in msg and "lm_head.weight" in msg
    assert torch.equal(ours.lm_head.weight, before)  # all or nothing
    with pytest.raises(TypeError):
        ours.load_hf_state_dict([("lm_head.weight", before)])


def test_bad_inputs_raise_clear_errors():
    cfg = CONFIGS["gqa2"]
    _, ours = pair(cfg)
    with pytest.raises(TypeError, match="integer"):
        ours(torch.rand(1, 4))
    with pytest.raises(TypeError, match="integer"):
        ours(torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"torch.long.*uint8"):  # not torch's own "Expected tensor for argument"
        ours(torch.ones(1, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="vocab_size=97"):
        ours(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="vocab_size"):
        ours(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="batch, tokens"):
        ours(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        ours(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="labels shape"):
        ours(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        ours(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours.generate(torch.zeros(1, 60, dtype=torch.long), max_new_tokens=5)


def test_bf16_forward_is_close_to_fp32():
    cfg = CONFIGS["gqa2"]
    _, ours = pair(cfg)
    ids = ids_for(cfg)
    with torch.no_grad():
        ref = ours(ids).logits
        low = MixtralForCausalLM(cfg).load_hf_state_dict(ours.state_dict()).to(torch.bfloat16).eval()(ids).logits
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max().item() <= 0.05 * ref.abs().max().item()


@pytest.mark.gpu
def test_cuda_matches_cpu_and_generates():
    cfg = CONFIGS["window"]
    _, ours = pair(cfg)
    ids = ids_for(cfg)
    with torch.no_grad():
        ref = ours(ids, labels=ids)
        gpu = MixtralForCausalLM(cfg).load_hf_state_dict(ours.state_dict()).cuda().eval()
        out = gpu(ids.cuda(), labels=ids.cuda())
    assert (out.logits.cpu() - ref.logits).abs().max().item() <= 1e-3
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-3
    assert torch.equal(gpu.generate(ids.cuda(), 4).cpu()[:, :11], ids)


def test_generate_refuses_non_finite_logits_and_restores_the_mode():
    """The old generate() emitted token 0 for NaN logits, and left the model in eval mode when it raised."""
    cfg = CONFIGS["gqa2"]
    _, ours = pair(cfg)
    ours.train()
    with torch.no_grad():
        ours.lm_head.weight[3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite logits"):
        ours.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=3)
    assert ours.training  # restored although it raised
    for kwargs, field in [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"eos_token_id": cfg.vocab_size}, "eos_token_id"),
    ]:
        with pytest.raises(ValueError, match=field):
            ours.generate(torch.zeros(1, 4, dtype=torch.long), **{"max_new_tokens": 2, **kwargs})
    assert ours.training


def test_mixtral_model_returns_hidden_states_like_transformers():
    cfg = CONFIGS["gqa2"]
    hf, ours = pair(cfg)
    ids = ids_for(cfg)
    with torch.no_grad():
        theirs = hf.model(input_ids=ids)
        mine = ours.model(ids, use_cache=True)
        logits = ours(ids).logits
    assert mine.last_hidden_state.shape == (3, 11, cfg.hidden_size)
    assert (mine.last_hidden_state - theirs.last_hidden_state).abs().max().item() <= 1e-4
    assert torch.equal(ours.lm_head(mine.last_hidden_state), logits)  # the causal LM is the model + its head
    assert len(mine.router_logits) == len(mine.past_key_values) == cfg.num_hidden_layers
    with pytest.raises(ValueError, match="input_ids"):
        ours.model(torch.full((1, 3), cfg.vocab_size))


def test_dead_leftovers_are_gone():
    assert not hasattr(moe_edu.model, "attention_mask_for") and not hasattr(moe_edu.attention, "KVCache")


def test_setting_the_models_config_reaches_the_decoder():
    """Notebook 11 gives the passkey model a window by setting `model.config`: the mask must follow it."""
    cfg = moe_edu.PRESETS["tiny"].replace(num_hidden_layers=1)
    torch.manual_seed(0)
    model = moe_edu.MixtralForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 12))
    with torch.no_grad():
        dense = model(ids).logits
        model.config = cfg.replace(sliding_window=2)
        assert model.model.config is model.config and model.config.sliding_window == 2
        windowed = model(ids).logits
    assert torch.allclose(dense[0, :2], windowed[0, :2], atol=1e-5)  # within the window: the same
    assert not torch.allclose(dense[0, -1], windowed[0, -1], atol=1e-3)  # beyond it: not

"""Expert offloading: the LRU cache, the trace simulation, the real offloaded block, the cost model."""

import pytest
import torch
from safetensors.torch import save_file

import moe_edu
from moe_edu.serving.expert_cache import (
    LRUCache,
    RoutingTrace,
    prefetch_accuracy,
    random_trace,
    routing_trace,
    simulate_cache,
)
from moe_edu.serving.offload import OffloadedMoeBlock, offload_tokens_per_second

TINY = moe_edu.PRESETS["tiny"]


def test_lru_evicts_the_least_recently_used():
    c = LRUCache(2)
    for key in "abacdb":
        c.get(key)
    # a miss, b miss, a hit, c miss (evicts b), d miss (evicts a), b miss (evicts c)
    assert (c.hits, c.misses) == (1, 5) and list(c.entries) == ["d", "b"]
    zero = LRUCache(0)
    zero.get(1), zero.get(1)
    assert zero.misses == 2 and len(zero) == 0
    with pytest.raises(ValueError, match="capacity"):
        LRUCache(-1)


def trace_of(rows, guesses=None):
    chosen = torch.tensor(rows)[:, None, :]  # (T, 1, k)
    guess = torch.full_like(chosen, -1) if guesses is None else torch.tensor(guesses)[:, None, :]
    return RoutingTrace(chosen, guess, [0])


def test_simulation_counts_by_hand():
    # experts per token (k = 2), one layer, cache of 2
    s = simulate_cache(trace_of([[0, 1], [0, 1], [2, 3], [0, 1]]), 2)
    assert s.hits.tolist() == [2] and s.accesses.tolist() == [8] and s.loads_per_token == 6 / 4
    assert simulate_cache(trace_of([[0, 1], [2, 3]]), 4).hit_rate == 0.0
    assert simulate_cache(trace_of([[0, 1], [1, 0]]), 8).hit_rate == 0.5


def test_simulation_never_evicts_an_expert_the_token_still_needs():
    # cache [0, 1] after the first token, 0 least recently used; the second token needs 2 and 0.
    # Looking 2 up first would evict 0 and then miss it; a server keeps 0 (needed) and evicts 1.
    s = simulate_cache(trace_of([[0, 1], [2, 0]]), 2)
    assert s.hits.tolist() == [1] and s.loads_per_token == 3 / 2
    # with fewer slots than k, the token's own experts must take turns: one slot, 2 then 0 then 0 again
    assert simulate_cache(trace_of([[2, 0], [0, 5]]), 1).hits.tolist() == [1]
    with pytest.raises(ValueError, match="capacity"):
        simulate_cache(trace_of([[0, 1]]), -1)


@pytest.mark.parametrize("capacity", [1, 2, 4, 6])
def test_uniform_routing_hits_c_over_e(capacity):
    t = random_trace(20_000, 1, 8, 2, seed=0)
    assert (t.chosen[:, :, 0] != t.chosen[:, :, 1]).all()  # k distinct experts per token
    assert abs(simulate_cache(t, capacity).hit_rate - capacity / 8) < 0.01


def test_prefetch_turns_right_guesses_into_hits():
    chosen = torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, 7]]])  # (T=2, L=2, k=2)
    right = torch.tensor([[[-1, -1], [2, 3]], [[-1, -1], [6, 7]]])
    wrong = torch.tensor([[[-1, -1], [0, 1]], [[-1, -1], [0, 1]]])
    good = simulate_cache(RoutingTrace(chosen, right, [0]), 2, prefetch=True)
    bad = simulate_cache(RoutingTrace(chosen, wrong, [0]), 2, prefetch=True)
    assert good.hits.tolist() == [0, 4] and bad.hits.tolist() == [0, 0]
    assert good.prefetched.tolist() == [0, 4] and bad.prefetched.tolist() == [0, 4]  # evicted, reloaded
    acc = prefetch_accuracy(RoutingTrace(chosen, right, [0]))
    assert torch.isnan(acc[0]) and acc[1] == 1.0


def test_shuffling_keeps_the_decisions():
    t = trace_of([[0, 1], [0, 2], [3, 4], [5, 6]])
    s = t.shuffled(seed=1)
    assert sorted(map(tuple, s.chosen[:, 0].tolist())) == sorted(map(tuple, t.chosen[:, 0].tolist()))


def test_routing_trace_matches_the_models_router_logits():
    torch.manual_seed(0)
    model = moe_edu.MixtralForCausalLM(TINY).eval()
    docs = [torch.randint(0, TINY.vocab_size, (9,)).tolist(), torch.randint(0, TINY.vocab_size, (5,)).tolist()]
    trace = routing_trace(model, docs)
    assert trace.chosen.shape == trace.guess.shape == (14, TINY.num_hidden_layers, 2) and trace.doc_starts == [0, 9]
    with torch.no_grad():
        out = model(torch.tensor(docs[0])[None], output_router_logits=True)
    assert torch.equal(trace.chosen[:9, 2], torch.topk(out.router_logits[2], 2).indices)
    assert (trace.guess[:, 0] == -1).all() and (trace.guess[:, 1:] >= 0).all()


@pytest.mark.parametrize("cache_size", [0, 2, 8])
def test_offloaded_block_equals_the_resident_block(tmp_path, cache_size):
    torch.manual_seed(0)
    block = moe_edu.SparseMoeBlock(TINY).eval()
    off = OffloadedMoeBlock.from_block(block, tmp_path / "experts.safetensors", cache_size=cache_size)
    one_expert = 3 * TINY.hidden_size * TINY.intermediate_size * 4
    x = torch.randn(2, 6, TINY.hidden_size)
    with torch.no_grad():
        y, logits = block(x)
        y_off, logits_off = off(x)
        for t in range(3):  # decoding: one token at a time
            step = off(x[:1, t : t + 1])[0]
            assert (step - block(x[:1, t : t + 1])[0]).abs().max() < 1e-6
    assert (y - y_off).abs().max() < 1e-6 and torch.equal(logits, logits_off)
    assert off.bytes_read == (off.cache.misses) * one_expert
    if cache_size == 0:
        assert off.cache.hits == 0
    if cache_size == 8:
        assert off.cache.misses == len(
            set(torch.topk(logits, 2).indices.reshape(-1).tolist())
            | set(torch.topk(block(x[:1, :3])[1], 2).indices.reshape(-1).tolist())
        )


def test_offloaded_block_never_evicts_an_expert_the_token_still_needs(tmp_path):
    torch.manual_seed(0)
    block = moe_edu.SparseMoeBlock(TINY).eval()
    off = OffloadedMoeBlock.from_block(block, tmp_path / "experts.safetensors", cache_size=2)
    x = torch.randn(1, 1, TINY.hidden_size)
    with torch.no_grad():
        first, second = block.gate(x[0]).expert_ids[0].tolist()
        other = next(e for e in range(TINY.num_local_experts) if e not in (first, second))
        off.expert(second), off.expert(other)  # cache: [second (least recent), other]
        hits, misses = off.cache.hits, off.cache.misses
        y = off(x)[0]
    assert (off.cache.hits - hits, off.cache.misses - misses) == (1, 1)  # `second` stays, `other` goes
    assert set(off.cache.entries) == {first, second}
    assert (y - block(x)[0]).abs().max() < 1e-6


@pytest.mark.slow
def test_offloaded_model_generates_the_same_tokens(tmp_path):
    torch.manual_seed(0)
    model = moe_edu.MixtralForCausalLM(TINY).eval()
    prompt = torch.randint(0, TINY.vocab_size, (1, 5))
    want = model.generate(prompt, max_new_tokens=6)
    for i, layer in enumerate(model.model.layers):
        layer.mlp = OffloadedMoeBlock.from_block(layer.mlp, tmp_path / f"layer{i}.safetensors", cache_size=2)
    assert torch.equal(model.generate(prompt, max_new_tokens=6), want)
    assert sum(layer.mlp.bytes_read for layer in model.model.layers) > 0


def test_cost_model_by_hand():
    cfg = moe_edu.PRESETS["mixtral-8x7b"]
    expert = 3 * 4096 * 14336 * 2
    active = moe_edu.count_parameters(cfg).active * 2
    tps = offload_tokens_per_second(cfg, 10, pcie_gbs=32, device_gbs=1000)
    assert tps == pytest.approx(1 / (10 * expert / 32e9 + active / 1000e9))
    assert offload_tokens_per_second(cfg, 0, pcie_gbs=32, device_gbs=1000) == pytest.approx(1000e9 / active)
    fast = offload_tokens_per_second(cfg, 10, pcie_gbs=32, device_gbs=1000, overlap=True)
    assert fast == pytest.approx(32e9 / (10 * expert))
    assert offload_tokens_per_second(cfg, 10, pcie_gbs=32, weight_dtype="int4") > tps
    # prefetched loads overlap with the device's reads; demand misses do not
    pre = offload_tokens_per_second(cfg, 2, prefetched=8, pcie_gbs=32, device_gbs=1000)
    assert pre == pytest.approx(1 / (2 * expert / 32e9 + max(8 * expert / 32e9, active / 1000e9)))
    assert offload_tokens_per_second(cfg, 0, prefetched=0.01, pcie_gbs=32) == pytest.approx(1000e9 / active)
    # 4-bit experts, shared weights (attention, embeddings, router) still in bf16: about 113 tokens/s, not 155
    p = moe_edu.count_parameters(cfg)
    four = offload_tokens_per_second(cfg, 0, pcie_gbs=32, weight_dtype="int4")
    assert four == pytest.approx(1000e9 / (p.active_experts / 2 + (p.active - p.active_experts) * 2))
    assert round(four) == 113
    assert round(offload_tokens_per_second(cfg, 0, pcie_gbs=32, weight_dtype="int4", shared_dtype="int4")) == 155
    with pytest.raises(ValueError, match="bandwidth"):
        offload_tokens_per_second(cfg, 1, pcie_gbs=0)
    with pytest.raises(ValueError, match="prefetched"):
        offload_tokens_per_second(cfg, 1, pcie_gbs=32, prefetched=-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_block_loads_experts_onto_the_gpu(tmp_path):
    torch.manual_seed(0)
    block = moe_edu.SparseMoeBlock(TINY).eval()
    off = OffloadedMoeBlock.from_block(block, tmp_path / "experts.safetensors", cache_size=2, device="cuda").to("cuda")
    x = torch.randn(2, 5, TINY.hidden_size)
    with torch.no_grad():
        y, logits = block(x)
        y_gpu, logits_gpu = off(x.cuda())
    assert off.expert(0)[0].device.type == "cuda"
    assert (y - y_gpu.cpu()).abs().max() < 1e-5 and (logits - logits_gpu.cpu()).abs().max() < 1e-5


def test_two_layers_cannot_share_one_experts_file_silently(tmp_path):
    """The docstring's example in a loop gave every layer the last layer's experts: logits off by 9.5, no error."""
    torch.manual_seed(0)
    model = moe_edu.MixtralForCausalLM(TINY).eval()
    path = tmp_path / "experts.safetensors"
    first = OffloadedMoeBlock.from_block(model.model.layers[0].mlp, path, cache_size=2, layer=0)
    with pytest.raises(FileExistsError, match="one file per layer"):
        OffloadedMoeBlock.from_block(model.model.layers[1].mlp, path, cache_size=2, layer=1)
    second = OffloadedMoeBlock.from_block(model.model.layers[1].mlp, path, cache_size=2, layer=1, overwrite=True)
    assert (first.layer, second.layer) == ("0", "1") and first.block_id != second.block_id
    x = torch.randn(1, 4, TINY.hidden_size)
    with torch.no_grad(), pytest.raises(RuntimeError, match="was rewritten"):
        first(x)  # its file now holds layer 1's experts: refused, not used
    with torch.no_grad():
        assert (second(x)[0] - model.model.layers[1].mlp(x)[0]).abs().max() < 1e-6


def test_a_bad_experts_file_is_refused_at_construction_naming_it(tmp_path):
    """Raw SafetensorError / ValueError / matmul errors mid-forward, none naming the file."""
    torch.manual_seed(0)
    block = moe_edu.SparseMoeBlock(TINY).eval()
    good = {}
    for e in range(TINY.num_local_experts):
        good[f"experts.{e}.gate_up_proj"] = block.experts.gate_up_proj[e].detach().contiguous()
        good[f"experts.{e}.down_proj"] = block.experts.down_proj[e].detach().contiguous()
    cases = {
        "eight": (good, {"num_experts": "eight"}, "num_experts='eight'"),
        "missing": ({k: v for k, v in good.items() if k != "experts.1.down_proj"}, {}, "lacks"),
        "wider": ({k: torch.zeros(v.shape[0], v.shape[1] + 1) for k, v in good.items()}, {}, "shapes"),
        "fp64": ({k: v.double() if "down" in k else v for k, v in good.items()}, {}, "dtypes"),
    }
    for name, (tensors, meta, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta or None)
        with pytest.raises(ValueError, match=message) as err:
            OffloadedMoeBlock(block.gate, path, cache_size=2)
        assert str(path) in str(err.value), name
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read the experts file"):
        OffloadedMoeBlock(block.gate, tmp_path / "garbage.safetensors", cache_size=2)

"""Properties of the block: every dispatch agrees with the loop reference, in values and gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_edu import DISPATCHES, PRESETS, SparseMoeBlock, softmax_topk, topk_softmax
from moe_edu.dispatch import grouped_dispatch, loop_dispatch
from moe_edu.experts import Experts
from moe_edu.moe_block import MoEBlock
from moe_edu.routing import TopKRouter
from moe_edu.variants.noisy_topk import NoisyTopKRouter

FAST = settings(max_examples=25, deadline=None)


def make_block(e, k, h=16, i=24, seed=0, dtype=torch.float32, dispatch="grouped"):
    torch.manual_seed(seed)
    config = PRESETS["tiny"].replace(
        hidden_size=h,
        intermediate_size=i,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=e,
        num_experts_per_tok=k,
    )
    block = SparseMoeBlock(config, dispatch=dispatch).to(dtype)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, p.shape[-1] ** -0.5)
    return block


experts_and_k = st.integers(2, 16).flatmap(lambda e: st.tuples(st.just(e), st.integers(1, min(4, e))))


@FAST
@given(ek=experts_and_k, tokens=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_all_dispatch_paths_agree_in_values_and_gradients(ek, tokens, seed):
    e, k = ek
    block = make_block(e, k, seed=seed)
    x = torch.randn(1, tokens, 16, generator=torch.Generator().manual_seed(seed))
    results = {}
    for name in DISPATCHES:
        block.zero_grad()
        block.dispatch = name
        xi = x.clone().requires_grad_(True)
        y, _ = block(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[name] = (y.detach(), xi.grad, [p.grad.clone() for p in block.parameters()])
    ref = results["loop"]
    for name, (y, gx, gp) in results.items():
        torch.testing.assert_close(y, ref[0], rtol=1e-5, atol=1e-5, msg=f"{name} values")
        torch.testing.assert_close(gx, ref[1], rtol=1e-4, atol=1e-5, msg=f"{name} input grad")
        for a, b in zip(gp, ref[2], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{name} weight grad")


@FAST
@given(ek=experts_and_k, tokens=st.integers(1, 30), scale=st.floats(0.01, 30))
def test_combine_weights_are_positive_and_sum_to_one(ek, tokens, scale):
    e, k = ek
    logits = torch.randn(tokens, e) * scale
    w, idx = softmax_topk(logits, k)
    assert w.dtype == torch.float32 and w.shape == idx.shape == (tokens, k)
    assert (w > 0).all() or scale > 20  # extreme logits may underflow to exactly 0
    torch.testing.assert_close(w.sum(-1), torch.ones(tokens))
    assert (idx >= 0).all() and (idx < e).all()
    assert all(len(set(row)) == k for row in idx.tolist())  # k distinct experts per token
    w2, idx2 = topk_softmax(logits, k)  # the other order gives the same routing
    assert torch.equal(idx, idx2)
    torch.testing.assert_close(w, w2)


@FAST
@given(e=st.integers(2, 8), tokens=st.integers(1, 20), seed=st.integers(0, 1000))
def test_k_equal_e_is_the_dense_softmax_mixture(e, tokens, seed):
    block = make_block(e, e, seed=seed)
    x = torch.randn(tokens, 16)
    with torch.no_grad():
        y, logits = block(x[None])
        probs = torch.softmax(logits, -1)  # (T, E)
        dense = torch.einsum("te,eth->th", probs, block.experts.dense(x))
    torch.testing.assert_close(y[0], dense, rtol=1e-5, atol=1e-5)


@FAST
@given(ek=experts_and_k, tokens=st.integers(2, 30), seed=st.integers(0, 1000))
def test_permuting_tokens_permutes_outputs(ek, tokens, seed):
    block = make_block(*ek, seed=seed)
    x = torch.randn(1, tokens, 16)
    perm = torch.randperm(tokens)
    with torch.no_grad():
        y, logits = block(x)
        yp, logitsp = block(x[:, perm])
    torch.testing.assert_close(yp, y[:, perm], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logitsp, logits[perm])


@pytest.mark.parametrize("name", sorted(DISPATCHES))
def test_gradcheck_float64(name):
    block = make_block(4, 2, h=8, i=5, dtype=torch.float64, dispatch=name)
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    params = tuple(block.experts.parameters())
    # routing is piecewise constant in x: small eps stays inside one routing region
    assert torch.autograd.gradcheck(lambda x: block(x)[0], (x,), eps=1e-6, atol=1e-5)
    weights = [p.detach().clone().requires_grad_(True) for p in params]
    y = lambda a, b: torch.func.functional_call(block, {"experts.gate_up_proj": a, "experts.down_proj": b}, (x,))[0]
    assert torch.autograd.gradcheck(y, tuple(weights), eps=1e-6, atol=1e-5)


def test_router_gets_gradients_through_the_weights():
    block = make_block(8, 2)
    y, _ = block(torch.randn(1, 7, 16))
    y.sum().backward()
    assert block.gate.weight.grad is not None and block.gate.weight.grad.abs().sum() > 0


def test_loop_reference_is_the_definition():
    """y[t] = sum_j w[t,j] * expert_{chosen[t,j]}(x[t]), written token by token."""
    block = make_block(6, 3, seed=3)
    x = torch.randn(9, 16)
    with torch.no_grad():
        routing = block.gate(x)
        w, chosen = routing.weights, routing.expert_ids
        want = torch.stack(
            [
                sum(w[t, j] * block.experts.expert(int(chosen[t, j]), x[t : t + 1])[0] for j in range(3))
                for t in range(9)
            ]
        )
        torch.testing.assert_close(loop_dispatch(x, block.experts, w, chosen), want)


def test_jitter_noise_only_in_training():
    config = PRESETS["tiny"].replace(router_jitter_noise=0.1)
    block = SparseMoeBlock(config)
    x = torch.randn(1, 6, config.hidden_size)
    block.eval()
    assert torch.equal(block(x)[0], block(x)[0])
    block.train()
    torch.manual_seed(0)
    a = block(x)[0]
    assert not torch.equal(a, block(x)[0])
    assert torch.equal(x, x.clone())  # the input is not modified in place


# --- bad input -----------------------------------------------------------------
def test_bad_inputs_get_clear_errors():
    block = SparseMoeBlock(PRESETS["tiny"])
    with pytest.raises(ValueError, match=r"hidden_size=64\), got \(2, 3, 32\)"):
        block(torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="shape"):
        block(torch.randn(3, 64))
    with pytest.raises(TypeError, match=r"floating-point.*torch.int64"):
        block(torch.ones(1, 2, 64, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch.Tensor"):
        block([[0.0] * 64])
    with pytest.raises(ValueError, match="unknown dispatch 'fast'"):
        SparseMoeBlock(PRESETS["tiny"], dispatch="fast")
    with pytest.raises(ValueError, match="order"):
        SparseMoeBlock(PRESETS["tiny"], routing_order="random")


@pytest.mark.parametrize("name", sorted(DISPATCHES))
def test_empty_batch_is_defined(name):
    block = SparseMoeBlock(PRESETS["tiny"], dispatch=name)
    for shape in [(0, 5, 64), (2, 0, 64)]:
        y, logits = block(torch.randn(*shape))
        assert y.shape == shape and logits.shape == (0, 8)


def test_bf16_runs_with_router_in_fp32():
    block = SparseMoeBlock(PRESETS["tiny"]).to(torch.bfloat16)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    y, logits = block(x)
    assert y.dtype == torch.bfloat16 and logits.dtype == torch.float32
    ref = SparseMoeBlock(PRESETS["tiny"], dispatch="loop").to(torch.bfloat16)
    ref.load_state_dict(block.state_dict())
    torch.testing.assert_close(y, ref(x)[0], rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_matches_cpu_reference(dtype):
    block = make_block(8, 2, h=64, i=128)
    x = torch.randn(3, 17, 64)
    want = block(x)[0]
    gpu = make_block(8, 2, h=64, i=128).to("cuda", dtype)
    y, logits = gpu(x.to("cuda", dtype))
    assert y.device.type == "cuda" and y.dtype == dtype and logits.dtype == torch.float32
    torch.testing.assert_close(y.float().cpu(), want, rtol=5e-2, atol=5e-2)


def test_block_and_input_dtypes_must_agree():
    block = SparseMoeBlock(PRESETS["tiny"])
    x = torch.randn(1, 3, PRESETS["tiny"].hidden_size, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"float32 weights but x is torch.float64"):
        block(x)
    y, _ = block.to(torch.float64)(x)
    assert y.dtype == torch.float64 and y.shape == x.shape


def test_experts_are_not_called_silently_dense():
    experts = make_block(4, 2).experts
    x = torch.randn(5, 16)
    with pytest.raises(TypeError, match=r"experts\.dense\(x\)"):
        experts(x)  # calling the module used to run every expert on every row without saying so
    every = experts.dense(x)  # (E, N, H), by name
    assert every.shape == (4, 5, 16)
    torch.testing.assert_close(every[2], experts.expert(2, x))


def test_shared_is_always_an_attribute_and_each_part_resets_itself():
    block = make_block(4, 2)
    assert block.shared is None and "shared" not in dict(block.named_children())
    torch.manual_seed(0)
    noisy = MoEBlock(NoisyTopKRouter(16, 4, 2), Experts(4, 16, 24), shared=Experts(1, 16, 24), initializer_range=0.5)
    assert torch.equal(noisy.gate.noise.weight, torch.zeros(4, 16))  # the router zeroes its own W_noise
    assert not any(hasattr(p, "zero_init") for p in noisy.parameters())  # no hidden protocol on a Parameter
    for p in (noisy.gate.weight, noisy.experts.gate_up_proj, noisy.shared.down_proj):
        assert 0.4 < float(p.detach().std()) < 0.6  # normal(0, initializer_range)
    flat = torch.randn(3, 16)
    with torch.no_grad():
        y, r = noisy.eval().mix(flat)
        routed = loop_dispatch(flat, noisy.experts, r.weights, r.expert_ids)  # (3, H)
        torch.testing.assert_close(y, routed + noisy.shared.expert(0, flat))  # shared: weight 1, every token


def test_dispatch_is_resolved_once_to_a_function():
    block = make_block(4, 2)
    assert block.dispatch is grouped_dispatch and "dispatch=grouped_dispatch" in repr(block)
    block.dispatch = "loop"  # a name is resolved when set, not at every forward
    assert block.dispatch is loop_dispatch
    with pytest.raises(ValueError, match="unknown dispatch"):
        block.dispatch = "nope"
    with pytest.raises(ValueError, match="unknown dispatch"):
        MoEBlock(TopKRouter(16, 4, 2), Experts(4, 16, 24), dispatch="nope")

"""CUDA: bf16/fp16 dispatch equals the loop reference (values and gradients), grouped_mm is used, no host syncs."""

import pytest
import torch

from moe_edu import DISPATCHES, MixtralConfig, SparseMoeBlock
from moe_edu.grouped_mm import grouped_matmul, grouped_mm_kernel_available

pytestmark = pytest.mark.gpu

CONFIG = MixtralConfig(
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=1,
    num_local_experts=8,
    num_experts_per_tok=2,
)


def run(dispatch, dtype, x, state):
    block = SparseMoeBlock(CONFIG, dispatch=dispatch).to("cuda")
    block.load_state_dict(state)
    block.to(dtype)
    x = x.clone().to(dtype).requires_grad_(True)
    y, logits = block(x)
    (y.float() * torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)).sum().backward()
    grads = [x.grad] + [p.grad for p in block.parameters()]
    return y.float(), logits, [g.float() for g in grads]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [1, 8, 300])
@pytest.mark.parametrize("dispatch", sorted(set(DISPATCHES) - {"loop"}))
def test_low_precision_matches_loop(dispatch, dtype, tokens):
    torch.manual_seed(0)
    state = SparseMoeBlock(CONFIG).state_dict()
    x = torch.randn(2, tokens, CONFIG.hidden_size, device="cuda")
    y0, l0, g0 = run("loop", dtype, x, state)
    y, logits, g = run(dispatch, dtype, x, state)
    assert logits.dtype == torch.float32  # router in fp32
    torch.testing.assert_close(logits, l0)
    scale = y0.abs().max()
    assert (y - y0).abs().max() <= 2e-2 * scale
    for a, b in zip(g, g0, strict=True):
        assert (a - b).abs().max() <= 3e-2 * b.abs().max() + 1e-6


def test_grouped_mm_kernel_is_used_for_bf16():
    w = torch.randn(4, 64, 32, device="cuda", dtype=torch.bfloat16)
    if torch.cuda.get_device_capability() >= (8, 0) and hasattr(torch.nn.functional, "grouped_mm"):
        assert grouped_mm_kernel_available(w, w)
    counts = torch.tensor([3, 0, 5, 2], device="cuda")
    x = torch.randn(10, 64, device="cuda", dtype=torch.bfloat16)
    got = grouped_matmul(x, w, counts).float()
    want = torch.cat([x[:3] @ w[0], x[3:8] @ w[2], x[8:] @ w[3]]).float()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_grouped_dispatch_has_no_host_sync():
    block = SparseMoeBlock(CONFIG).to("cuda", torch.bfloat16)
    if not grouped_mm_kernel_available(block.experts.gate_up_proj, block.experts.gate_up_proj):
        pytest.skip("no grouped_mm kernel on this GPU")
    x = torch.randn(1, 64, CONFIG.hidden_size, device="cuda", dtype=torch.bfloat16)
    block(x)  # warm up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            block(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")

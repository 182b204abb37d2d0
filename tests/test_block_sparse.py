"""Block-sparse dispatch (MegaBlocks' formulation) equals the loop reference and pads only to the block size."""

import pytest
import torch

from moe_edu import softmax_topk
from moe_edu.block_sparse import block_layout, block_sparse_dispatch, block_topology
from moe_edu.dispatch import DISPATCHES
from moe_edu.experts import Experts


def _setup(T=40, H=16, I=32, E=8, k=2, seed=0, skew=0.0):
    g = torch.Generator().manual_seed(seed)
    experts = Experts(E, H, I)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(E, 2 * I, H, generator=g) * 0.2)
        experts.down_proj.copy_(torch.randn(E, H, I, generator=g) * 0.2)
    x = torch.randn(T, H, generator=g)  # (T, H)
    logits = torch.randn(T, E, generator=g)  # (T, E)
    logits[:, 3] += skew  # (T,) a popular expert
    weights, chosen = softmax_topk(logits, k)  # (T, k), (T, k)
    return x, experts, weights, chosen


@pytest.mark.parametrize("block", [1, 4, 8, 16, 32])
@pytest.mark.parametrize("skew", [0.0, 3.0])
def test_equals_the_loop_reference(block, skew):
    x, experts, weights, chosen = _setup(skew=skew)
    with torch.no_grad():
        ref = DISPATCHES["loop"](x, experts, weights, chosen)  # (T, H)
        out = block_sparse_dispatch(x, experts, weights, chosen, block=block)
    assert torch.allclose(out, ref, atol=1e-5)


def test_gradients_match_the_loop():
    x, experts, weights, chosen = _setup(T=12)
    x.requires_grad_(True)
    block_sparse_dispatch(x, experts, weights, chosen, block=8).square().sum().backward()
    g_block = (x.grad.clone(), experts.gate_up_proj.grad.clone())
    x.grad, experts.gate_up_proj.grad = None, None
    DISPATCHES["loop"](x, experts, weights, chosen).square().sum().backward()
    assert torch.allclose(g_block[0], x.grad, atol=1e-5)
    assert torch.allclose(g_block[1], experts.gate_up_proj.grad, atol=1e-5)


def test_padding_is_below_one_block_per_expert():
    counts = torch.tensor([0, 5, 16, 17, 1, 0, 31, 2])
    lay = block_layout(counts, 16)
    assert lay.padded.tolist() == [0, 16, 16, 32, 16, 0, 32, 16]
    assert bool(((lay.padded - counts) < 16).all()) and bool((lay.padded % 16 == 0).all())
    assert int((lay.source >= 0).sum()) == int(counts.sum())
    assert lay.source[lay.source >= 0].tolist() == list(range(int(counts.sum())))  # sorted order kept


def test_topology_is_block_diagonal():
    counts = torch.tensor([3, 0, 9, 4])
    top = block_topology(counts, 4, 8)  # row blocks: 1 + 0 + 3 + 1 = 5; column blocks: 4 experts x 2
    assert tuple(top.shape) == (5, 8)
    assert top.sum(1).tolist() == [2] * 5  # each row block meets its own expert's 2 column blocks only
    assert top[:, 2:4].sum().item() == 0  # expert 1 received nothing: its columns are never computed
    assert top.sum().item() == 2 * 5


def test_block_must_divide_the_columns():
    x, experts, weights, chosen = _setup(I=30)
    with pytest.raises(ValueError, match="block"):
        block_sparse_dispatch(x, experts, weights, chosen, block=16)
    with pytest.raises(ValueError, match="block"):
        block_topology(torch.tensor([1, 2]), 16, 30)

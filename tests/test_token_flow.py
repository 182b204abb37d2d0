"""The token-flow diagrams are drawn from the routing: their blocks, queues and outcomes match it."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_hex

from moe_edu import softmax_topk
from moe_edu.block_sparse import block_layout
from moe_edu.capacity import capacity_dispatch, expert_capacity, keep_within_capacity
from moe_edu.course.palette import EXPERT_PALETTE
from moe_edu.course.token_flow import (
    capacity_layout,
    draw_block_topology,
    draw_capacity_overflow,
    draw_token_flow,
    token_flow_layout,
)
from moe_edu.experts import Experts


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _routing(T=8, E=8, k=2, seed=0, skew=0.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, E, generator=g)  # (T, E)
    logits[:, 2] += skew  # (T,) a popular expert, so capacity overflows
    return softmax_topk(logits, k)  # (T, k), (T, k)


def _patches(fig, prefix):
    return {p.get_gid(): p for p in fig.axes[0].patches if (p.get_gid() or "").startswith(prefix)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layout_is_the_sort_of_the_routing(seed):
    weights, chosen = _routing(seed=seed)
    lay = token_flow_layout(chosen, weights, 8)
    assert lay.counts == torch.bincount(chosen.reshape(-1), minlength=8).tolist()
    flat = chosen.reshape(-1)
    assert [int(flat[i]) for i in lay.order] == sorted(flat.tolist())  # grouped by expert
    for e in range(8):  # stable: each block lists its tokens in token order
        block = lay.order[lay.starts[e] : lay.starts[e] + lay.counts[e]]
        assert block == sorted(block) and all(lay.expert[i] == e for i in block)
    assert sorted(lay.order) == list(range(chosen.numel()))  # a permutation: un-permute is its inverse


@pytest.mark.parametrize("seed", [0, 3])
def test_drawn_blocks_match_the_routing_counts(seed):
    weights, chosen = _routing(seed=seed)
    counts = torch.bincount(chosen.reshape(-1), minlength=8).tolist()
    fig = draw_token_flow(chosen, weights, 8)
    blocks = _patches(fig, "expert-block-")
    assert {int(g.rsplit("-", 1)[1]) for g in blocks} == {e for e in range(8) if counts[e]}  # idle experts: no block
    sorted_boxes = _patches(fig, "sorted-")
    assert len(sorted_boxes) == chosen.numel()
    for gid, block in blocks.items():
        e = int(gid.rsplit("-", 1)[1])
        top, bottom = block.get_y(), block.get_y() + block.get_height()
        inside = [p for p in sorted_boxes.values() if top < p.get_y() + p.get_height() / 2 < bottom]  # centres
        assert len(inside) == counts[e], f"expert {e}: block spans {len(inside)} rows, routing has {counts[e]}"
        assert all(to_hex(p.get_facecolor()) == EXPERT_PALETTE[e] for p in inside)
        assert to_hex(block.get_facecolor()) == EXPERT_PALETTE[e]


def test_router_column_shows_each_tokens_choice():
    weights, chosen = _routing(T=6)
    fig = draw_token_flow(chosen, weights, 8)
    route = _patches(fig, "route-")
    for i, e in enumerate(chosen.reshape(-1).tolist()):
        assert to_hex(route[f"route-{i}"].get_facecolor()) == EXPERT_PALETTE[e]
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"e{int(chosen[0, 0])}   w={float(weights[0, 0]):.2f}" in texts


@pytest.mark.parametrize("cf", [0.5, 1.0, 1.25])
def test_capacity_layout_matches_the_library(cf):
    weights, chosen = _routing(T=16, seed=4, skew=2.5)
    C = expert_capacity(16, 8, 2, cf)
    lay = capacity_layout(chosen, 8, C)
    assert lay.kept == keep_within_capacity(chosen, 8, C).tolist()
    assert lay.kept == capacity_dispatch(torch.randn(16, 4), Experts(8, 4, 6), weights, chosen, cf).kept.tolist()
    assert [len(q) for q in lay.queues] == torch.bincount(chosen.reshape(-1), minlength=8).tolist()
    for q in lay.queues:  # every first choice before any second choice, tokens in order
        assert q == sorted(q, key=lambda tj: (tj[1], tj[0]))
        assert [lay.kept[t][j] for t, j in q] == [p < C for p in range(len(q))]
    counts = lay.outcome_counts()
    n = torch.tensor(lay.kept).sum(-1)  # (T,)
    assert counts == {j: int((n == j).sum()) for j in (2, 1, 0)} and sum(counts.values()) == 16


def test_drawn_overflow_matches_the_kept_mask():
    _weights, chosen = _routing(T=16, seed=4, skew=2.5)
    C = expert_capacity(16, 8, 2, 1.0)
    kept = keep_within_capacity(chosen, 8, C)  # (T, k)
    assert not kept.all(), "the test routing must overflow"
    fig = draw_capacity_overflow(chosen, 8, C)
    queue = _patches(fig, "queue-")
    assert len(queue) == chosen.numel()
    load = torch.bincount(chosen.reshape(-1), minlength=8).tolist()
    for e in range(8):
        faces = [to_hex(queue[f"queue-{e}-{p}"].get_facecolor()) for p in range(load[e])]
        assert faces == [EXPERT_PALETTE[e]] * min(C, load[e]) + ["#e9ecef"] * max(0, load[e] - C)
    outcome = _patches(fig, "token-outcome-")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(outcome) == 16
    for t in range(16):  # each token's box sits over the number of its kept assignments
        p = outcome[f"token-outcome-{t}"]
        cx, cy = p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2
        label = [x for x in fig.axes[0].texts if x.get_position() == pytest.approx((cx, cy))]
        assert label and label[0].get_text() == str(int(kept[t].sum()))
    assert any(s.startswith("tokens with 2 of 2 kept") for s in texts)


def test_drawn_topology_has_the_padded_rows_of_each_expert():
    counts = torch.bincount(_routing(T=64, seed=2, skew=2.0)[1].reshape(-1), minlength=8)  # (E,)
    fig = draw_block_topology(counts, 8, 32)
    rows = [p for p in fig.axes[0].patches if (p.get_gid() or "").startswith("block-row-")]
    per_expert = torch.zeros(8, dtype=torch.long)
    for p in rows:
        per_expert[int(p.get_x()) // 4] += 1  # 32 / 8 = 4 column blocks per expert
        assert to_hex(p.get_facecolor()) == EXPERT_PALETTE[int(p.get_x()) // 4]
    assert per_expert.tolist() == (block_layout(counts, 8).padded // 8).tolist()


def test_bad_routing_is_refused():
    with pytest.raises(ValueError, match="chosen"):
        token_flow_layout(torch.tensor([1, 2]), torch.tensor([0.5, 0.5]), 8)
    with pytest.raises(ValueError, match="outside"):
        capacity_layout(torch.tensor([[0, 9]]), 8, 2)
    with pytest.raises(ValueError, match="weights"):
        token_flow_layout(torch.tensor([[0, 1]]), torch.tensor([1.0]), 8)

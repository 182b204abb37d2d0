"""Course plots and the block diagram: they draw what they claim and reject bad input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from moe_edu import PRESETS, count_parameters
from moe_edu.course.diagram import CHOSEN, draw_mixtral_block, draw_swiglu_expert
from moe_edu.course.palette import EXPERT_PALETTE
from moe_edu.course.plots import (
    expert_load_bars,
    parameter_breakdown,
    ratio_bars,
    router_heatmap,
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_diagram_highlights_exactly_the_chosen_experts():
    fig = draw_mixtral_block(PRESETS["mixtral-8x7b"], chosen=(2, 5), weights=(0.7, 0.3))
    texts = _texts(fig)
    assert sum(t.startswith("expert ") for t in texts) == 8
    assert {t for t in texts if "SwiGLU" in t} == {"expert 2  (SwiGLU)", "expert 5  (SwiGLU)"}
    assert "w = 0.70" in texts and "w = 0.30" in texts
    assert any("4096" in t for t in texts)
    faces = {matplotlib.colors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches}
    assert {EXPERT_PALETTE[2], EXPERT_PALETTE[5]} <= faces  # the chosen experts in their course colours
    assert not faces & (set(EXPERT_PALETTE) - {EXPERT_PALETTE[2], EXPERT_PALETTE[5]})  # and no other expert's


def test_diagram_follows_the_config():
    c = PRESETS["tiny"].replace(num_local_experts=4, num_experts_per_tok=3)
    texts = _texts(draw_mixtral_block(c, chosen=(0, 1, 3)))
    assert sum(t.startswith("expert ") for t in texts) == 4
    assert any("top-3" in t for t in texts)


@pytest.mark.parametrize("preset", ["tiny", "mixtral-8x7b"])
def test_swiglu_diagram_follows_the_config(preset):
    c = PRESETS[preset]
    H, I = c.hidden_size, c.intermediate_size
    texts = _texts(draw_swiglu_expert(c))
    assert f"W1 (gate)\n{I:,} x {H:,}" in texts and f"W3 (up)\n{I:,} x {H:,}" in texts
    assert f"W2 (down)\n{H:,} x {I:,}" in texts
    per_expert = count_parameters(c).experts // (c.num_hidden_layers * c.num_local_experts)
    assert any(t.startswith(f"3 x H x I = {per_expert:,} parameters") for t in texts)


@pytest.mark.parametrize("chosen", [(1,), (1, 1), (0, 8)])
def test_diagram_rejects_bad_choice(chosen):
    with pytest.raises(ValueError, match="chosen"):
        draw_mixtral_block(PRESETS["mixtral-8x7b"], chosen=chosen)


def test_heatmap_frames_chosen_cells():
    probs = torch.softmax(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), -1)
    chosen = torch.topk(probs, 2, dim=-1).indices
    fig = router_heatmap(probs, tokens=list("abcde"), chosen=chosen)
    ax = fig.axes[0]
    frames = [p for p in ax.patches if not p.get_fill()]
    assert len(frames) == 10
    assert {(int(p.get_x()), int(p.get_y())) for p in frames} == {(e, t) for t in range(5) for e in chosen[t].tolist()}
    assert [t.get_text() for t in ax.get_yticklabels()] == list("abcde")


def test_heatmap_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        router_heatmap(torch.rand(8))
    with pytest.raises(ValueError, match="labels"):
        router_heatmap(torch.rand(3, 4), tokens=["a"])


def test_load_bars_split_at_capacity():
    fig = expert_load_bars(torch.tensor([5, 1, 2, 0]), capacity=3)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [3, 1, 2, 0, 2, 0, 0, 0]  # processed, then dropped
    with pytest.raises(ValueError, match="1-D"):
        expert_load_bars(torch.ones(2, 2))


def test_parameter_breakdown_totals():
    count = count_parameters(PRESETS["mixtral-8x7b"])
    texts = _texts(parameter_breakdown(count))
    assert texts == ["46.7B", "12.9B"]


def test_ratio_bars_labels():
    fig = ratio_bars(["a", "b"], [1.0, 4.0], highlight=1)
    assert _texts(fig) == ["1.00x", "4.00x"]
    faces = [matplotlib.colors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches]
    assert faces[1] == CHOSEN and faces[0] != CHOSEN
    with pytest.raises(ValueError, match="labels"):
        ratio_bars(["a"], [1.0, 2.0])

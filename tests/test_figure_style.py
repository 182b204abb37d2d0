"""One figure style for the course: every library figure, built on small synthetic data, keeps text at
8 pt or more, its legends off the data, headroom above bars, experts in the palette's colours and
load heatmaps centred on the even share."""

import matplotlib

matplotlib.use("Agg")

import itertools

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import TwoSlopeNorm, to_hex
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from moe_edu import PRESETS, count_parameters
from moe_edu.course import widgets
from moe_edu.course.diagram import draw_mixtral_block, draw_swiglu_expert
from moe_edu.course.palette import EXPERT_PALETTE, expert_colors
from moe_edu.course.plots import (
    MIN_FONT,
    expert_load_bars,
    parameter_breakdown,
    ratio_bars,
    router_heatmap,
    shared_legend,
)
from moe_edu.course.plots_training import (
    DOMAIN_COLORS,
    domain_load_bars,
    domain_load_panels,
    load_history,
    loss_curves,
    repetition_bars,
)
from moe_edu.course.token_flow import draw_block_topology, draw_capacity_overflow, draw_token_flow

DOMAINS = ["python", "english", "math", "french", "german", "spanish", "italian", "zh-TW"]  # the corpus's 8
PAPER = [
    "ArXiv",
    "DM Mathematics",
    "Github",
    "Gutenberg",
    "PhilPapers",
    "PubMed Abstracts",
    "StackExchange",
    "Wikipedia (en)",
]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _loads(E=8, L=4):
    g = _gen()
    return {d: torch.softmax(3 * torch.randn(L, E, generator=g), -1) for d in DOMAINS}  # domain -> (L, E)


def _steps(E=8, S=12):
    g = _gen(1)
    return [
        {
            "step": s,
            "ce": 5.0 - 0.1 * s,
            "eval_ce": 5.1 - 0.1 * s,
            "aux": 2.0,
            "load": torch.softmax(torch.randn(2, E, generator=g), -1).tolist(),
        }
        for s in range(S)
    ]


def _repetition_grid():
    fig, axes = plt.subplots(2, 1, figsize=(8.6, 6.0), sharey=True)
    ours = {d: {"first (L0)": 0.3, "middle (L2)": 0.5, "last (L3)": 0.96} for d in DOMAINS}  # tallest bar 96 %
    repetition_bars(ours, 0.125, ax=axes[0], title="ours")
    repetition_bars({n: {"L0": 0.14, "L15": 0.28, "L31": 0.22} for n in PAPER}, 0.125, ax=axes[1], title="paper")
    fig.tight_layout()
    return fig


def _load_grid():
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 5.0))
    for i, ax in enumerate(axes.flat):
        E = 16 if i == 3 else 8
        expert_load_bars(torch.randint(0, 60, (E,), generator=_gen(i)), ax=ax, capacity=40 if i == 1 else None)
    shared_legend(fig, ax=axes.flat[1], ncol=4)
    return fig


def _flow_routing(T, seed, skew=0.0):
    logits = torch.randn(T, 8, generator=_gen(seed))  # (T, E)
    logits[:, 2] += skew  # (T,) a popular expert: the capacity figure overflows
    return torch.softmax(logits, -1).topk(2, dim=-1)  # weights, chosen (T, 2)


FIGURES = {
    "router_heatmap": lambda: router_heatmap(
        torch.softmax(torch.randn(6, 8, generator=_gen()), -1), tokens=list("abcdef"), chosen=torch.tensor([[0, 1]] * 6)
    ),
    "expert_load_bars": lambda: expert_load_bars(torch.tensor([60, 5, 20, 9, 40, 30, 12, 33]), capacity=35),
    "expert_load_bars_16": lambda: expert_load_bars(torch.arange(16) * 3),
    "expert_load_grid": _load_grid,
    "parameter_breakdown": lambda: parameter_breakdown(count_parameters(PRESETS["mixtral-8x7b"])),
    "ratio_bars": lambda: ratio_bars(["a", "b", "c"], [1.0, 4.0, 2.5], highlight=1),
    "diagram": lambda: draw_mixtral_block(PRESETS["mixtral-8x7b"], chosen=(2, 5)),
    "diagram_32": lambda: draw_mixtral_block(PRESETS["tiny"].replace(num_local_experts=32), chosen=(3, 30)),
    "loss_curves": lambda: loss_curves(_steps()),
    "load_history": lambda: load_history(_steps(), 1),
    "domain_load_bars": lambda: domain_load_bars(_loads(), 0),
    "domain_load_panels": lambda: domain_load_panels(_loads(), {"first": 0, "middle": 2, "last": 3}),
    "repetition_bars": _repetition_grid,
    "swiglu": lambda: draw_swiglu_expert(PRESETS["mixtral-8x7b"]),
    "swiglu_tiny": lambda: draw_swiglu_expert(PRESETS["tiny"]),
    "token_flow": lambda: draw_token_flow(*reversed(_flow_routing(8, 0)), 8),
    "token_flow_12": lambda: draw_token_flow(*reversed(_flow_routing(12, 1)), 8),
    "capacity_overflow": lambda: draw_capacity_overflow(_flow_routing(16, 4, skew=2.5)[1], 8, 4),
    "block_topology": lambda: draw_block_topology(torch.tensor([70, 35, 118, 0, 36, 101, 35, 69]), 16, 448),
    "capacity_overflow_wide": lambda: draw_capacity_overflow(_flow_routing(16, 5, skew=4.0)[1], 8, 2),
}


def _drawn(name):
    fig = FIGURES[name]()
    fig.canvas.draw()
    return fig


@pytest.mark.parametrize("name", FIGURES)
def test_no_text_under_8pt(name):
    fig = _drawn(name)
    small = [
        (t.get_text(), t.get_fontsize())
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT
    ]
    assert not small, f"{name}: text under {MIN_FONT} pt: {small[:5]}"


@pytest.mark.parametrize("name", FIGURES)
def test_figures_fit_a_notebook_page(name):
    """At most 11 in wide (1,100 px at the course's 100 dpi; the block diagram's width), legends included:
    a notebook page shows it without shrinking 8 pt text much below 8 pt."""
    fig = _drawn(name)
    width = fig.get_tightbbox(fig.canvas.get_renderer()).width
    assert width <= 11.0, f"{name}: {width:.1f} in wide"


def _data_extents(ax):
    """Window extents of the bars and data lines of `ax` (reference lines across the axes included)."""
    boxes = [p.get_window_extent() for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
    return boxes + [ln.get_window_extent() for ln in ax.lines if isinstance(ln, Line2D) and len(ln.get_xdata())]


@pytest.mark.parametrize("name", FIGURES)
def test_legends_are_off_the_data(name):
    fig = _drawn(name)
    legends = [lg for lg in fig.findobj(Legend) if lg.get_visible()]
    for legend in legends:
        box = legend.get_window_extent()
        axes = fig.axes if legend.axes is None else [legend.axes]  # a figure legend must miss every panel's data
        for ax in axes:
            hits = [d for d in _data_extents(ax) if box.overlaps(d)]
            assert not hits, f"{name}: legend overlaps {len(hits)} data artists of {ax.get_title()!r}"


@pytest.mark.parametrize("name", FIGURES)
def test_tick_labels_do_not_collide(name):
    fig = _drawn(name)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent() for t in axis.get_ticklabels() if t.get_visible() and t.get_text().strip()]
            hits = [(a, b) for a, b in itertools.pairwise(boxes) if a.overlaps(b)]
            assert not hits, f"{name}: {len(hits)} pairs of neighbouring tick labels overlap in {ax.get_title()!r}"


@pytest.mark.parametrize("name", ["expert_load_bars", "ratio_bars", "domain_load_bars", "repetition_bars"])
def test_headroom_above_bars(name):
    fig = _drawn(name)
    for ax in fig.axes:
        tallest = max(p.get_y() + p.get_height() for p in ax.patches if isinstance(p, Rectangle))
        assert ax.get_ylim()[1] >= 1.1 * tallest, f"{name}: bars reach {tallest}, axes end at {ax.get_ylim()[1]}"


def test_expert_colours_come_from_the_palette():
    assert expert_colors(8) == list(EXPERT_PALETTE[:8])
    assert expert_colors(20) == [widgets.expert_colour(e, 20) for e in range(20)]  # the explorer's rule
    fig = expert_load_bars(torch.tensor([3, 1, 2, 4, 5, 6, 7, 8]))
    faces = [to_hex(p.get_facecolor()) for p in fig.axes[0].patches][:8]
    assert faces == list(EXPERT_PALETTE[:8])


def test_domain_colours_are_fixed_and_distinct():
    fig = domain_load_bars(_loads(), 0)
    faces = {to_hex(p.get_facecolor()) for p in fig.axes[0].patches}
    assert faces == set(DOMAIN_COLORS.values()) and len(faces) == len(DOMAINS)
    assert not faces & set(EXPERT_PALETTE), "domain colours must not be mistaken for experts"


@pytest.mark.parametrize("E", [4, 8])
def test_load_heatmap_is_centred_on_the_even_share(E):
    fig = load_history(_steps(E), 0)
    mesh = fig.axes[0].collections[0]
    assert isinstance(mesh.norm, TwoSlopeNorm) and mesh.norm.vcenter == pytest.approx(1 / E)
    assert mesh.norm.vmin == 0
    white = mesh.cmap(mesh.norm(1 / E))
    assert min(white[:3]) > 0.9, "the even share is drawn (nearly) white"
    assert fig.axes[1].get_ylabel(), "the colour bar says what it shows"


def test_passkey_grid_is_colour_blind_safe_with_readable_cell_text():
    import matplotlib.colors as mcolors

    from moe_edu.course.plots_passkey import contrast, plot_passkey_grid
    from moe_edu.serving.passkey import PasskeyGrid

    acc = torch.tensor([[0.0, 0.25, 0.5, 1.0], [1.0, 0.75, 0.1, 0.0]])  # (lengths, depths)
    grid = PasskeyGrid(lengths=[32, 64], depths=[0.0, 0.25, 0.5, 1.0], accuracy=acc, trials=4)
    ax = plot_passkey_grid(grid)
    assert ax.images[0].get_cmap().name == "cividis"
    for text in ax.texts:
        value = float(text.get_text()) / 100
        cell = ax.images[0].get_cmap()(value)
        assert contrast(cell, mcolors.to_rgb(text.get_color())) >= 4.5, (text.get_text(), text.get_color())
    plt.close(ax.figure)


def test_experts_keep_their_palette_colour_in_larger_layers():
    assert [expert_colors(16)[e] for e in range(12)] == list(EXPERT_PALETTE)
    assert len(set(expert_colors(16))) == 16 and len(set(expert_colors(64))) == 64
    fig = expert_load_bars(torch.arange(16) * 3)  # notebook 09's DeepSeekMoE panel: expert 0 blue, ticks e0, e2, ...
    ax = fig.axes[0]
    assert to_hex(ax.patches[0].get_facecolor()) == EXPERT_PALETTE[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:2] == ["e0", "e2"] and all(label.startswith("e") for label in labels)
    plt.close(fig)


def test_domain_colours_are_dark_where_expert_colours_are_light():
    import matplotlib.colors as mcolors

    from moe_edu.course.plots_passkey import contrast

    white, black = (1, 1, 1), (0, 0, 0)
    assert all(contrast(mcolors.to_rgb(c), white) >= 4.5 for c in DOMAIN_COLORS.values())
    assert all(contrast(mcolors.to_rgb(c), black) >= 7 for c in EXPERT_PALETTE)


def test_series_that_are_not_experts_are_grey_and_readable():
    from moe_edu.course.notebook import setup
    from moe_edu.course.palette import CONDITION_COLORS

    setup()  # the notebooks' default colour cycle: greys told apart by line style
    fig, ax = plt.subplots()
    lines = [ax.plot([0, 1], [i, i])[0] for i in range(4)]
    assert [to_hex(line.get_color()) for line in lines] == list(CONDITION_COLORS[:4])
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 4
    plt.close(fig)
    steps = [{"step": s, "ce": 5 - s / 10, "eval_ce": 5.2 - s / 10 if s % 5 == 0 else None} for s in range(30)]
    fig = loss_curves(steps)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["training loss", "held-out loss"]  # no code names in legends
    assert {to_hex(line.get_color()) for line in fig.axes[0].lines} <= set(CONDITION_COLORS)
    plt.close(fig)
    matplotlib.rcdefaults()


def test_ratio_labels_never_sit_on_the_reference_line():
    fig = ratio_bars(["a", "b", "c"], [0.93, 1.0, 3.2])
    ax = fig.axes[0]
    fig.canvas.draw()
    line_y = ax.transData.transform((0, 1.0))[1]
    for text in ax.texts:
        box = text.get_window_extent()
        assert not box.y0 < line_y < box.y1, f"{text.get_text()} is crossed by the 1.0 line"
    plt.close(fig)

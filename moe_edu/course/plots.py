"""Course plots: router probabilities, expert load, parameter and cost breakdowns.

Every function takes plain tensors/ints, draws on `ax` (or a new figure of a fixed
size, so nbval's `<Figure size ...>` text stays stable) and returns the figure.
matplotlib and seaborn are imported inside the functions: `import moe_edu` stays light.
The Mixtral block diagram lives in `moe_edu.course.diagram`.

One style for every course figure (tests/test_figure_style.py checks it): experts coloured from
`EXPERT_PALETTE`, no text under `MIN_FONT` pt, legends outside the data (`legend_outside`,
`shared_legend`), headroom above bars (`headroom`), load heatmaps centred on the even share
(`even_share_norm`). Figures are at most ~10 in wide, so a notebook page shows them unscaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.patches import Patch, Rectangle

from moe_edu.accounting import ParameterCount
from moe_edu.course.diagram import CHOSEN, IDLE
from moe_edu.course.palette import CONDITION_COLORS, expert_colors

MIN_FONT = 8  # pt: the smallest text in any course figure
FONT = 9  # pt: legends, annotations and bar labels
DIVERGING = "RdBu_r"  # load heatmaps: blue = below the even share, white = even, red = above


def headroom(ax, top: float, frac: float = 0.15) -> None:
    """y-limits from 0 to `top` plus `frac` of it, so bars and their labels never touch the frame.
    Axes sharing y (`sharey=True`) keep room for the tallest bar of any of them."""
    bottom = 0.0
    for sibling in ax.get_shared_y_axes().get_siblings(ax):
        ends = [(p.get_y(), p.get_y() + p.get_height()) for p in sibling.patches if isinstance(p, Rectangle)]
        top = max([top, *(max(e) for e in ends)])
        bottom = min([bottom, *(min(e) for e in ends)])  # bars below 0 stay in view
    ax.set_ylim(bottom * (1 + frac), top * (1 + frac) if top > 0 else 1)


def legend_outside(ax, **kwargs):
    """The axes' legend to the right of the axes, off the data (tight_layout makes room for it)."""
    kwargs = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": FONT, "frameon": False, **kwargs}
    return ax.legend(**kwargs)


def shared_legend(fig, ax=None, ncol: int | None = None, height_in: float = 0.3, labels: Sequence[str] | None = None):
    """One legend for all panels, centred below them: per-axes legends are removed, the panels laid
    out above a strip reserved for the legend. Entries come from `ax`'s legend or labelled artists
    (default: the first axes that has any); `labels` renames them (e.g. without a panel's numbers)."""

    def entries(a):
        if a.get_legend() is not None:
            return a.get_legend().legend_handles, [t.get_text() for t in a.get_legend().get_texts()]
        return a.get_legend_handles_labels()

    handles, found = next((entries(a) for a in ([ax] if ax else fig.axes) if entries(a)[0]), ([], []))
    if not handles:
        raise ValueError("shared_legend: no axes of the figure has labelled artists")
    if labels is not None:
        if len(labels) != len(handles):
            raise ValueError(f"shared_legend: {len(labels)} labels for {len(handles)} legend entries")
        found = list(labels)
    for a in fig.axes:
        if a.get_legend() is not None:
            a.get_legend().remove()
    ncol = ncol or len(handles)
    rows = -(-len(handles) // ncol)
    strip = (0.15 + height_in * rows) / fig.get_figheight()
    fig.tight_layout(rect=(0, strip, 1, 1))
    return fig.legend(handles, found, loc="lower center", ncol=ncol, fontsize=FONT, frameon=False)


def even_share_norm(num_experts: int, vmax: float | None = None, share: float | None = None):
    """A colour norm centred on the even share (`share`, default 1/E): white there, blue below, red above.
    `vmax` defaults to 4 times the even share (at most 1)."""
    even = 1.0 / num_experts if share is None else share
    top = min(1.0, 4 * even) if vmax is None else vmax
    return TwoSlopeNorm(vcenter=even, vmin=0.0, vmax=max(top, even * 1.01))


def _axes(ax, figsize):
    if ax is None:
        _fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _check_2d(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D tensor (tokens, experts), got "
            f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
        )


def router_heatmap(
    probs: torch.Tensor,
    tokens: Sequence[str] | None = None,
    chosen: torch.Tensor | None = None,
    ax=None,
    title: str = "router probabilities",
    annot: bool = True,
    vmax: float | None = None,
):
    """Heatmap of a (T, E) probability matrix; cells of `chosen` (T, k) experts get a blue frame."""
    _check_2d("probs", probs)
    T, E = probs.shape
    if tokens is not None and len(tokens) != T:
        raise ValueError(f"tokens has {len(tokens)} labels but probs has {T} rows")
    if chosen is not None and (chosen.dim() != 2 or chosen.shape[0] != T):
        raise ValueError(f"chosen must be (T={T}, k), got {tuple(chosen.shape)}")
    fig, ax = _axes(ax, (1.0 + 0.6 * E, 0.8 + 0.38 * T))
    data = probs.detach().float().cpu().numpy()
    sns.heatmap(
        data,
        ax=ax,
        cmap="rocket_r",
        vmin=0.0,
        vmax=vmax,
        annot=annot and T * E <= 400,
        fmt=".2f",
        annot_kws={"fontsize": MIN_FONT},
        cbar_kws={"label": "probability"},
        linewidths=0.5,
        linecolor="white",
        xticklabels=[f"e{e}" for e in range(E)],
        yticklabels=list(tokens) if tokens is not None else True,
    )
    if chosen is not None:
        for t, row in enumerate(chosen.tolist()):
            for e in row:
                ax.add_patch(Rectangle((e, t), 1, 1, fill=False, edgecolor="#00a8e8", linewidth=2.4))
    ax.set_xlabel("expert")
    ax.set_ylabel("token")
    ax.set_title(title)
    ax.tick_params(axis="y", rotation=0)
    return fig


def expert_load_bars(
    counts: torch.Tensor | Sequence[int],
    ax=None,
    capacity: int | None = None,
    title: str = "tokens per expert",
    expected: float | None = None,
    legend: bool = True,
):
    """Bar chart of assignments per expert, each bar in its expert's colour; a dashed line for the
    uniform share and, if given, a red line at the capacity C with the overflow (dropped) part of each
    bar hatched. The legend sits outside the axes (`legend=False`: none, e.g. for `shared_legend`)."""
    counts = torch.as_tensor(counts).detach().cpu()
    if counts.dim() != 1:
        raise ValueError(f"counts must be 1-D (one entry per expert), got shape {tuple(counts.shape)}")
    E = counts.numel()
    fig, ax = _axes(ax, (6.4, 3.2))
    values = counts.tolist()
    kept = [min(v, capacity) if capacity is not None else v for v in values]
    ax.bar(range(E), kept, color=expert_colors(E), edgecolor="#333333")
    handles = [Patch(facecolor="#ffffff", edgecolor="#333333", label="processed (colour = expert)")]
    if capacity is not None:
        over = [v - c for v, c in zip(values, kept, strict=False)]
        ax.bar(
            range(E),
            over,
            bottom=kept,
            color=IDLE,
            edgecolor="#c0392b",
            hatch="//",
            linewidth=[1.0 if o else 0.0 for o in over],
        )
        handles.append(Patch(facecolor=IDLE, edgecolor="#c0392b", hatch="//", label="dropped"))
        handles.append(ax.axhline(capacity, color="#c0392b", lw=1.2, label=f"capacity C = {capacity}"))
    share = expected if expected is not None else sum(values) / E
    handles.append(ax.axhline(share, color="#333333", ls="--", lw=1, label=f"uniform = {share:.1f}"))
    step = 1 if E <= 12 else 2  # 16 labels of 8 pt do not fit a small panel
    ax.set_xticks(range(0, E, step), [f"e{e}" if E <= 16 else str(e) for e in range(0, E, step)])  # e0 as everywhere
    headroom(ax, max([*values, share, capacity or 0]))
    ax.set_xlabel("expert")
    ax.set_ylabel("assignments")
    ax.set_title(title)
    if legend:
        legend_outside(ax, handles=handles)
    return fig


def parameter_breakdown(count: ParameterCount, ax=None, title: str = "where the parameters are"):
    """Two stacked horizontal bars, total vs active, split by component (billions)."""
    parts = [
        ("embedding", count.embedding, count.embedding),
        ("attention", count.attention, count.attention),
        ("router + norms", count.router + count.norms, count.router + count.norms),
        ("experts", count.experts, count.active_experts),
        ("LM head", count.lm_head, count.lm_head),
    ]
    colors = ["#8ecae6", "#219ebc", "#023047", CHOSEN, "#adb5bd"]
    fig, ax = _axes(ax, (8.0, 2.6))
    for row in range(2):  # 0: total, 1: active per token
        left = 0.0
        for (name, total, active), color in zip(parts, colors, strict=False):
            width = (total if row == 0 else active) / 1e9
            ax.barh(row, width, left=left, color=color, edgecolor="white", label=name if row == 0 else None)
            left += width
        ax.text(left + 0.4, row, f"{left:.1f}B", va="center", fontsize=FONT)
    ax.set_yticks([0, 1], ["total", "active per token"])
    ax.invert_yaxis()
    ax.set_xlabel("parameters (billions)")
    ax.set_xlim(0, count.total / 1e9 * 1.12)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    fig.subplots_adjust(bottom=0.38, left=0.16)
    return fig


def ratio_bars(
    labels: Sequence[str],
    values: Sequence[float],
    ax=None,
    ylabel: str = "relative cost",
    title: str = "",
    baseline: float | None = 1.0,
    highlight: int | None = None,
):
    """Labelled bars for a handful of ratios (FLOPs or timings relative to a reference);
    bar number `highlight` (e.g. the reference) is drawn in the accent colour."""
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values")
    fig, ax = _axes(ax, (5.0, 3.0))
    colors = [CHOSEN if i == highlight else CONDITION_COLORS[3] for i in range(len(values))]  # not an expert hue
    bars = ax.bar(list(labels), [float(v) for v in values], color=colors, edgecolor="#333333")
    top = max([float(v) for v in values] + [baseline or 0.0])
    for bar, v in zip(bars, values, strict=False):
        near = baseline is not None and abs(float(v) - baseline) < 0.08 * top  # the label would sit on the line
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            max(float(v), baseline) + 0.02 * top if near else float(v),
            f"{float(v):.2f}x",
            ha="center",
            va="bottom",
            fontsize=FONT,
        )
    headroom(ax, top * 1.08)
    if baseline is not None:
        ax.axhline(baseline, color="#333333", ls="--", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig

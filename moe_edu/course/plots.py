"""Course plots: router probabilities, expert load, parameter and cost breakdowns.

Every function takes plain tensors/ints, draws on `ax` (or a new figure of a fixed
size, so nbval's `<Figure size ...>` text stays stable) and returns the figure.
matplotlib and seaborn are imported inside the functions: `import moe_edu` stays light.
The Mixtral block diagram lives in `moe_edu.course.diagram`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from moe_edu.accounting import ParameterCount
from moe_edu.course.diagram import CHOSEN, IDLE, draw_mixtral_block  # noqa: F401  (re-exported for notebooks)

# One colour per expert for every figure and view of the course: expert e has the same colour everywhere.
# Light enough for black text (contrast >= 7:1); the first 8 (Mixtral's E) are pairwise CIEDE2000 >= 20
# apart (no near twins), all 12 >= 11. Order: blue, orange, green, red, purple, yellow, teal, grey, then
# pink, lime, coral, mint. tests/test_widgets.py checks these numbers.
EXPERT_PALETTE = (
    "#5fa8e8",
    "#f59e3d",
    "#5cc26a",
    "#f47d7d",
    "#b08ee0",
    "#e8d544",
    "#4fc9c0",
    "#b5b5b5",
    "#f08cc8",
    "#a8d04a",
    "#ff9470",
    "#8ee0b0",
)


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
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
    import seaborn as sns
    from matplotlib.patches import Rectangle

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
        annot_kws={"fontsize": 7},
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
):
    """Bar chart of assignments per expert; a dashed line for the uniform share and, if given,
    a red line at the capacity C with the overflow (dropped) part of each bar hatched."""
    counts = torch.as_tensor(counts).detach().cpu()
    if counts.dim() != 1:
        raise ValueError(f"counts must be 1-D (one entry per expert), got shape {tuple(counts.shape)}")
    E = counts.numel()
    fig, ax = _axes(ax, (6.4, 3.2))
    values = counts.tolist()
    kept = [min(v, capacity) if capacity is not None else v for v in values]
    ax.bar(range(E), kept, color=CHOSEN, edgecolor="#333333", label="processed")
    if capacity is not None:
        over = [v - c for v, c in zip(values, kept, strict=False)]
        ax.bar(
            range(E),
            over,
            bottom=kept,
            color=IDLE,
            edgecolor="#c0392b",
            hatch="//",
            label="dropped",
            linewidth=[1.0 if o else 0.0 for o in over],
        )
        ax.axhline(capacity, color="#c0392b", lw=1.2, label=f"capacity C = {capacity}")
    share = expected if expected is not None else sum(values) / E
    ax.axhline(share, color="#333333", ls="--", lw=1, label=f"uniform = {share:.1f}")
    ax.set_xticks(range(E), [f"e{e}" for e in range(E)])
    ax.set_xlabel("expert")
    ax.set_ylabel("assignments")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right", frameon=False)
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
        ax.text(left + 0.4, row, f"{left:.1f}B", va="center", fontsize=9)
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
    colors = [CHOSEN if i == highlight else "#8ecae6" for i in range(len(values))]
    bars = ax.bar(list(labels), [float(v) for v in values], color=colors, edgecolor="#333333")
    for bar, v in zip(bars, values, strict=False):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{float(v):.2f}x",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    if baseline is not None:
        ax.axhline(baseline, color="#333333", ls="--", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig

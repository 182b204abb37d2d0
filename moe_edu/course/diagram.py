"""The Mixtral block diagram, drawn with matplotlib patches (after the paper's Figure 1).

Left: one decoder layer (RMSNorm -> attention -> residual -> RMSNorm -> sparse MoE ->
residual). Right: the MoE block opened up: the router scores E experts, only the top-k
run, and their outputs are mixed with the gate weights. Numbers come from the config, so
the same function draws the tiny preset and Mixtral 8x7B. Notebook 00 shows it.
`draw_swiglu_expert` opens one expert (W1 gate, W3 up, SiLU, product, W2 down) with the config's
widths; notebook 05 shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from moe_edu.config import MixtralConfig
from moe_edu.course.palette import expert_colors

CHOSEN = "#f4a259"  # accent for "chosen" in figures without per-expert colours (the diagram uses the palette)
IDLE = "#e9ecef"  # experts that are skipped (sparse activation)
BLOCK = "#bcd4e6"  # ordinary layers
MOE = "#f7d08a"  # the sparse MoE block


def _box(ax, x, y, w, h, text, color, *, fontsize=9, alpha=1.0, bold=False, edge="#333333"):
    patch = FancyBboxPatch(
        (x, y),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        facecolor=color,
        edgecolor=edge,
        linewidth=1.2,
        alpha=alpha,
    )
    ax.add_patch(patch)
    ax.text(
        x + w / 2,
        y + h / 2,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        alpha=max(alpha, 0.6),
        fontweight="bold" if bold else "normal",
    )
    return patch


def _arrow(ax, start, end, *, color="#333333", style="-|>", lw=1.2, ls="-", alpha=1.0, rad=0.0):
    patch = FancyArrowPatch(
        start,
        end,
        arrowstyle=style,
        mutation_scale=10,
        color=color,
        linewidth=lw,
        linestyle=ls,
        alpha=alpha,
        connectionstyle=f"arc3,rad={rad}",
    )
    ax.add_patch(patch)
    return patch


def _plus(ax, x, y, r=0.22):
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor="#333333", linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=11)


def draw_mixtral_block(
    config: MixtralConfig | None = None, chosen: Sequence[int] = (1, 4), weights: Sequence[float] | None = None, ax=None
):
    """Draw a decoder layer and its sparse MoE block; `chosen` experts are highlighted.

    `chosen` must hold `num_experts_per_tok` distinct expert indices; `weights` (same
    length, default equal) label the arrows into the weighted sum. Returns the figure.
    """
    c = config or MixtralConfig(name="mixtral-8x7b")
    E, k = c.num_local_experts, c.num_experts_per_tok
    chosen = list(chosen)
    if len(chosen) != k or len(set(chosen)) != k or not all(0 <= e < E for e in chosen):
        raise ValueError(f"chosen must be {k} distinct expert indices in [0, {E}), got {chosen}")
    weights = [1.0 / k] * k if weights is None else list(weights)
    if len(weights) != k:
        raise ValueError(f"weights must have k={k} entries, got {len(weights)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 5.5))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    fig = ax.figure
    ax.set_xlim(0, 12.4)
    ax.set_ylim(-0.4, 7.4)
    ax.set_axis_off()

    # --- left: one decoder layer, bottom to top ----------------------------------
    lx, lw = 0.3, 2.6
    ax.text(lx + lw / 2, 7.15, f"decoder layer (x{c.num_hidden_layers})", ha="center", fontsize=10, fontweight="bold")
    ax.text(lx + lw / 2, -0.25, f"h  (T, H={c.hidden_size})", ha="center", fontsize=9)
    _box(ax, lx, 0.55, lw, 0.55, "RMSNorm", BLOCK)
    _box(
        ax,
        lx,
        1.5,
        lw,
        0.75,
        f"attention (GQA)\n{c.num_attention_heads} q / {c.num_key_value_heads} kv heads",
        BLOCK,
        fontsize=8,
    )
    _plus(ax, lx + lw / 2, 2.75)
    _box(ax, lx, 3.3, lw, 0.55, "RMSNorm", BLOCK)
    moe_box = _box(ax, lx, 4.25, lw, 0.85, f"sparse MoE block\n{E} experts, top-{k}", MOE, bold=True)
    _plus(ax, lx + lw / 2, 5.6)
    ax.text(lx + lw / 2, 6.35, "to the next layer", ha="center", fontsize=9)
    mid = lx + lw / 2
    for y0, y1 in ((0.0, 0.55), (1.1, 1.5), (2.25, 2.53), (2.97, 3.3), (3.85, 4.25), (5.1, 5.38), (5.82, 6.2)):
        _arrow(ax, (mid, y0), (mid, y1))
    _arrow(ax, (lx - 0.05, 0.2), (mid - 0.22, 2.75), rad=-0.35, ls="--", alpha=0.7)  # residuals
    _arrow(ax, (lx - 0.05, 2.95), (mid - 0.22, 5.6), rad=-0.35, ls="--", alpha=0.7)

    # --- right: the MoE block opened up --------------------------------------------
    ax.plot([lx + lw, 4.0], [5.1, 6.9], color="#999999", lw=0.8, ls=":")  # "zoom" lines
    ax.plot([lx + lw, 4.0], [4.25, 0.1], color="#999999", lw=0.8, ls=":")
    ax.text(8.2, 7.15, "sparse mixture-of-experts block", ha="center", fontsize=10, fontweight="bold")
    ax.text(4.35, 3.5, "x", ha="center", va="center", fontsize=12, fontstyle="italic")
    _box(ax, 4.8, 2.85, 1.9, 1.3, f"router\nW_g: ({E} x {c.hidden_size})\nsoftmax, top-{k}", BLOCK, fontsize=8)
    _arrow(ax, (4.5, 3.5), (4.8, 3.5))
    ex, ew, top, gap = 7.7, 1.9, 6.7, 6.7 / E
    colors = expert_colors(E)
    eh = gap * 0.72
    for e in range(E):
        y = top - (e + 1) * gap + (gap - eh) / 2
        on = e in chosen
        _box(
            ax,
            ex,
            y,
            ew,
            eh,
            (f"expert {e}" if E <= 16 else f"e{e}") + ("  (SwiGLU)" if on else ""),
            colors[e] if on else IDLE,  # a chosen expert in its course colour (as in the explorer)
            fontsize=8,  # the course's smallest text (moe_edu.course.plots.MIN_FONT)
            alpha=1.0 if on else 0.55,
            bold=on,
            edge="#333333" if on else "#aaaaaa",
        )
        yc = y + eh / 2
        _arrow(
            ax,
            (6.7, 3.5),
            (ex, yc),
            color="#333333" if on else "#bbbbbb",
            ls="-" if on else ":",
            alpha=1.0 if on else 0.6,
            lw=1.5 if on else 0.8,
        )
        if on:
            w = weights[chosen.index(e)]
            _arrow(ax, (ex + ew, yc), (10.48, 3.5), lw=1.5)
            above = yc >= 3.5  # the label on the side the arrow leaves free (it runs towards y = 3.5)
            ax.text(
                ex + ew + 0.1,
                yc + (0.12 if above else -0.12),
                f"w = {w:.2f}",
                fontsize=8,
                ha="left",
                va="bottom" if above else "top",
                color="#b35c00",
            )
    _plus(ax, 10.7, 3.5)
    _arrow(ax, (10.92, 3.5), (11.5, 3.5))
    ax.text(11.85, 3.5, "y", ha="center", va="center", fontsize=12, fontstyle="italic")
    ax.text(
        8.65,
        -0.25,
        f"only {k} of {E} experts run for this token (sparse activation)",
        ha="center",
        fontsize=9,
        color="#b35c00",
    )
    moe_box.set_gid("moe-block")
    return fig


def draw_swiglu_expert(config: MixtralConfig | None = None, ax=None):
    """Draw one SwiGLU expert, E(x) = W2(silu(W1 x) * W3 x), with the widths of `config`.

    Two branches read the same x: W1 (gate, through SiLU) and W3 (up); their elementwise product
    of width I goes through W2 (down) back to width H. The fused `gate_up_proj` that `transformers`
    v5 and `moe_edu` store is W1 and W3 stacked. Returns the figure.
    """
    c = config or MixtralConfig(name="mixtral-8x7b")
    H, I = c.hidden_size, c.intermediate_size
    if ax is None:
        fig, ax = plt.subplots(figsize=(10.4, 3.6))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    fig = ax.figure
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0, 5.0)
    ax.set_axis_off()
    ax.text(0.55, 2.5, f"x\n(H = {H:,})", ha="center", va="center", fontsize=9)
    gate = _box(ax, 1.6, 3.25, 2.6, 0.95, f"W1 (gate)\n{I:,} x {H:,}", MOE, fontsize=8)
    up = _box(ax, 1.6, 0.8, 2.6, 0.95, f"W3 (up)\n{I:,} x {H:,}", MOE, fontsize=8)
    silu = _box(ax, 5.0, 3.35, 1.6, 0.75, "SiLU\nz * sigmoid(z)", BLOCK, fontsize=8)
    down = _box(ax, 8.3, 2.0, 2.4, 1.0, f"W2 (down)\n{H:,} x {I:,}", MOE, fontsize=8)
    for patch, gid in ((gate, "w1"), (up, "w3"), (silu, "silu"), (down, "w2")):
        patch.set_gid(gid)
    _arrow(ax, (1.0, 2.7), (1.6, 3.7), rad=-0.2)
    _arrow(ax, (1.0, 2.3), (1.6, 1.3), rad=0.2)
    _arrow(ax, (4.2, 3.72), (5.0, 3.72))
    ax.add_patch(Circle((7.3, 2.5), 0.3, facecolor="white", edgecolor="#333333", linewidth=1.2))
    ax.text(7.3, 2.5, "\u2299", ha="center", va="center", fontsize=11)  # the elementwise product
    _arrow(ax, (6.6, 3.72), (7.2, 2.8), rad=-0.2)
    _arrow(ax, (4.2, 1.28), (7.2, 2.2), rad=0.2)
    ax.text(7.3, 1.75, f"elementwise\n(I = {I:,})", ha="center", va="top", fontsize=8)
    _arrow(ax, (7.6, 2.5), (8.3, 2.5))
    _arrow(ax, (10.7, 2.5), (11.4, 2.5))
    ax.text(11.85, 2.5, f"E(x)\n(H = {H:,})", ha="center", va="center", fontsize=9)
    ax.text(2.9, 4.55, f"gate_up_proj = [W1; W3]: one ({2 * I:,} x {H:,}) matmul", ha="center", fontsize=8)
    ax.text(
        6.2,
        0.2,
        f"3 x H x I = {3 * H * I:,} parameters per expert;  I = {I / H:g} H",
        ha="center",
        fontsize=9,
        color="#b35c00",
    )
    return fig

"""Plots for training and routing analysis (notebooks 07 and 08), drawn with seaborn.

Each function draws on `ax` (or a new figure of fixed size, so nbval's `<Figure size ...>`
text stays stable) and returns the figure. Inputs are the plain lists/tensors that
`moe_edu.train` logs and `moe_edu.analysis` computes. The course's figure style (legends
off the data, 8 pt and up, load heatmaps centred on the even share) is `moe_edu.course.plots`'.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns
import torch

from moe_edu.course.palette import CONDITION_COLORS, CONDITION_STYLES, series_name
from moe_edu.course.plots import DIVERGING, FONT, even_share_norm, headroom, legend_outside

# One colour per corpus domain (Okabe-Ito, colour-blind safe; darker than the expert palette, whose
# light colours mean experts). Other names get tab10 colours in order of appearance.
# Domains are dark (white text reads on them, contrast >= 4.5:1), experts light (black text, >= 7:1): a domain
# bar is never mistaken for an expert's colour, although hue families repeat (the explorer teaches that hue = expert).
DOMAIN_COLORS = {
    "python": "#332288",
    "english": "#882255",
    "math": "#117733",
    "french": "#661100",
    "german": "#5c5c00",
    "spanish": "#8a3a80",
    "italian": "#1d5c6b",
    "zh-TW": "#4d4d4d",
}


def domain_colors(names: Sequence[str]) -> list[str]:
    """A colour per domain name: `DOMAIN_COLORS` for the corpus's domains, tab10 for the rest."""
    tab10 = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    others = iter(c for c in tab10 if c not in DOMAIN_COLORS.values())
    return [DOMAIN_COLORS[n] if n in DOMAIN_COLORS else next(others) for n in names]


def _grouped_bars(ax, groups: Sequence[str], series: Mapping[str, Sequence[float]], colors: Sequence[str]) -> float:
    """Bars of each series side by side within each group; returns the tallest value."""
    n = len(series)
    width = 0.8 / n
    for i, ((label, values), color) in enumerate(zip(series.items(), colors, strict=True)):
        xs = [g - 0.4 + width * (i + 0.5) for g in range(len(groups))]
        ax.bar(xs, list(values), width, color=color, edgecolor="#333333", linewidth=0.4, label=label)
    return max(max(v) for v in series.values())


def _axes(ax, figsize):
    if ax is None:
        _fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def loss_curves(steps: Sequence[Mapping], ax=None, keys: Sequence[str] = ("ce", "eval_ce"), title: str = ""):
    """Training log entries -> one line per key against the step (missing values skipped)."""
    fig, ax = _axes(ax, (6.4, 3.2))
    for key in keys:
        pts = [(e["step"], e[key]) for e in steps if e.get(key) is not None]
        if not pts:
            raise ValueError(f"no log entry has {key!r}; keys are {sorted(steps[0])}")
        x, y = zip(*pts, strict=False)
        i = list(keys).index(key) % len(CONDITION_COLORS)
        ax.plot(
            list(x),
            list(y),
            color=CONDITION_COLORS[i],
            ls=CONDITION_STYLES[i],
            label=series_name(key),
            marker="o" if len(pts) < 20 else None,
        )
    ax.set_xlabel("step")
    ax.set_title(title)
    legend_outside(ax)
    return fig


def load_history(
    steps: Sequence[Mapping],
    layer: int,
    ax=None,
    title: str | None = None,
    every: int = 1,
    colorbar: bool = True,
    vmax: float | None = None,
):
    """Heatmap of one layer's expert load (share of assignments) over training: experts x steps,
    white at the even share 1/E, blue below it, red above. `colorbar=False` for panels that share one
    (`load_colorbar`; give them one `vmax`)."""
    rows = [e for e in steps if "load" in e][::every]
    if not rows or not 0 <= layer < len(rows[0]["load"]):
        raise ValueError(f"layer must be in [0, {len(rows[0]['load']) if rows else 0}), got {layer}")
    load = torch.tensor([e["load"][layer] for e in rows]).T  # (E, S)
    E = load.shape[0]
    fig, ax = _axes(ax, (6.4, 2.6))
    norm = even_share_norm(E, vmax=max(0.5, float(load.max())) if vmax is None else vmax)
    mesh = ax.pcolormesh(load.numpy(), cmap=DIVERGING, norm=norm)
    if colorbar:
        load_colorbar(fig, mesh, ax, E)
    ax.set_ylim(E, 0)  # expert 0 on top
    ax.set_yticks([e + 0.5 for e in range(E)], [str(e) for e in range(E)])
    S = load.shape[1]
    ticks = sorted({0, S // 2, S - 1})  # three columns, labelled with their training step
    ax.set_xticks([c + 0.5 for c in ticks], [str(rows[c]["step"]) for c in ticks])
    ax.set_ylabel("expert")
    ax.set_xlabel("training step")
    ax.set_title(f"layer {layer}: expert load during training" if title is None else title)
    return fig


def load_colorbar(fig, mesh, ax, num_experts: int):
    """One colour bar for load heatmaps, ticked at 0, 1/E and evenly above it (the two-slope scale would
    otherwise crowd the shares above 1/E into a few unlabelled millimetres)."""
    even, top = 1 / num_experts, mesh.norm.vmax
    bar = fig.colorbar(mesh, ax=ax, pad=0.02)
    bar.set_ticks([0.0, even, *[round(even + (top - even) * f, 2) for f in (1 / 3, 2 / 3, 1.0)]])
    bar.set_label(f"share (white = 1/E = {even:.3f})", fontsize=FONT)
    return bar


def domain_load_bars(
    loads: Mapping[str, torch.Tensor], layer: int, ax=None, title: str | None = None, legend: bool = True
):
    """The paper's Fig. 7: share of assignments per expert, one bar colour per domain, at one layer;
    a dashed line at the even share 1/E, the legend outside the axes."""
    domains = list(loads)
    shares = {d: loads[d][layer].tolist() for d in domains}  # load: (L, E)
    E = len(shares[domains[0]])
    fig, ax = _axes(ax, (7.2, 3.0))
    top = _grouped_bars(ax, [str(e) for e in range(E)], shares, domain_colors(domains))
    ax.axhline(1 / E, color="k", ls="--", lw=0.8, label=f"even share 1/E = {1 / E:.3f}")
    headroom(ax, max(top, 1 / E))
    ax.set_xticks(range(E), [str(e) for e in range(E)])
    ax.set_xlim(-0.5, E - 0.5)
    ax.set_xlabel("expert")
    ax.set_ylabel("share of assignments")
    ax.set_title(f"layer {layer}" if title is None else title)
    if legend:
        legend_outside(ax, title="domain", title_fontsize=FONT)
    return fig


def domain_load_panels(loads: Mapping[str, torch.Tensor], layers: Mapping[str, int], width: float = 8.6):
    """`domain_load_bars` for several layers ({label: layer}), stacked, one legend beside the top panel."""
    fig, axes = plt.subplots(len(layers), 1, figsize=(width, 2.6 * len(layers)), sharex=True, squeeze=False)
    for i, (ax, (label, layer)) in enumerate(zip(axes[:, 0], layers.items(), strict=True)):
        domain_load_bars(loads, layer, ax=ax, title=f"{label} layer ({layer})", legend=i == 0)
        if i < len(layers) - 1:
            ax.set_xlabel("")
    fig.tight_layout()
    return fig


def tick_name(name: str, width: int = 10) -> str:
    """`name` on lines of at most `width` characters: wrapped at spaces, a long CamelCase word hyphenated
    at its last capital ("StackExchange" -> "Stack-\nExchange")."""
    lines = []
    for line in textwrap.wrap(name, width, break_long_words=False):
        if len(line) > width:
            line = re.sub(r"^(.*[a-z])([A-Z][a-z]+)$", r"\1-\n\2", line)
        lines.append(line)
    return "\n".join(lines)


def repetition_bars(
    rates: Mapping[str, Mapping[str, float]],
    baseline: float,
    ax=None,
    title: str = "",
    ylabel: str = "consecutive tokens, same expert",
):
    """Grouped bars: for each domain, one bar per layer; a dashed line at the random baseline.
    Long domain names wrap onto two lines (`tick_name`; tilted if still too long); the legend sits outside the axes."""
    domains = list(rates)
    labels = list(dict.fromkeys(label for per_layer in rates.values() for label in per_layer))
    series = {label: [100 * rates[d].get(label, 0.0) for d in domains] for label in labels}  # {layer: rate}
    fig, ax = _axes(ax, (8.0, 3.0))
    top = _grouped_bars(ax, domains, series, sns.color_palette("crest", len(labels)).as_hex())
    ax.axhline(100 * baseline, color="k", ls="--", lw=0.8, label="random")
    headroom(ax, max(top, 100 * baseline))
    names = [tick_name(d) for d in domains]
    if any(len(line) > 11 for name in names for line in name.splitlines()):  # still too long: tilt the names
        ax.set_xticks(range(len(domains)), names, rotation=25, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(range(len(domains)), names)
    ax.set_xlim(-0.5, len(domains) - 0.5)
    ax.set_ylabel(ylabel + " (%)")
    ax.set_title(title)
    legend_outside(ax)
    return fig

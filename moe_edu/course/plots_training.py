"""Plots for training and routing analysis (notebooks 07 and 08), drawn with seaborn.

Each function draws on `ax` (or a new figure of fixed size, so nbval's `<Figure size ...>`
text stays stable) and returns the figure. Inputs are the plain lists/tensors that
`moe_edu.train` logs and `moe_edu.analysis` computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def loss_curves(steps: Sequence[Mapping], ax=None, keys: Sequence[str] = ("ce", "eval_ce"), title: str = ""):
    """Training log entries -> one line per key against the step (missing values skipped)."""
    import seaborn as sns

    fig, ax = _axes(ax, (6.4, 3.2))
    for key in keys:
        pts = [(e["step"], e[key]) for e in steps if e.get(key) is not None]
        if not pts:
            raise ValueError(f"no log entry has {key!r}; keys are {sorted(steps[0])}")
        x, y = zip(*pts, strict=False)
        sns.lineplot(x=list(x), y=list(y), ax=ax, label=key, marker="o" if len(pts) < 20 else None)
    ax.set_xlabel("step")
    ax.set_title(title)
    return fig


def load_history(steps: Sequence[Mapping], layer: int, ax=None, title: str | None = None, every: int = 1):
    """Heatmap of one layer's expert load (share of assignments) over training: experts x steps."""
    import seaborn as sns

    rows = [e for e in steps if "load" in e][::every]
    if not rows or not 0 <= layer < len(rows[0]["load"]):
        raise ValueError(f"layer must be in [0, {len(rows[0]['load']) if rows else 0}), got {layer}")
    load = torch.tensor([e["load"][layer] for e in rows]).T  # (E, S)
    fig, ax = _axes(ax, (6.4, 2.6))
    sns.heatmap(
        load.numpy(),
        ax=ax,
        cmap="rocket_r",
        vmin=0,
        vmax=max(0.5, float(load.max())),
        cbar_kws={"label": "share"},
        xticklabels=False,
    )
    ax.set_ylabel("expert")
    ax.set_xlabel(f"step (0 to {rows[-1]['step']})")
    ax.set_title(f"layer {layer}: expert load during training" if title is None else title)
    return fig


def domain_load_bars(loads: Mapping[str, torch.Tensor], layer: int, ax=None, title: str | None = None):
    """The paper's Fig. 7: share of assignments per expert, one bar colour per domain, at one layer."""
    import seaborn as sns

    domains, experts, shares = [], [], []
    for domain, load in loads.items():  # load: (L, E)
        for e, v in enumerate(load[layer].tolist()):
            domains.append(domain)
            experts.append(e)
            shares.append(v)
    fig, ax = _axes(ax, (6.4, 3.0))
    sns.barplot(x=experts, y=shares, hue=domains, ax=ax, palette="tab10")
    ax.axhline(1 / len(next(iter(loads.values()))[layer]), color="k", ls="--", lw=0.8)
    ax.set_xlabel("expert")
    ax.set_ylabel("share of assignments")
    ax.set_title(f"layer {layer}" if title is None else title)
    return fig


def repetition_bars(
    rates: Mapping[str, Sequence[float]],
    baseline: float,
    ax=None,
    title: str = "",
    ylabel: str = "consecutive tokens, same expert",
):
    """Grouped bars: for each domain, one bar per layer; a dashed line at the random baseline."""
    import seaborn as sns

    domains, layers, values = [], [], []
    for domain, per_layer in rates.items():  # per_layer: {label: rate}
        for label, v in per_layer.items():
            domains.append(domain)
            layers.append(label)
            values.append(100 * v)
    fig, ax = _axes(ax, (6.4, 3.0))
    sns.barplot(x=domains, y=values, hue=layers, ax=ax, palette="crest")
    ax.axhline(100 * baseline, color="k", ls="--", lw=0.8, label="random")
    ax.set_ylabel(ylabel + " (%)")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize=7)
    return fig

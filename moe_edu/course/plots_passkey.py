"""Notebook 11's passkey picture: the Mixtral paper's Fig. 4 layout for a `moe_edu.serving.passkey.PasskeyGrid`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..serving.passkey import PasskeyGrid

__all__ = ["contrast", "plot_passkey_grid", "text_colour"]


def relative_luminance(rgb) -> float:
    """WCAG 2 relative luminance of an sRGB colour (components in 0-1)."""
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a, b) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (1 to 21)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background) -> str:
    """Black or white, whichever reads better on `background`."""
    return "black" if contrast(background, (0, 0, 0)) >= contrast(background, (1, 1, 1)) else "white"


def plot_passkey_grid(grid: PasskeyGrid, ax=None, title: str = "passkey retrieval", train_length: int | None = None):
    """Fig. 4's layout: context length across, key depth down, accuracy as colour (0-100 %)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.2))
    acc = grid.accuracy.T.numpy() * 100  # (depths, lengths)
    cmap = plt.get_cmap("cividis")  # colour-blind safe and monotone in lightness (RdYlGn is neither)
    im = ax.imshow(acc, vmin=0, vmax=100, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(grid.lengths)), [str(n) for n in grid.lengths])
    ax.set_yticks(range(len(grid.depths)), [f"{d:.0%}" for d in grid.depths])
    for (r, c), v in np.ndenumerate(acc):  # per cell the text colour with the larger contrast on that cell
        ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8, color=text_colour(cmap(v / 100)))
    if train_length is not None:
        beyond = sum(n <= train_length for n in grid.lengths) - 0.5
        ax.axvline(beyond, color="black", lw=1.5, ls="--")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("key depth")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="retrieved (%)")
    return ax

"""Notebook 11's passkey picture: the Mixtral paper's Fig. 4 layout for a `moe_edu.serving.passkey.PasskeyGrid`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..serving.passkey import PasskeyGrid

__all__ = ["plot_passkey_grid"]


def plot_passkey_grid(grid: PasskeyGrid, ax=None, title: str = "passkey retrieval", train_length: int | None = None):
    """Fig. 4's layout: context length across, key depth down, accuracy as colour (0-100 %)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.2))
    acc = grid.accuracy.T.numpy() * 100  # (depths, lengths)
    im = ax.imshow(acc, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(grid.lengths)), [str(n) for n in grid.lengths])
    ax.set_yticks(range(len(grid.depths)), [f"{d:.0%}" for d in grid.depths])
    for (r, c), v in np.ndenumerate(acc):
        ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8)
    if train_length is not None:
        beyond = sum(n <= train_length for n in grid.lengths) - 0.5
        ax.axvline(beyond, color="black", lw=1.5, ls="--")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("key depth")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="retrieved (%)")
    return ax

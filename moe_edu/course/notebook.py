"""The first cell of every notebook: seeds, one thread, short printing, quiet plots.

nbval compares printed outputs exactly, so every notebook starts with `setup()`:
same seed, same thread count (1 vs 2 threads changes the 5th digit of big sums),
4-digit tensor printing, a fixed figure size.
"""

from __future__ import annotations

import os
import random

import matplotlib as mpl
import numpy as np
import torch
from cycler import cycler

from moe_edu.course.palette import CONDITION_COLORS, CONDITION_STYLES


def setup(seed: int = 0, threads: int = 1) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "svg.hashsalt": "moe_edu",
            "axes.spines.top": False,
            "axes.spines.right": False,
            # series without an expert (runs, losses, implementations) in greys and line styles: hue = expert
            "axes.prop_cycle": cycler(color=list(CONDITION_COLORS), linestyle=list(CONDITION_STYLES)),
        }
    )


def format_tensor(t, digits: int = 4) -> str:
    """A small tensor as text that is the same under every torch version: one bracketed row per line.

    torch's own repr changed its padding across versions (torch < 2.9 pads wide-range tensors
    differently), and nbval compares printed text exactly; this fixed format does not change.
    Integer and boolean tensors print as integers; floats with `digits` decimals (never "-0.0000").
    """
    t = torch.as_tensor(t).detach().cpu()
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() > 2:
        raise ValueError(f"format_tensor prints 1-D or 2-D tensors, got shape {tuple(t.shape)}")
    rows = t.reshape(1, -1) if t.dim() == 1 else t
    if t.dtype.is_floating_point:
        cells = [[f"{v:.{digits}f}" for v in row] for row in (rows.double() + 0.0).tolist()]
        cells = [[c[1:] if c.startswith("-") and float(c) == 0 else c for c in row] for row in cells]
    else:
        cells = [[str(int(v)) for v in row] for row in rows.tolist()]
    width = max((len(c) for row in cells for c in row), default=0)
    lines = ["[" + ", ".join(c.rjust(width) for c in row) + "]" for row in cells]
    return lines[0] if t.dim() == 1 else "\n".join(lines)

"""The first cell of every notebook: seeds, one thread, short printing, quiet plots.

nbval compares printed outputs exactly, so every notebook starts with `setup()`:
same seed, same thread count (1 vs 2 threads changes the 5th digit of big sums),
4-digit tensor printing, a fixed figure size.
"""

from __future__ import annotations

import os
import random


def setup(seed: int = 0, threads: int = 1) -> None:
    import numpy as np
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    try:
        import matplotlib as mpl

        mpl.rcParams.update({"figure.figsize": (6.4, 4.0), "figure.dpi": 100, "svg.hashsalt": "moe_edu",
                             "axes.spines.top": False, "axes.spines.right": False})
    except ImportError:  # plotting is optional for the library
        pass

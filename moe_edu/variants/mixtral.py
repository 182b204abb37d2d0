"""Mixtral's dropless top-2: the reference point of the family (Jiang et al. 2024, eq. 1-2).

softmax over E logits -> keep the top k -> renormalise; every chosen expert runs on every
token that chose it (no capacity, nothing dropped). The Mixtral row of notebook 09's table is
the library's `SparseMoeBlock` itself: `TopKRouter` + `Experts` in `MoEBlock`.
"""

from __future__ import annotations

from ..config import MixtralConfig
from ..moe_block import SparseMoeBlock


def build_mixtral(config: MixtralConfig) -> SparseMoeBlock:
    """Mixtral's block sized from `config` (its router carries the table's label and gating text)."""
    return SparseMoeBlock(config)

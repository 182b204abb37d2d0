"""Dropless dispatch as block-sparse matrix products, the formulation of MegaBlocks (Gale et al., 2022).

Sort the T*k assignments by expert (as `moe_edu.dispatch.grouped_dispatch` does), then pad each
expert's group only up to a multiple of the block size b, never to a fixed capacity. Seen as one
matrix, the first layer multiplies the (R, H) padded rows by all experts' stacked gate/up weights
(H, E*2I); only the b x b blocks whose row block and column block belong to the same expert are
non-zero: a block-diagonal *topology* with blocks of varying height (`block_topology`). A
block-sparse kernel computes exactly those blocks (MegaBlocks' SDD product), and the second layer
multiplies that block-sparse activation by the stacked down weights (DSD). Nothing is dropped, and
the padding is at most b - 1 rows per expert.

Here the non-zero blocks of one row block are computed together with one batched matmul against
that row block's expert (a readable stand-in for the GPU kernel); `block_sparse_dispatch` is tested
equal to the loop reference. Notebook 03 uses it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .dispatch import combine, sort_by_expert
from .experts import Experts
from .validation import positive_int


class BlockLayout(NamedTuple):
    """How the expert-sorted assignments sit in the padded, block-aligned rows."""

    counts: torch.Tensor  # (E,) assignments per expert
    padded: torch.Tensor  # (E,) rows per expert, rounded up to a multiple of the block size
    row_expert: torch.Tensor  # (R,) the expert of each padded row
    source: torch.Tensor  # (R,) the sorted assignment each padded row holds, -1 for padding


def block_layout(counts: torch.Tensor, block: int) -> BlockLayout:
    """Pad each expert's rows to a multiple of `block`: counts (E,) -> the layout of R = sum(padded) rows."""
    positive_int("block", block)
    padded = (counts + block - 1) // block * block  # (E,)
    E = counts.numel()
    row_expert = torch.repeat_interleave(torch.arange(E, device=counts.device), padded)  # (R,)
    starts_padded = torch.cumsum(padded, 0) - padded  # (E,) first padded row of each expert
    starts = torch.cumsum(counts, 0) - counts  # (E,) first sorted assignment of each expert
    pos = torch.arange(row_expert.numel(), device=counts.device) - starts_padded[row_expert]  # (R,) place in group
    source = torch.where(pos < counts[row_expert], starts[row_expert] + pos, -1)  # (R,)
    return BlockLayout(counts, padded, row_expert, source)


def block_topology(counts: torch.Tensor, block: int, cols_per_expert: int) -> torch.Tensor:
    """(R/b, E*cols/b) bool: the non-zero b x b blocks of the first layer's product (same expert on both sides).

    `cols_per_expert` is each expert's share of the stacked weight's columns (2I for gate+up, I for down);
    it must be a multiple of `block` so that no column block straddles two experts.
    """
    positive_int("cols_per_expert", cols_per_expert)
    if cols_per_expert % block:
        raise ValueError(f"block ({block}) must divide cols_per_expert ({cols_per_expert})")
    lay = block_layout(counts, block)
    row_block_expert = lay.row_expert[::block]  # (R/b,)
    col_block_expert = torch.arange(counts.numel()).repeat_interleave(cols_per_expert // block)  # (E*cols/b,)
    return row_block_expert[:, None] == col_block_expert[None, :]  # (R/b, E*cols/b)


def block_sparse_dispatch(
    x: torch.Tensor, experts: Experts, weights: torch.Tensor, expert_ids: torch.Tensor, block: int = 16
) -> torch.Tensor:
    """Dropless MoE output computed block by block: x (T, H), weights/expert_ids (T, k) -> (T, H).

    `block` must divide the intermediate size I (so each expert's columns are whole blocks).
    Equals `moe_edu.dispatch.loop_dispatch`; padding rows are zeros and are never read back.
    """
    positive_int("block", block)
    if experts.intermediate_size % block:
        raise ValueError(f"block ({block}) must divide intermediate_size ({experts.intermediate_size})")
    order, counts = sort_by_expert(expert_ids, experts.num_experts)  # (T*k,), (E,)
    lay = block_layout(counts, block)
    k = expert_ids.shape[1]
    real = lay.source >= 0  # (R,)
    token = order[lay.source.clamp_min(0)] // k  # (R,) the token each padded row reads (padding: any)
    rows = torch.where(real[:, None], x[token], 0.0)  # (R, H) padded, expert-sorted rows
    nb = rows.shape[0] // block
    e_of_block = lay.row_expert[::block]  # (nb,) the expert of each row block
    xb = rows.view(nb, block, -1)  # (nb, b, H)
    h = torch.bmm(xb, experts.gate_up_proj[e_of_block].mT)  # (nb, b, 2I) SDD: the non-zero blocks only
    gate, up = h.chunk(2, dim=-1)  # (nb, b, I), (nb, b, I)
    out = torch.bmm(F.silu(gate) * up, experts.down_proj[e_of_block].mT)  # (nb, b, H) DSD
    out = out.reshape(-1, x.shape[1])[real]  # (T*k, H) back to sorted-assignment order, padding dropped
    return combine(out, order, weights, x.dtype)  # (T, H)


__all__ = ["BlockLayout", "block_layout", "block_sparse_dispatch", "block_topology"]

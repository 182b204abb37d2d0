"""Token-flow diagrams drawn from a real routing: what a dispatch and a capacity limit do to the tokens.

`draw_token_flow` follows a batch through a sparse MoE layer the way a sort-and-group kernel does:
tokens -> the router's top-k (expert, weight) assignments -> the assignments sorted by expert ->
one contiguous block per expert -> un-permute back to token order -> the weighted sum per token.
`draw_capacity_overflow` shows a capacity-based layer (GShard, Switch): each expert's queue in
arrival order (every first choice before any second choice), the buffer of C slots, and the
assignments that arrive after it is full, which are dropped; each token is marked with how many
of its k assignments survived.

Both compute their layout from the router's output (`token_flow_layout`, `capacity_layout`, the
library's `sort_by_expert` and `keep_within_capacity`); nothing is placed by hand. Patches carry
gids (`expert-block-e`, `sorted-i`, `queue-e-p`, `token-outcome-t`) so tests can read the drawing
back. Notebook 03 shows both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyBboxPatch, Rectangle

from moe_edu.block_sparse import block_topology
from moe_edu.capacity import keep_within_capacity, queue_positions
from moe_edu.course.palette import expert_colors
from moe_edu.dispatch import sort_by_expert

IDLE = "#e9ecef"  # dropped assignments and idle experts (the block diagram's colour for "skipped")
DROP = "#c0392b"  # the capacity line and the cross over a dropped assignment
FONT = 9  # pt: column titles (8 pt is the course's smallest text)
SMALL = 8  # pt: labels inside boxes


@dataclass(frozen=True)
class TokenFlowLayout:
    """Where every assignment sits in a sort-and-group dispatch. A = T*k assignments, token-major."""

    expert: list[int]  # (A,) expert of assignment i = t*k + j
    weight: list[float]  # (A,) its gate weight
    order: list[int]  # (A,) sorted position p holds assignment order[p] (grouped by expert, stable)
    counts: list[int]  # (E,) assignments per expert = the rows of each expert's block
    starts: list[int]  # (E,) first sorted position of each expert's block
    num_tokens: int  # T


def _check_routing(chosen: torch.Tensor, num_experts: int) -> None:
    if chosen.dim() != 2:
        raise ValueError(f"chosen must be (tokens, k), got shape {tuple(chosen.shape)}")
    if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= num_experts):
        raise ValueError(f"chosen holds expert ids outside [0, {num_experts})")


def token_flow_layout(chosen: torch.Tensor, weights: torch.Tensor, num_experts: int) -> TokenFlowLayout:
    """The layout of `draw_token_flow`, from the router's (T, k) choice and weights."""
    _check_routing(chosen, num_experts)
    if weights.shape != chosen.shape:
        raise ValueError(f"weights must have chosen's shape {tuple(chosen.shape)}, got {tuple(weights.shape)}")
    order, counts = sort_by_expert(chosen, num_experts)  # (T*k,), (E,)
    starts = torch.cumsum(counts, 0) - counts  # (E,)
    flat_w = weights.reshape(-1).tolist()
    return TokenFlowLayout(
        chosen.reshape(-1).tolist(), flat_w, order.tolist(), counts.tolist(), starts.tolist(), chosen.shape[0]
    )


@dataclass(frozen=True)
class CapacityLayout:
    """Each expert's queue under a capacity of C slots (first come, first served, slot-major)."""

    capacity: int
    queues: list[list[tuple[int, int]]]  # (E,) each a list of (token, slot) in arrival order
    kept: list[list[bool]]  # (T, k) whether each assignment fits in its expert's buffer

    @property
    def kept_per_token(self) -> list[int]:
        return [sum(row) for row in self.kept]

    def outcome_counts(self) -> dict[int, int]:
        """Tokens by how many of their k assignments were kept: {k: n, ..., 0: n}."""
        k = len(self.kept[0]) if self.kept else 0
        per = self.kept_per_token
        return {j: per.count(j) for j in range(k, -1, -1)}


def capacity_layout(chosen: torch.Tensor, num_experts: int, capacity: int) -> CapacityLayout:
    """The layout of `draw_capacity_overflow`, from the router's (T, k) choice and the capacity C."""
    _check_routing(chosen, num_experts)
    position = queue_positions(chosen, num_experts)  # (T, k) place in its expert's queue
    kept = keep_within_capacity(chosen, num_experts, capacity)  # (T, k)
    queues: list[list[tuple[int, int]]] = [[] for _ in range(num_experts)]
    T, k = chosen.shape
    for t in range(T):
        for j in range(k):
            queues[int(chosen[t, j])].append((t, j))
    pos = position.tolist()
    queues = [sorted(q, key=lambda tj: pos[tj[0]][tj[1]]) for q in queues]
    return CapacityLayout(capacity, queues, kept.tolist())


def _box(ax, x, y, w, h, text, color, *, gid=None, edge="#333333", fontsize=SMALL, ls="-", bold=False):
    patch = FancyBboxPatch(
        (x, y), w, h, boxstyle="round,pad=0,rounding_size=0.06", facecolor=color, edgecolor=edge, lw=1.0, ls=ls
    )
    patch.set_gid(gid)
    ax.add_patch(patch)
    if text:
        weight = "bold" if bold else "normal"
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, fontweight=weight)
    return patch


def _link(ax, x0, y0, x1, y1, color):
    ax.plot([x0, x1], [y0, y1], color=color, lw=1.3, solid_capstyle="round", zorder=1)


def draw_token_flow(
    chosen: torch.Tensor,
    weights: torch.Tensor,
    num_experts: int,
    tokens: Sequence[str] | None = None,
    ax=None,
):
    """Draw a sort-and-group dispatch of this routing, column by column (see the module docstring).

    chosen, weights (T, k) from a router (T of about 4-12 keeps the labels legible); `tokens` names
    the rows (default t0, t1, ...). Returns the figure.
    """
    lay = token_flow_layout(chosen, weights, num_experts)
    T, k = chosen.shape
    A = T * k
    names = list(tokens) if tokens is not None else [f"t{t}" for t in range(T)]
    if len(names) != T:
        raise ValueError(f"tokens must name {T} tokens, got {len(names)}")
    colors = expert_colors(num_experts)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10.6, 1.5 + 0.3 * A))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    fig = ax.figure
    row, gap = 1.0, 0.12  # each assignment is one row; boxes leave a gap
    ax.set_xlim(-0.1, 12.2)
    ax.set_ylim(A + 1.3, -2.0)  # row 0 at the top
    ax.set_axis_off()

    cols = {"tok": 0.0, "route": 1.5, "sorted": 4.4, "block": 5.9, "back": 8.7, "sum": 10.75}
    titles = {
        "tok": "tokens",
        "route": f"router: top-{k}\n(expert, weight)",
        "sorted": "sorted by\nexpert",
        "block": "one block per expert\n(one matmul each)",
        "back": "un-permute:\nback to token order",
        "sum": "combine",
    }
    for key, title in titles.items():
        ax.text(cols[key] + (0.55 if key != "sum" else 0.3), -1.0, title, ha="center", va="center", fontsize=FONT)

    for t in range(T):  # tokens, each spanning its k assignment rows
        _box(ax, cols["tok"], t * k * row + gap, 1.1, k * row - 2 * gap, names[t], "white", gid=f"token-{t}")
    for i in range(A):  # the router's assignments in token order
        e = lay.expert[i]
        _box(
            ax, cols["route"], i + gap, 1.7, row - 2 * gap, f"e{e}   w={lay.weight[i]:.2f}", colors[e], gid=f"route-{i}"
        )
        ax.plot([cols["tok"] + 1.1, cols["route"]], [(i // k) * k + k / 2, i + 0.5], color="#999999", lw=0.8)
    for p, i in enumerate(lay.order):  # the permutation: assignment i -> sorted position p
        e = lay.expert[i]
        _link(ax, cols["route"] + 1.7, i + 0.5, cols["sorted"], p + 0.5, colors[e])
        _box(ax, cols["sorted"], p + gap, 1.1, row - 2 * gap, names[i // k], colors[e], gid=f"sorted-{p}")
        _link(ax, cols["block"] + 1.9, p + 0.5, cols["back"], i + 0.5, colors[e])  # un-permute
    idle = []
    for e in range(num_experts):  # one box per expert over its contiguous rows
        n, s = lay.counts[e], lay.starts[e]
        if n == 0:
            idle.append(e)
            continue
        label = f"expert {e}\n{n} rows" if n > 1 else f"expert {e}: 1 row"
        _box(ax, cols["block"], s + gap, 1.9, n * row - 2 * gap, label, colors[e], gid=f"expert-block-{e}", bold=True)
    if idle:
        names_idle = ", ".join(str(e) for e in idle)
        ax.text(cols["block"] + 0.95, A + 0.6, f"not run: expert {names_idle}", ha="center", fontsize=SMALL)
    for i in range(A):  # each output back on its token's row, weighted
        e = lay.expert[i]
        out = f"{lay.weight[i]:.2f}·E{e}({names[i // k]})"
        _box(ax, cols["back"], i + gap, 1.75, row - 2 * gap, out, colors[e], gid=f"back-{i}")
    for t in range(T):  # the weighted sum of each token's k outputs
        yc = t * k + k / 2
        for j in range(k):
            ax.plot([cols["back"] + 1.75, cols["sum"] - 0.22], [t * k + j + 0.5, yc], color="#666666", lw=0.8)
        _box(ax, cols["sum"] - 0.22, yc - 0.35, 0.44, 0.7, "+", "white", gid=f"sum-{t}", fontsize=FONT)
        ax.text(cols["sum"] + 0.35, yc, f"y({names[t]})", ha="left", va="center", fontsize=SMALL)
    return fig


def draw_capacity_overflow(chosen: torch.Tensor, num_experts: int, capacity: int, ax=None):
    """Draw each expert's queue of assignments, its C slots, and the overflow that is dropped.

    A box is labelled `t5·2`: token 5's second choice. Below, each token shows how many of its k
    assignments were kept (k: unaffected; 0: only the residual connection carries it). Returns the figure.
    """
    lay = capacity_layout(chosen, num_experts, capacity)
    T, k = chosen.shape
    colors = expert_colors(num_experts)
    longest = max([len(q) for q in lay.queues] + [capacity, 1])
    w, E, x0 = 0.62, num_experts, 1.5  # box width, rows, where the queues start
    right = x0 + max(longest, T) * w + 0.3
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(10.6, 0.8 * right), 1.9 + 0.36 * E))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    fig = ax.figure
    ax.set_xlim(-0.1, right)
    ax.set_ylim(E + 3.2, -1.3)
    ax.set_axis_off()
    ax.text(x0, -0.8, "queue of each expert, in arrival order (every first choice before any second choice)",
            ha="left", va="center", fontsize=FONT)  # fmt: skip
    for e in range(E):
        ax.text(x0 - 0.15, e + 0.5, f"expert {e}", ha="right", va="center", fontsize=SMALL)
        for p, (t, j) in enumerate(lay.queues[e]):
            fits = lay.kept[t][j]
            _box(
                ax,
                x0 + p * w + 0.03,
                e + 0.1,
                w - 0.06,
                0.8,
                f"t{t}·{j + 1}",
                colors[e] if fits else IDLE,
                gid=f"queue-{e}-{p}",
                edge="#333333" if fits else "#999999",
                ls="-" if fits else "--",
            )
            if not fits:
                xa, xb = x0 + p * w + 0.08, x0 + (p + 1) * w - 0.08
                ax.plot([xa, xb], [e + 0.18, e + 0.82], color=DROP, lw=1.0)
    xc = x0 + capacity * w
    ax.plot([xc, xc], [-0.35, E + 0.2], color=DROP, lw=1.5, ls="--")
    ax.text(xc + 0.08, -0.35, f"C = {capacity}: later arrivals are dropped", ha="left", va="top", fontsize=SMALL,
            color=DROP)  # fmt: skip
    # each token: how many of its k assignments survived
    ty = E + 1.35
    ax.text(x0 - 0.15, ty + 0.4, "kept per token", ha="right", va="center", fontsize=SMALL)
    tw = w
    for t in range(T):
        n = lay.kept_per_token[t]
        face = "white" if n == k else ("#fde3c8" if n > 0 else "#f4b6b0")
        _box(ax, x0 + t * tw + 0.03, ty, tw - 0.06, 0.8, f"{n}", face, gid=f"token-outcome-{t}")
        ax.text(x0 + t * tw + tw / 2, ty + 1.15, f"t{t}", ha="center", va="center", fontsize=SMALL)
    counts = lay.outcome_counts()
    summary = "   ".join(f"{j} of {k} kept: {n}" for j, n in counts.items())
    ax.text(x0, E + 0.75, f"tokens with {summary}  (0 kept: only the residual carries it)", fontsize=SMALL,
            ha="left", va="center")  # fmt: skip
    return fig


def draw_block_topology(counts: torch.Tensor, block: int, cols_per_expert: int, ax=None):
    """Draw the block-sparse topology of a dropless layer (MegaBlocks): which b x b blocks are computed.

    Rows: the expert-sorted assignments, padded per expert to a multiple of `block`; columns: all
    experts' stacked weight columns (`cols_per_expert` each). A computed block is drawn in its expert's
    colour, the rest stay white. Returns the figure.
    """
    top = block_topology(counts, block, cols_per_expert)  # (R/b, E*cols/b)
    E = counts.numel()
    colors = expert_colors(E)
    nr, nc = top.shape
    if ax is None:
        fig, ax = plt.subplots(figsize=(8.6, 3.8))
    fig = ax.figure
    per = cols_per_expert // block
    row_expert = top.float().argmax(1).div(per, rounding_mode="floor").tolist()  # (R/b,) each row block's expert
    for r in range(nr):
        e = row_expert[r]
        patch = Rectangle((e * per, r), per, 1, facecolor=colors[e], edgecolor="#333333", lw=0.4)
        patch.set_gid(f"block-row-{r}")
        ax.add_patch(patch)
    for c in range(0, nc + 1, per):
        ax.axvline(c, color="#999999", lw=0.6)
    ax.set_xlim(0, nc)
    ax.set_ylim(nr, 0)
    ax.set_xticks([(e + 0.5) * per for e in range(E)], [f"expert {e}" for e in range(E)], fontsize=8)
    ax.set_ylabel(f"row blocks of {block} sorted rows", fontsize=9)
    ax.set_xlabel(f"column blocks ({per} per expert)", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(f"computed blocks: {int(top.sum())} of {top.numel()} ({top.float().mean():.1%})", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = [
    "CapacityLayout",
    "TokenFlowLayout",
    "capacity_layout",
    "draw_block_topology",
    "draw_capacity_overflow",
    "draw_token_flow",
    "token_flow_layout",
]

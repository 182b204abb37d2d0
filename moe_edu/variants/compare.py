"""Notebook 09's comparison table: every variant on the same batch, measured on the same axes.

Static columns come from each variant's router (`base.describe`); measured ones from one `moe_output` pass
in eval mode (no noise, no random routing). Plain lists of dicts (no pandas), rendered as
a markdown table (or `to_html()`) whose text is deterministic, so nbval can compare it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..moe_block import MoEBlock
from .base import MoEOutput, active_parameters, describe, flops_per_token, moe_output, total_parameters
from .soft_moe import SoftMoE


def load_stats(load_counts: torch.Tensor) -> dict[str, float]:
    """Balance of a (E,) load vector: coefficient of variation (0 = perfect) and max / mean (1 = perfect)."""
    load = load_counts.float()
    mean = load.mean()
    if mean == 0:
        return {"load CV": 0.0, "max/mean load": 0.0}
    return {"load CV": float(load.std(unbiased=False) / mean), "max/mean load": float(load.max() / mean)}


def measure(variant: nn.Module, x: torch.Tensor) -> tuple[dict, MoEOutput]:
    """Run `variant` once in eval mode without gradients; return its table row and its output."""
    was_training = variant.training
    variant.eval()
    try:
        with torch.no_grad():
            out = moe_output(variant, x)
    finally:
        variant.train(was_training)
    requested = out.num_tokens * variant.gate.experts_per_token
    row = describe(variant)
    row["aux losses"] = ", ".join(f"{k} {float(v):.3f}" for k, v in out.aux_losses.items()) or "none"
    row.update(
        {
            "total params": total_parameters(variant),
            "active params": active_parameters(variant),
            "FLOPs/token": flops_per_token(variant),
            **load_stats(out.load_counts),
            "dropped tokens %": 100.0 * out.dropped_rate,
            "dropped assignments %": 100.0 * out.dropped_assignments / requested,
        }
    )
    return row, out


def compare(variants: Mapping[str, nn.Module], x: torch.Tensor) -> tuple[Table, dict[str, MoEOutput]]:
    """The table (one row per variant, same x for all) and each variant's output."""
    if not variants:
        raise ValueError("compare needs at least one variant")
    rows, outputs = [], {}
    for name, variant in variants.items():
        if not isinstance(variant, MoEBlock | SoftMoE):
            raise TypeError(f"variant {name!r} is a {type(variant).__name__}, not an MoEBlock or a SoftMoE")
        row, outputs[name] = measure(variant, x)
        rows.append(row)
    return Table(rows), outputs


def _cell(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


@dataclass
class Table:
    """Rows of dicts with a deterministic markdown rendering (shown as a table in Jupyter)."""

    rows: list[dict]
    columns: Sequence[str] | None = None

    def header(self) -> list[str]:
        if self.columns is not None:
            return list(self.columns)
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def select(self, *columns: str) -> Table:
        missing = sorted(set(columns) - set(self.header()))
        if missing:
            raise KeyError(f"no such columns {missing}; have {self.header()}")
        return Table(self.rows, columns)

    def to_markdown(self) -> str:
        cols = self.header()
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_html(self) -> str:
        """The same table as plain HTML (for pages that do not render markdown)."""
        cols = self.header()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c, '')))}</td>" for c in cols) + "</tr>"
            for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return self.to_markdown()

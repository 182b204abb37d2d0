"""The course's expert colours: expert e has the same colour in every figure, the diagram and the explorer.

Its own module so that the diagram, the plots and the widgets share it without importing each other.
`moe_edu.course.plots` re-exports both names (`from moe_edu.course.plots import EXPERT_PALETTE` stays valid).
"""

from __future__ import annotations

import colorsys

# One colour per expert for every figure and view of the course: expert e has the same colour everywhere.
# Light enough for black text (contrast >= 7:1); the first 8 (Mixtral's E) are pairwise CIEDE2000 >= 20
# apart (no near twins), all 12 >= 11. Order: blue, orange, green, red, purple, yellow, teal, grey, then
# pink, lime, coral, mint. tests/test_widgets.py checks these numbers.
EXPERT_PALETTE = (
    "#5fa8e8",
    "#f59e3d",
    "#5cc26a",
    "#f47d7d",
    "#b08ee0",
    "#e8d544",
    "#4fc9c0",
    "#b5b5b5",
    "#f08cc8",
    "#a8d04a",
    "#ff9470",
    "#8ee0b0",
)


def expert_colour(expert: int, num_experts: int) -> str:
    """Expert `expert`'s colour: the palette for experts 0-11 whatever the layer's size (expert 0 is blue in
    every panel of notebook 09, the 16-expert one too), then evenly spaced light hues for experts 12 and up."""
    if expert < len(EXPERT_PALETTE):
        return EXPERT_PALETTE[expert]
    extra = num_experts - len(EXPERT_PALETTE)
    r, g, b = colorsys.hls_to_rgb((expert - len(EXPERT_PALETTE) + 0.5) / extra, 0.72, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def expert_colors(num_experts: int) -> list[str]:
    """Every expert's colour for a layer of `num_experts` experts (figures; the explorer uses the same rule)."""
    return [expert_colour(e, num_experts) for e in range(num_experts)]


# Series that are not experts (conditions: runs, losses, implementations, policies) are drawn in greys and one
# dark accent (darker than every expert colour), told apart by lightness and line style, so that hue keeps meaning
# "expert" in the course's figures (the explorer teaches it). Seaborn draws lines in the colour only: neighbouring
# entries differ in lightness by themselves.
CONDITION_COLORS = ("#1a1a1a", "#9a9a9a", "#8b1a1a", "#5a5a5a", "#c8c8c8", "#000000")
CONDITION_STYLES = ("-", "--", "-", ":", "-.", "--")

# Readable names for the code names that would otherwise land in legends.
SERIES_NAMES = {
    "ce": "training loss",
    "eval_ce": "held-out loss",
    "aux": "aux loss",
    "z": "router z-loss",
    "ours": "moe_edu (default block)",
    "ideal": "ideal: one dense FFN, same FLOPs",
    "hf_eager": "transformers (eager experts)",
    "hf_grouped_mm": "transformers (grouped_mm experts)",
    "experts_frozen": "experts frozen",
    "router_frozen": "router frozen",
}


def series_name(key: str) -> str:
    """The legend name of a series: a readable one for the course's code names, else the key with spaces."""
    return SERIES_NAMES.get(key, key.replace("_", " "))

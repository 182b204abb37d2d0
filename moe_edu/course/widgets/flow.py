"""Token -> expert flow at one layer, as inline SVG: tokens on the left, experts on the right, one
line per chosen (token, expert) pair, as thick as its renormalised weight (what bertviz draws for
attention). Deterministic and script-free like the other views; see notebook 06."""

from __future__ import annotations

from moe_edu.course.widgets.trace import RoutingTrace
from moe_edu.course.widgets.views import token_labels

from ..palette import expert_colour
from .render import FONT, NOTE, check_prefix, state_class, style_block

ROW = 18  # px per token
LEFT, RIGHT, WIDTH = 170, 430, 520  # token labels end at LEFT, expert boxes start at RIGHT
MID = (LEFT + RIGHT) // 2  # the curves' control points


def flow_html(
    trace: RoutingTrace,
    layer: int,
    k: int | None = None,
    *,
    id_prefix: str = "moe-flow",
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """Every token's top-`k` experts at `layer` as lines whose width is the weight (1 to 9 px)."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    p = check_prefix(id_prefix)
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    T, E = trace.num_tokens, trace.num_experts
    height = max(T * ROW, E * 30) + 10
    labels, span_of = token_labels(trace), trace.span_of_token
    ey = [round((e + 0.5) * (height - 10) / E) + 5 for e in range(E)]
    lines, texts = [], []
    for t in range(T):
        y, g = t * ROW + ROW // 2 + 5, span_of[t]
        for w, e in zip(weights[t].tolist(), experts[t].tolist(), strict=True):
            w = round(w, 2)
            cls = f"moe-line{state_class(g, [e], selected, dimmed)}"
            lines.append(
                f'<path class="{cls}" data-g="{g}" data-experts="{e}" data-w="{w:.2f}" '
                f'd="M{LEFT + 6} {y} C{MID} {y} {MID} {ey[e]} {RIGHT} {ey[e]}" '
                f'stroke="{expert_colour(e, E)}" stroke-width="{1 + 8 * w:.1f}" fill="none" '
                f'stroke-opacity="0.85"/>'
            )
        cls = f"moe-flow-tok{state_class(g, [], selected, None)}"
        texts.append(
            f'<text class="{cls}" data-g="{g}" x="{LEFT}" y="{y + 4}" text-anchor="end">{labels[t]}</text>'  # already escaped
        )
    boxes = []
    for e in range(E):
        cls = f"moe-flow-expert{state_class(None, [e], None, dimmed)}"
        boxes.append(
            f'<g class="{cls}" data-experts="{e}"><rect x="{RIGHT}" y="{ey[e] - 11}" '
            f'width="{WIDTH - RIGHT - 4}" '
            f'height="22" rx="4" fill="{expert_colour(e, E)}" stroke="#555"/>'
            f'<text x="{RIGHT + 8}" y="{ey[e] + 4}">expert {e}</text></g>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" style="{FONT};font-size:12px">'
        f"{''.join(lines)}{''.join(texts)}{''.join(boxes)}</svg>"
    )
    note = (
        f'<p style="{NOTE}">Layer {layer}, k = {k}: each token (left) sends a line to each of its {k} chosen '
        f"experts (right); a line's width is the expert's renormalised weight (1 px + 8 px x weight). "
        "Click a token to select it, an expert in the legend to dim the rest.</p>"
    )
    root = f"{p}-L{layer}"
    return (
        f'<div id="{root}" class="moe-flow" data-layer="{layer}" data-k="{k}">'
        f"{style_block(root, trace.num_experts)}{note}"
        f'<div style="max-height:480px;overflow:auto">{svg}</div></div>'
    )

"""Token -> expert flow at one layer, the bertviz way: a view whose height does not grow with the text.

The tokens wrap across the top (in a scroll box of fixed height), the E experts sit below as bins
that are always in view, and lines are drawn only for the hovered or selected token, each as thick
as its renormalised weight (1 px + 8 px x weight). Hover isolation is pure CSS (one `:has()` rule
per token lights that token's bins and writes their weights), so it is instant without a kernel
round trip and works in a saved notebook; the live explorer (view.py) draws the lines from each
token's `data-route` ("expert:weight ..."), since only the browser knows where a wrapped token lands.
Deterministic and script-free like the other views; see notebook 06.
"""

from __future__ import annotations

from moe_edu.course.widgets.trace import RoutingTrace
from moe_edu.course.widgets.views import token_labels

from ..palette import expert_colour
from .render import CLICK_FLOW, FONT, NOTE, check_prefix, state_class, style_block

TOKENS_HEIGHT = 220  # px: the token area scrolls; the experts below stay in view whatever T is
LINES_HEIGHT = 56  # px between the token area and the expert bins, where the lines run


def _route(weights: list[float], experts: list[int]) -> str:
    return " ".join(f"{e}:{round(w, 2):.2f}" for w, e in zip(weights, experts, strict=True))


def _hover_rules(root: str, routes: list[list[tuple[int, float]]]) -> str:
    """Pure-CSS hover isolation: hovering token t lights its experts' bins and shows their weights."""
    r = f"#{root}"
    rules = [
        f"{r}:has(.moe-ftok:hover) .moe-bin{{opacity:.35}}",
        f"{r} .moe-bin-w::after{{content:''}}",
    ]
    for t, route in enumerate(routes):
        for e, w in route:
            rules.append(
                f'{r}:has(.moe-ftok[data-t="{t}"]:hover) .moe-bin[data-e="{e}"]{{opacity:1;'
                f"box-shadow:0 0 0 {1 + round(4 * w)}px var(--jp-content-font-color1,#333)}}"
                f'{r}:has(.moe-ftok[data-t="{t}"]:hover) .moe-bin[data-e="{e}"] .moe-bin-w::after{{content:" {w:.2f}"}}'
            )
    return "<style>" + "".join(rules) + "</style>"


def flow_html(
    trace: RoutingTrace,
    layer: int,
    k: int | None = None,
    *,
    id_prefix: str = "moe-flow",
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """Tokens wrapped on top, the experts as bins below, the hovered / selected token's top-`k` routes."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    p = check_prefix(id_prefix)
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    wl, el = weights.tolist(), experts.tolist()
    T, E = trace.num_tokens, trace.num_experts
    labels, span_of = token_labels(trace), trace.span_of_token
    routes = [[(e, round(w, 2)) for w, e in zip(wl[t], el[t], strict=True)] for t in range(T)]
    toks = []
    for t in range(T):
        g = span_of[t]
        chosen = [e for e, _ in routes[t]]
        cls = f"moe-ftok{state_class(g, chosen, selected, dimmed)}"
        toks.append(
            f'<span class="{cls}" data-g="{g}" data-t="{t}" data-experts="{" ".join(map(str, chosen))}" '
            f'data-route="{_route(wl[t], el[t])}" style="display:inline-block;margin:0 3px 3px 0;padding:0 4px;'
            f"border:1px solid var(--jp-border-color1,#999);border-radius:3px;"
            f'border-bottom:4px solid {expert_colour(el[t][0], E)}">{labels[t]}</span>'  # labels: escaped
        )
    chosen_sel = {}  # the selected span's experts and their largest weight: shown statically
    if selected is not None:
        for t in range(T):
            if span_of[t] == selected:
                for e, w in routes[t]:
                    chosen_sel[e] = max(w, chosen_sel.get(e, 0.0))
    bins = []
    for e in range(E):
        cls = f"moe-bin{state_class(None, [e], None, dimmed)}{' moe-bin-on' if e in chosen_sel else ''}"
        ring = (
            f";box-shadow:0 0 0 {1 + round(4 * chosen_sel[e])}px var(--jp-content-font-color1,#333)"
            if e in chosen_sel
            else ""
        )
        weight = f" {chosen_sel[e]:.2f}" if e in chosen_sel else ""
        bins.append(
            f'<div class="{cls}" data-e="{e}" data-experts="{e}" style="flex:1 1 0;min-width:44px;padding:6px 2px;'
            f'text-align:center;border-radius:4px;color:#000;background:{expert_colour(e, E)}{ring}">'
            f'e{e}<span class="moe-bin-w">{weight}</span></div>'
        )
    root = f"{p}-L{layer}"
    note = (
        f'<p style="{NOTE}">Layer {layer}, k = {k}: hover a token (top) to see its {k} chosen experts (bottom); '
        f"a line's width is the expert's renormalised weight (1 px + 8 px x weight); a token's underline is its "
        f"first choice. {CLICK_FLOW}</p>"
    )
    return (
        f'<div id="{root}" class="moe-flow" data-layer="{layer}" data-k="{k}" style="position:relative;{FONT};'
        f'font-size:12px">{style_block(root, E)}{_hover_rules(root, routes)}{note}'
        f'<div class="moe-flow-tokens" style="max-height:{TOKENS_HEIGHT}px;overflow:auto;padding:2px">'
        f"{''.join(toks)}</div>"
        f'<div class="moe-flow-gap" style="height:{LINES_HEIGHT}px"></div>'
        '<svg class="moe-flow-lines" aria-hidden="true" style="position:absolute;left:0;top:0;width:100%;height:100%;'
        'pointer-events:none;overflow:visible"></svg>'
        f'<div class="moe-flow-bins" style="display:flex;gap:6px;margin-top:2px">{"".join(bins)}</div></div>'
    )

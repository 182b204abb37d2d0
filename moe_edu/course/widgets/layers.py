"""The paper's Fig. 8 as small multiples: the same text once per layer, stacked in reading form.

Each layer's row is the tokens view (render.py) with a caption giving how often neighbouring tokens share
their first-choice expert (Table 5's statistic; 1/E if routing ignored the neighbour). Two toggles, pure CSS
so they work in a saved notebook too: "first choice only" (Fig. 8's encoding: each token's background
is its first expert; off: the k weight bands) and "outline repeats" (a dashed outline on every token that
keeps the previous token's first expert, so runs such as an indented block or a Chinese word stand out).
"""

from __future__ import annotations

import itertools

from moe_edu.course.widgets.render import FONT, NOTE, bands, check_prefix, rtl_runs, state_class, style_block
from moe_edu.course.widgets.text_spans import visible
from moe_edu.course.widgets.trace import RoutingTrace


def repeat_share(trace: RoutingTrace, layer: int) -> float:
    """Share of neighbouring token pairs whose first-choice expert is the same at `layer` (0 for T < 2)."""
    first = trace.first_choice(layer).tolist()  # (T,)
    pairs = len(first) - 1
    return sum(a == b for a, b in itertools.pairwise(first)) / pairs if pairs > 0 else 0.0


def layer_text(trace: RoutingTrace, layer: int, k: int, selected: int | None, dimmed: int | None) -> str:
    """One layer's row: the text, each span's background its tokens' top-k bands over its first expert's
    colour, `moe-rep` on a span whose first token keeps the previous token's first expert. Leaner than
    the tokens view (no ids, no cards): four copies of the text are on the page at once."""
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    wl, el = weights.tolist(), experts.tolist()
    parts = []
    for g, span in enumerate(trace.spans):
        toks = range(span.start, span.stop)
        cols = [[(el[t][i], round(wl[t][i], 2)) for i in range(k)] for t in toks]
        chosen = sorted({e for t in toks for e in el[t]})
        rep = " moe-rep" if span.start > 0 and el[span.start][0] == el[span.start - 1][0] else ""
        parts.append(
            f'<span class="moe-tok{rep}{state_class(g, chosen, selected, dimmed)}" data-g="{g}" '
            f'data-experts="{" ".join(map(str, chosen))}" style="{bands(cols, trace.num_experts)}">'
            f"<bdi>{visible(span.text)}</bdi></span>"
        )
    for start, stop in reversed(rtl_runs([span.text for span in trace.spans])):
        parts[start:stop] = [f'<bdi dir="rtl">{"".join(parts[start:stop])}</bdi>']
    return (
        f'<div class="moe-text" dir="ltr" style="{FONT};font-size:14px;line-height:2;white-space:pre-wrap;'
        f'color:#000">{"".join(parts)}</div>'
    )


def layers_html(
    trace: RoutingTrace,
    k: int | None = None,
    *,
    id_prefix: str = "moe-layers",
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """Every layer's routing of the text, stacked, with the first-choice and repeats toggles."""
    k = trace.check_k(k)
    p = check_prefix(id_prefix)
    root = f"{p}-stack"
    style = (
        f"<style>#{root} .moe-fc:checked ~ .moe-stack .moe-tok{{background-image:none!important}}"
        f"#{root} .moe-rp:checked ~ .moe-stack .moe-rep{{outline:2px dashed var(--jp-content-font-color0,#000);"
        "outline-offset:-2px}"
        f"#{root} .moe-layer-head{{margin:6px 0 0;font-size:12px;font-weight:bold}}</style>"
    )
    rows = []
    for layer in range(trace.num_layers):
        share = repeat_share(trace, layer)
        head = (
            f'<p class="moe-layer-head" data-layer="{layer}" data-repeat="{share:.4f}">layer {layer} · neighbours '
            f"sharing their first expert: {100 * share:.0f} % (random: {100 / trace.num_experts:.1f} %)</p>"
        )
        body = layer_text(trace, layer, k, selected, dimmed)
        rows.append(f'<div class="moe-layer-row">{head}{body}</div>')
    toggles = (
        f'<input type="checkbox" class="moe-fc" id="{root}-fc" checked>'
        f'<label for="{root}-fc" style="font-size:12px;margin-right:12px"> first choice only</label>'
        f'<input type="checkbox" class="moe-rp" id="{root}-rp" checked>'
        f'<label for="{root}-rp" style="font-size:12px"> outline repeats</label>'
    )
    note = (
        f"<p style=\"{NOTE}\">The paper's Fig. 8 for this text: one row per layer, each token's background its "
        f"first-choice expert (untick for the top-{k} bands); a dashed outline marks a token that keeps the "
        "previous token's first expert.</p>"
    )
    return (
        f'<div id="{root}" class="moe-layers">{style_block(root, trace.num_experts)}{style}{note}{toggles}'
        f'<div class="moe-stack">{"".join(rows)}</div></div>'
    )

"""Static HTML for routed text: each character span coloured by the experts its tokens chose.

Self-contained HTML (inline styles, deterministic ids, no scripts), so it shows the same in
JupyterLab, on GitHub / nbviewer and under nbval; the routing explorer (notebook 06) uses the
same functions for its live views. A token's background is its k chosen experts stacked top to
bottom, each band as tall as the expert's renormalised weight; a span made of several byte tokens
(one Chinese character = 3 tokens) is split into one column per token. Hovering a span opens a
card with its tokens' top-k experts and weights (pure CSS: instant, no `title` delay).
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence
from html import escape

from moe_edu.course.palette import EXPERT_PALETTE, expert_colour
from moe_edu.course.widgets.text_spans import visible
from moe_edu.course.widgets.trace import RoutingTrace

PALETTE = EXPERT_PALETTE  # the course's expert palette (moe_edu.course.plots)
FONT = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
NOTE = "margin:2px 0;font-size:12px;color:var(--jp-content-font-color1,#333)"  # JupyterLab's theme text colour
# the sentences that invite clicks: only the live explorer reacts to them (its static picture drops them)
CLICK_LEGEND = "Click an expert to dim the others, a token to follow it through the layers."
CLICK_FLOW = "Click a token to select it, an expert in the legend to dim the rest."
JOINING = {"AL"}  # Unicode bidi class of Arabic-script letters (Arabic, Syriac, Thaana, N'Ko), which join


def check_prefix(id_prefix: str) -> str:
    """`id_prefix` if it is safe in an id and a CSS selector (letters, digits, '-', '_'), else ValueError."""
    if not isinstance(id_prefix, str) or not id_prefix or not id_prefix.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"id_prefix must be letters, digits, '-' or '_', got {id_prefix!r}")
    if not id_prefix.isascii() or not id_prefix[0].isalpha():
        raise ValueError(f"id_prefix must be ASCII and start with a letter, got {id_prefix!r}")
    return escape(id_prefix, quote=True)


def token_label(token: str, visible_space: bool = False) -> str:
    """Escaped, visible text for one token or span (see `text_spans.visible`), as plain text."""
    return visible(token, html=False, visible_space=visible_space)


def state_class(g: int | None, experts: Sequence[int], selected: int | None, dimmed: int | None) -> str:
    """' moe-sel' for parts of the selected span, ' moe-dim' for parts without the highlighted expert."""
    cls = " moe-sel" if selected is not None and g == selected else ""
    return cls + (" moe-dim" if dimmed is not None and dimmed not in experts else "")


def style_block(root_id: str, num_experts: int) -> str:
    """The CSS the views need, scoped to `#root_id`: hover cards, selection, dimming, cell padding and
    one `.moe-e{e}` background class per expert (used inside hover cards only). Colours that carry
    meaning are inline, so a page that strips `<style>` (GitHub) still shows them, without the cards."""
    r = f"#{root_id}"
    experts = "".join(f"{r} .moe-e{e}{{background:{expert_colour(e, num_experts)}}}" for e in range(num_experts))
    return (
        f"<style>{r} .moe-tok{{position:relative;cursor:pointer}}"
        f"{r} .moe-tok:hover>.moe-card{{display:block!important}}"
        f"{r} .moe-card{{position:absolute;left:0;top:100%;z-index:20;background:var(--jp-layout-color0,#fff);"
        "color:var(--jp-content-font-color0,#000);"
        "border:1px solid #888;border-radius:4px;padding:4px 6px;font:12px/1.7 sans-serif;white-space:nowrap;"
        "box-shadow:0 2px 6px rgba(0,0,0,.25);text-align:left}"
        f"{r} .moe-chip{{color:#000;padding:0 4px;margin-right:3px;border-radius:3px;white-space:nowrap}}"
        f"{r} {BARS_CSS.replace('} .', f'}} {r} .')}"
        f"{r} .moe-c{{padding:1px 4px;border:1px solid #e4e4e4;text-align:center;white-space:nowrap}}"
        f"{r} .moe-sel:not(path):not(text){{outline:2px solid var(--jp-content-font-color0,#111)!important;outline-offset:1px;"
        "position:relative;z-index:1}"
        f"{r} tr.moe-sel>th{{background-color:#fff3b0!important}}"
        f"{r} .moe-dim{{opacity:.2}}{r} [data-g]{{cursor:pointer}}"
        f"{r} .moe-legend-item{{cursor:pointer;user-select:none}}{r} text.moe-sel{{font-weight:bold}}"
        f"{r} path.moe-sel{{stroke-opacity:1}}{r}:has(path.moe-sel) path.moe-line:not(.moe-sel){{stroke-opacity:.12}}"
        f"{experts}</style>"
    )


MANY_TOKENS = 3  # a character of this many byte tokens or more gets a strip of columns, not slivers


def _stack(col: Sequence[tuple[int, float]], num_experts: int, direction: str = "") -> str:
    """One token's experts as hard colour stops (heights or widths from the weights, whole percent)."""
    stops, top = [], 0
    for i, (e, w) in enumerate(col):
        colour = expert_colour(e, num_experts)
        if i == len(col) - 1:
            stops.append(f"{colour} 0" if i else colour)
        else:
            top = min(100, top + round(100 * w))
            stops.append(f"{colour} {'0 ' if i else ''}{top}%")
    if len(stops) == 1:
        stops.append(stops[0])
    return f"linear-gradient({direction}{','.join(stops)})"


def bands(columns: Sequence[Sequence[tuple[int, float]]], num_experts: int) -> str:
    """CSS background for one span: each token's experts stacked top to bottom with heights from their weights
    (rounded to whole percent, so the HTML is the same on every CPU), one column per token. A character of
    `MANY_TOKENS` byte tokens or more (👍🏽 is 8) would be slivers under its glyph: it shows its first token's
    bands in full and a 4 px strip along the bottom with one segment per token in that token's first expert."""
    n = len(columns)
    first = columns[0][0][0] if columns and columns[0] else 0
    if n >= MANY_TOKENS:
        strip = _stack([(col[0][0], 1 / n) for col in columns], num_experts, "to right,")
        layers = [f"{strip} left bottom/100% 4px no-repeat", _stack(columns[0], num_experts)]
    else:
        layers = []
        for c, col in enumerate(columns):
            grad = _stack(col, num_experts)
            if n > 1:
                grad += f" {round(100 * c / (n - 1))}% 0/{100 / n + 0.5:.1f}% 100% no-repeat"
            layers.append(grad)
    return f"background:{','.join(layers)};background-color:{expert_colour(first, num_experts)}"


def chip(expert: int, weight: float | None, num_experts: int, *, inline: bool = True) -> str:
    """A small coloured label 'e3 0.62' (weight to 2 decimals), coloured by an inline style (so it shows
    wherever the card is drawn). `inline`: with data-w holding 4 decimals for tests; else (the hover
    cards, whose text must be the same on every CPU: the static picture in notebook 06) without it."""
    w = "" if weight is None else f" {weight:.2f}"
    data = "" if weight is None or not inline else f' data-w="{weight:.4f}"'  # no 4-digit data in cards
    colour = f' style="background:{expert_colour(expert, num_experts)}"'
    cls = "moe-chip" if inline else f"moe-chip moe-e{expert}"
    return f'<span class="{cls}" data-expert="{expert}" data-experts="{expert}"{data}{colour}>e{expert}{w}</span>'


def notice_html(trace: RoutingTrace) -> str:
    """A visible note when the text was cut to the model's context, else ''."""
    if not trace.truncated:
        return ""
    return (
        f'<p class="moe-notice" style="color:#a63603;margin:2px 0;font-size:12px">Showing the first '
        f"{trace.num_tokens} of {trace.num_input_tokens} tokens: the rest is cut (by the model's context or by max_tokens).</p>"
    )


def legend_html(
    num_experts: int,
    counts: Sequence[int] | None = None,
    *,
    topk_counts: Sequence[int] | None = None,
    layer: int | None = None,
    k: int | None = None,
    dimmed: int | None = None,
) -> str:
    """One swatch per expert with its counts, and a line saying what the counts and colours mean."""
    items = []
    for e in range(num_experts):
        n = "" if counts is None else f" · {counts[e]}"
        n += "" if topk_counts is None or k == 1 else f" / {topk_counts[e]}"
        dim = " moe-dim" if dimmed is not None and dimmed != e else ""
        items.append(
            f'<span class="moe-legend-item{dim}" data-expert="{e}" style="background:{expert_colour(e, num_experts)};'
            f"color:#000;padding:1px 6px;margin:0 4px 2px 0;border-radius:3px;display:inline-block;"
            f'white-space:nowrap;font-size:12px">expert {e}{n}</span>'
        )
    where = "" if layer is None else f" at layer {layer}"
    if counts is None:
        meaning = ""
    elif topk_counts is None or k == 1:
        meaning = f"number = tokens whose first choice is this expert{where}. "
    else:
        meaning = f"numbers = tokens with this expert first / among their top-{k}{where}. "
    explain = (
        f'<p style="{NOTE}">{meaning}Colour bands: each token\'s top-{k or "k"} experts stacked top to bottom, '
        "each as tall as its renormalised weight; a character made of several byte tokens has one column per token. "
        f"{CLICK_LEGEND}</p>"
    )
    return f'<div class="moe-legend" style="margin:4px 0">{"".join(items)}{explain}</div>'


BAR_PX = 20  # height of a probability of 1 in the card's router bars
# the bars' common style (the live explorer's floating card repeats it in view.py, outside this scope)
BARS_CSS = (
    f".moe-bars{{display:inline-flex;align-items:flex-end;height:{BAR_PX}px;vertical-align:-4px;margin:0 4px}}"
    " .moe-bar{display:inline-block;width:6px;margin-right:1px;opacity:.55}"
    " .moe-bar.moe-k{opacity:1;outline:1px solid currentColor}"
    " .moe-wbar{display:inline-block;width:6px;margin-right:1px}"
)


def router_bars(probs: Sequence[float], chosen: Sequence[int], num_experts: int) -> str:
    """The router of one token in miniature: the softmax over all E experts as E bars in expert colours
    (heights from probabilities rounded to 2 decimals, so the same on every CPU), the top-k outlined."""
    bars = [
        f'<i class="moe-bar{" moe-k" if e in chosen else ""}" style="height:{max(1, round(BAR_PX * round(p, 2)))}px;'
        f'background:{expert_colour(e, num_experts)}"></i>'
        for e, p in enumerate(probs)
    ]
    return f'<span class="moe-bars">{"".join(bars)}</span>'


def weight_bars(weights: Sequence[float], chosen: Sequence[int], num_experts: int) -> str:
    """The renormalised weights of one token as E bars in expert colours (height 0 for the experts not chosen;
    heights from weights rounded to 2 decimals), beside `router_bars`: moving k in the explorer animates the
    outline moving to the new top-k, then these bars growing or shrinking to the new weights."""
    w = dict(zip(chosen, weights, strict=True))
    bars = [
        f'<i class="moe-wbar" style="height:{round(BAR_PX * round(w.get(e, 0.0), 2))}px;'
        f'background:{expert_colour(e, num_experts)}"></i>'
        for e in range(num_experts)
    ]
    return f'<span class="moe-bars moe-wbars">{"".join(bars)}</span>'


def card_html(trace: RoutingTrace, g: int, layer: int, weights: list, experts: list, probs: list) -> str:
    """The hover card of span `g`: its text, then for each token the router's softmax over all experts
    (bars, top-k outlined), the probability mass the top-k keep, and the renormalised weights (bars and
    chips) (lists: weights, experts (T, k); probs (T, E)). What notebooks 01-04 build, for one token."""
    span = trace.spans[g]
    n = span.stop - span.start
    lines = [f"<b>{visible(span.text, html=False)}</b> · layer {layer}, top-{len(experts[0])}"]
    for i, t in enumerate(range(span.start, span.stop)):
        part = f" ({i + 1}/{n})" if n > 1 else ""
        pairs = zip(weights[t], experts[t], strict=True)
        chips = "".join(chip(e, w, trace.num_experts, inline=False) for w, e in pairs)
        kept = sum(probs[t][e] for e in experts[t])
        bars = router_bars(probs[t], experts[t], trace.num_experts)
        renormalised = weight_bars(weights[t], experts[t], trace.num_experts)
        lines.append(f"token {t}{part}, id {trace.token_ids[t]}: {bars}keeps {kept:.2f} → {renormalised}{chips}")
    return f'<span class="moe-card" dir="ltr" style="display:none">{"<br>".join(lines)}</span>'


def joined_edges(texts: Sequence[str]) -> list[tuple[bool, bool]]:
    """(joins the previous span, joins the next span) per span: both sides' letters belong to a joining
    script. The tokens view puts a zero-width joiner (U+200D) at such edges, the usual way to keep
    contextual forms across element boundaries, so "مرحبا" is drawn joined although each letter is
    its own coloured span."""

    def joining(ch: str) -> bool:
        return unicodedata.bidirectional(ch) in JOINING

    links = [bool(a) and bool(b) and joining(a[-1]) and joining(b[0]) for a, b in itertools.pairwise(texts)]
    return [(g > 0 and links[g - 1], g < len(links) and links[g]) for g in range(len(texts))]


def _direction(text: str) -> str:
    """'R' for right-to-left text (Hebrew, Arabic letters and no Latin ones), 'L' for left-to-right, 'N' neutral."""
    kinds = {unicodedata.bidirectional(ch) for ch in text}
    if "L" in kinds:
        return "L"
    return "R" if kinds & {"R", "AL"} else "N"


def rtl_runs(texts: Sequence[str]) -> list[tuple[int, int]]:
    """`(start, stop)` of each run of right-to-left spans (with the neutral spans between them): the tokens
    view isolates each run with `<bdi dir="rtl">`, so "שלום" reads right to left, not as reversed letters."""
    dirs = [_direction(t) for t in texts]
    runs, g = [], 0
    while g < len(dirs):
        if dirs[g] != "R":
            g += 1
            continue
        stop = g + 1
        for h in range(g + 1, len(dirs)):
            if dirs[h] == "L":
                break
            if dirs[h] == "R":
                stop = h + 1
        runs.append((g, stop))
        g = stop
    return runs


def render_routing_html(
    trace: RoutingTrace,
    layer: int,
    k: int | None = None,
    *,
    id_prefix: str = "moe-routing",
    legend: bool = True,
    notice: bool = True,
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """The text of `trace`, each span coloured by its tokens' top-`k` experts at `layer` (default k:
    the model's). Span g is `<span id="{id_prefix}-L{layer}-g{g}" class="moe-tok" data-g data-t data-expert>`
    (data-expert: the first token's first choice; data-t: the token indices); `selected` / `dimmed`
    mark a span / an expert as the explorer does; `repeats` marks (class `moe-rep`) each span whose first
    token keeps the previous token's first-choice expert (the paper's Table 5, made visible)."""
    if not isinstance(trace, RoutingTrace):
        raise TypeError(f"trace must be a RoutingTrace (see trace_routing), got {type(trace).__name__}")
    layer, k = trace.check_layer(layer), trace.check_k(k)
    p = check_prefix(id_prefix)
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    wl, el = weights.tolist(), experts.tolist()
    pl = trace.probs[layer].tolist()  # (T, E) the router's softmax over all experts, for the cards
    parts = []
    joins = joined_edges([span.text for span in trace.spans])
    for g, span in enumerate(trace.spans):
        toks = range(span.start, span.stop)
        cols = [[(el[t][i], round(wl[t][i], 2)) for i in range(k)] for t in toks]
        chosen = sorted({e for t in toks for e in el[t]})
        newline = "<br>" if "\n" in span.text else ""
        before, after = ("&zwj;" if j else "" for j in joins[g])  # keep Arabic letters in their joined forms
        edge = "0" if joins[g][1] else "1px solid var(--jp-layout-color0,#fff)"
        parts.append(
            f'<span id="{p}-L{layer}-g{g}" class="moe-tok{state_class(g, chosen, selected, dimmed)}" data-g="{g}" '
            f'data-t="{" ".join(map(str, toks))}" data-expert="{el[span.start][0] if toks else -1}" '
            f'data-experts="{" ".join(map(str, chosen))}" style="{bands(cols, trace.num_experts)};color:#000;'
            f'padding:2px 0 3px;border-right:{edge}"><bdi>{before}{visible(span.text)}{after}</bdi>'
            f"{card_html(trace, g, layer, wl, el, pl)}</span>{newline}"
        )
    for start, stop in reversed(rtl_runs([span.text for span in trace.spans])):
        parts[start:stop] = [f'<bdi dir="rtl" class="moe-rtl">{"".join(parts[start:stop])}</bdi>']
    first = [el[t][0] for t in range(trace.num_tokens)]
    counts = [first.count(e) for e in range(trace.num_experts)]
    in_topk = [sum(e in row for row in el) for e in range(trace.num_experts)]
    return "".join(
        [
            f'<div id="{p}-L{layer}" class="moe-routing" data-layer="{layer}" data-k="{k}">',
            style_block(f"{p}-L{layer}", trace.num_experts),
            notice_html(trace) if notice else "",
            f'<div class="moe-text" dir="ltr" style="{FONT};font-size:15px;line-height:2.2;white-space:pre-wrap;'
            f'color:#000">{"".join(parts)}</div>',
            legend_html(trace.num_experts, counts, topk_counts=in_topk, layer=layer, k=k, dimmed=dimmed)
            if legend
            else "",
            "</div>",
        ]
    )

"""Static HTML for routed text: each token coloured by its first-choice expert.

Self-contained HTML (inline styles, no scripts, deterministic ids), so it shows the same
in JupyterLab, on GitHub / nbviewer and under nbval; the routing explorer (notebook 06)
uses the same function for its live token view. Hovering a token shows its top-k experts
and renormalised weights (the `title` attribute: no JavaScript needed).
"""

from __future__ import annotations

import colorsys
from html import escape

from .trace import RoutingTrace

# ColorBrewer Set3: pastel backgrounds that keep black text readable.
PALETTE = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462",
           "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f")


def expert_colour(expert: int, num_experts: int) -> str:
    """A fixed background colour per expert; beyond 12 experts, evenly spaced pastel hues."""
    if num_experts <= len(PALETTE):
        return PALETTE[expert]
    r, g, b = colorsys.hls_to_rgb(expert / num_experts, 0.8, 0.6)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def token_label(token: str, visible_space: bool = False) -> str:
    """Escaped, visible text for one token: newlines and tabs become arrows, empty becomes ∅
    (and spaces become ␣ with `visible_space`, for table headers where a blank would vanish)."""
    if token == "":
        return "∅"
    label = escape(token).replace("\t", "⇥").replace("\r", "").replace("\n", "↵")
    return label.replace(" ", "␣") if visible_space else label


def token_detail(trace: RoutingTrace, t: int, weights, experts) -> str:
    """The hover text of token `t`: its text, then one `expert e: w` line per chosen expert."""
    lines = [f"token {t}: {trace.tokens[t]!r} (id {trace.token_ids[t]})"]
    lines += [f"expert {int(e)}: {float(w):.3f}" for w, e in zip(weights[t], experts[t])]
    return escape("\n".join(lines), quote=True).replace("\n", "&#10;")


def notice_html(trace: RoutingTrace) -> str:
    """A visible note when the text was cut to the model's context, else ''."""
    if not trace.truncated:
        return ""
    return (f'<p class="moe-notice" style="color:#a63603;margin:2px 0">Showing the first {trace.num_tokens} '
            f"of {trace.num_input_tokens} tokens: the rest does not fit the model's context.</p>")


def legend_html(num_experts: int, counts: list[int] | None = None) -> str:
    """One coloured swatch per expert, optionally with how many tokens chose it first."""
    items = []
    for e in range(num_experts):
        n = "" if counts is None else f" ({counts[e]})"
        items.append(f'<span class="moe-legend-item" data-expert="{e}" '
                     f'style="background:{expert_colour(e, num_experts)};'
                     f'padding:0 6px;margin:0 4px 2px 0;border-radius:3px;display:inline-block;white-space:nowrap">'
                     f"expert {e}{n}</span>")
    return f'<div class="moe-legend" style="margin:4px 0;font-family:monospace">{"".join(items)}</div>'


def render_routing_html(trace: RoutingTrace, layer: int, k: int | None = None, *, id_prefix: str = "moe-routing",
                        legend: bool = True) -> str:
    """The text of `trace` with each token coloured by its first-choice expert at `layer`.

    Each token is a `<span id="{id_prefix}-L{layer}-t{i}" data-expert="e">`; its `title`
    lists the top-`k` experts (default: the model's k) with renormalised weights.
    """
    if not isinstance(trace, RoutingTrace):
        raise TypeError(f"trace must be a RoutingTrace (see trace_routing), got {type(trace).__name__}")
    layer, k = trace.check_layer(layer), trace.check_k(k)
    if not isinstance(id_prefix, str) or not id_prefix.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"id_prefix must be letters, digits, '-' or '_', got {id_prefix!r}")
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    first = experts[:, 0].tolist()  # (T,)
    spans = []
    for t, tok in enumerate(trace.tokens):
        e = first[t]
        newline = "<br>" if "\n" in tok else ""
        spans.append(f'<span id="{id_prefix}-L{layer}-t{t}" class="moe-tok" data-token="{t}" data-expert="{e}" '
                     f'title="{token_detail(trace, t, weights, experts)}" '
                     f'style="background:{expert_colour(e, trace.num_experts)};color:#000;'
                     f'padding:1px 0;border-right:1px solid #fff">{token_label(tok)}</span>{newline}')
    counts = [first.count(e) for e in range(trace.num_experts)]
    parts = [f'<div id="{id_prefix}-L{layer}" class="moe-routing" data-layer="{layer}" data-k="{k}">',
             notice_html(trace),
             f'<div style="font-family:monospace;line-height:1.9;white-space:pre-wrap">{"".join(spans)}</div>',
             legend_html(trace.num_experts, counts) if legend else "",
             "</div>"]
    return "".join(parts)

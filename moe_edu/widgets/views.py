"""The explorer's other views as plain HTML: probability heatmap, expert load, all-layers grid, top-k.

Plain HTML tables (inline styles, deterministic ids) rather than figures: they update fast
from a kernel callback, carry their numbers in `data-*` attributes for tests, and render
the same everywhere. See notebook 06.
"""

from __future__ import annotations

from .render import expert_colour, token_label
from .trace import RoutingTrace

_TABLE = 'style="border-collapse:collapse;font-family:monospace;font-size:12px"'
_CELL = "padding:1px 4px;border:1px solid #eee;text-align:center"


def _label(token: str) -> str:
    return token_label(token, visible_space=True)  # a blank header cell would hide a space token


def _chip(expert: int, weight: float, num_experts: int) -> str:
    return (f'<span class="moe-chip" data-expert="{expert}" data-w="{weight:.4f}" style="background:'
            f'{expert_colour(expert, num_experts)};padding:0 4px;margin-right:3px;border-radius:3px">'
            f"e{expert} {weight:.3f}</span>")


def heatmap_html(trace: RoutingTrace, layer: int, k: int | None = None, *, id_prefix: str = "moe-heatmap") -> str:
    """Tokens x experts table of router probabilities at `layer`; the top-k chosen cells are bold."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    probs = trace.probs[layer]  # (T, E)
    top = float(probs.max())  # shade relative to the layer's largest probability
    chosen = trace.topk(layer, k)[1].tolist()  # (T, k)
    head = "".join(f'<th style="{_CELL}">e{e}</th>' for e in range(trace.num_experts))
    rows = []
    for t, tok in enumerate(trace.tokens):
        cells = []
        for e, p in enumerate(probs[t].tolist()):
            bold = "font-weight:bold;outline:2px solid #333;" if e in chosen[t] else ""
            shade = f"background:rgba(49,130,189,{0.8 * p / top:.3f})"
            cells.append(f'<td data-p="{p:.4f}" style="{_CELL};{bold}{shade}">{p:.2f}</td>')
        rows.append(f'<tr id="{id_prefix}-L{layer}-t{t}"><th style="{_CELL};text-align:right">{_label(tok)}</th>'
                    f'{"".join(cells)}</tr>')
    return (f'<div class="moe-heatmap" data-layer="{layer}" style="max-height:420px;overflow:auto">'
            f'<p style="margin:2px 0">Router probabilities at layer {layer} (softmax over all '
            f"{trace.num_experts} experts; darker = larger, relative to the largest, {top:.2f}); "
            f"outlined: the top-{k} chosen.</p>"
            f'<table {_TABLE}><tr><th></th>{head}</tr>{"".join(rows)}</table></div>')


def load_html(trace: RoutingTrace, layer: int, k: int | None = None, *, id_prefix: str = "moe-load") -> str:
    """One bar per expert: its share of the T*k routed slots at `layer`, against the uniform 1/E."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    load = trace.load(layer, k).tolist()  # (E,)
    top = max(load) or 1.0
    rows = []
    for e, share in enumerate(load):
        bar = (f'<div style="background:{expert_colour(e, trace.num_experts)};width:{200 * share / top:.1f}px;'
               f'height:12px;border:1px solid #999"></div>')
        rows.append(f'<tr id="{id_prefix}-L{layer}-e{e}" data-expert="{e}" data-share="{share:.4f}">'
                    f'<td style="{_CELL}">expert {e}</td><td style="{_CELL};width:210px">{bar}</td>'
                    f'<td style="{_CELL}">{100 * share:.1f}%</td></tr>')
    return (f'<div class="moe-load" data-layer="{layer}"><p style="margin:2px 0">Expert load at layer {layer}: share '
            f"of the {trace.num_tokens} x {k} routed slots (uniform: {100 / trace.num_experts:.1f}% each).</p>"
            f'<table {_TABLE}>{"".join(rows)}</table></div>')


def overview_html(trace: RoutingTrace, *, id_prefix: str = "moe-overview") -> str:
    """Layers x tokens grid, each cell coloured (and labelled) by the token's first-choice expert."""
    first = trace.first_choices().tolist()  # (L, T)
    head = "".join(f'<th style="{_CELL}">{_label(tok)}</th>' for tok in trace.tokens)
    rows = []
    for layer, experts in enumerate(first):
        cells = "".join(f'<td data-expert="{e}" style="{_CELL};background:{expert_colour(e, trace.num_experts)}">'
                        f"{e}</td>" for e in experts)
        rows.append(f'<tr id="{id_prefix}-L{layer}"><th style="{_CELL}">layer {layer}</th>{cells}</tr>')
    return (f'<div class="moe-overview" style="overflow-x:auto"><p style="margin:2px 0">First-choice expert of every '
            f"token (columns) at every layer (rows).</p>"
            f'<table {_TABLE}><tr><th></th>{head}</tr>{"".join(rows)}</table></div>')


def topk_html(trace: RoutingTrace, layer: int, k: int | None = None, *, id_prefix: str = "moe-topk") -> str:
    """Per token: the k chosen experts with renormalised weights, the probability mass they keep,
    and (when k differs) the model's own top-k for comparison."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    kept = trace.probs[layer].topk(k, dim=-1).values.sum(-1).tolist()  # (T,)
    compare = k != trace.top_k
    if compare:
        w0, e0 = trace.topk(layer, trace.top_k)  # (T, k0), (T, k0)
    rows = []
    for t, tok in enumerate(trace.tokens):
        chips = "".join(_chip(int(e), float(w), trace.num_experts) for w, e in zip(weights[t], experts[t]))
        extra = ""
        if compare:
            extra = f'<td style="{_CELL}">' + "".join(
                _chip(int(e), float(w), trace.num_experts) for w, e in zip(w0[t], e0[t])) + "</td>"
        rows.append(f'<tr id="{id_prefix}-L{layer}-t{t}"><th style="{_CELL};text-align:right">{_label(tok)}</th>'
                    f'<td style="{_CELL};text-align:left">{chips}</td>'
                    f'<td style="{_CELL}">{kept[t]:.3f}</td>{extra}</tr>')
    extra_head = f'<th style="{_CELL}">model (k={trace.top_k})</th>' if compare else ""
    return (f'<div class="moe-topk" data-layer="{layer}" data-k="{k}" style="max-height:420px;overflow:auto">'
            f'<p style="margin:2px 0">k = {k}: the chosen experts and their weights, renormalised to sum to 1 '
            f"(weight = p / mass kept). k = 1 gives weight 1; k = {trace.num_experts} keeps the whole softmax.</p>"
            f'<table {_TABLE}><tr><th></th><th style="{_CELL}">top-{k} (weight)</th>'
            f'<th style="{_CELL}">mass kept</th>{extra_head}</tr>{"".join(rows)}</table></div>')

"""The explorer's other views as plain HTML: probability heatmap, expert load, all-layers grid, top-k, path.

Plain HTML tables (inline styles, deterministic ids) rather than figures: they update fast from a
kernel callback, carry their numbers in `data-*` attributes for tests, and render the same
everywhere. Rows and cells carry `data-g` (the span they belong to) and `data-experts` so the
explorer can highlight a selected span and dim all but one expert. See notebook 06.
"""

from __future__ import annotations

from moe_edu.course.widgets.trace import RoutingTrace

from ..palette import expert_colour
from .render import FONT, NOTE, bands, check_prefix, chip, state_class, style_block, token_label

_TABLE = f'style="border-collapse:collapse;{FONT};font-size:12px"'
_SHADE = "49,130,189"  # heatmap blue


def token_labels(trace: RoutingTrace) -> list[str]:
    """One plain, visible label per token: its span's text, with 'i/n' when the span has n > 1 tokens."""
    labels = []
    for span in trace.spans:
        n = span.stop - span.start
        text = token_label(span.text, visible_space=True)
        labels += [text if n == 1 else f"{text} {i + 1}/{n}" for i in range(n)]
    return labels


def _wrap(cls: str, root: str, num_experts: int, body: str, extra: str = "") -> str:
    return f'<div id="{root}" class="{cls}"{extra}>{style_block(root, num_experts)}{body}</div>'


def heatmap_html(
    trace: RoutingTrace,
    layer: int,
    k: int | None = None,
    *,
    id_prefix: str = "moe-heatmap",
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """Tokens x experts table of router probabilities at `layer`; the top-k chosen cells are outlined."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    p = check_prefix(id_prefix)
    probs = trace.probs[layer]  # (T, E)
    top = float(probs.max())  # shade relative to the layer's largest probability
    chosen = trace.topk(layer, k)[1].tolist()  # (T, k)
    labels, span_of = token_labels(trace), trace.span_of_token
    head = "".join(f'<th data-experts="{e}" class="moe-c">e{e}</th>' for e in range(trace.num_experts))
    rows = []
    for t, row in enumerate(probs.tolist()):
        g = span_of[t]
        cells = []
        for e, pr in enumerate(row):
            bold = (
                "font-weight:bold;outline:2px solid var(--jp-content-font-color0,#333);outline-offset:-2px;"
                if e in chosen[t]
                else ""
            )
            cells.append(  # --a: the absolute 0-1 shade, shown when the scale toggle is on (pure CSS)
                f'<td data-p="{pr:.4f}" data-experts="{e}" class="moe-c" style="{bold}--a:{0.8 * pr:.2f};'
                f'background:rgba({_SHADE},{0.8 * pr / top:.2f})">{pr:.2f}</td>'
            )
        rows.append(
            f'<tr id="{p}-L{layer}-t{t}" class="{state_class(g, [], selected, None).strip()}" data-g="{g}">'
            f'<th class="moe-c" style="text-align:right">{labels[t]}</th>{"".join(cells)}</tr>'
        )
    scale = (
        f'<span style="display:inline-block;width:120px;height:11px;vertical-align:middle;border:1px solid #999;'
        f'background:linear-gradient(to right,rgba({_SHADE},0),rgba({_SHADE},.8))"></span>'
    )
    root = f"{p}-L{layer}"
    note = (
        f'<p style="{NOTE}">Router probabilities at layer {layer}: softmax over all {trace.num_experts} experts, '
        f'one row per token. Shade: 0 {scale} <span class="moe-rel">{top:.2f} (the layer\'s largest)</span>'
        f'<span class="moe-abs-label">1 (absolute)</span>. Outlined: the top-{k} chosen. Click a row to select its token.</p>'
    )
    toggle = (  # a nearly uniform router must not look decisive: the absolute scale shows it pale
        f"<style>#{root} .moe-abs-label{{display:none}}#{root} .moe-abs:checked ~ p .moe-abs-label{{display:inline}}"
        f"#{root} .moe-abs:checked ~ p .moe-rel{{display:none}}"
        f"#{root} .moe-abs:checked ~ div td[data-p]{{background:rgba({_SHADE},var(--a))!important}}</style>"
        f'<input type="checkbox" class="moe-abs" id="{root}-abs"><label for="{root}-abs" style="font-size:12px">'
        " absolute 0–1 scale</label>"
    )
    table = f"<table {_TABLE}><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    body = f'{toggle}{note}<div style="max-height:420px;overflow:auto">{table}</div>'
    return _wrap("moe-heatmap", root, trace.num_experts, body, f' data-layer="{layer}"')


def load_html(
    trace: RoutingTrace, layer: int, k: int | None = None, *, id_prefix: str = "moe-load", dimmed: int | None = None
) -> str:
    """One bar per expert: its share of the T*k routed slots at `layer`, against the uniform 1/E."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    p = check_prefix(id_prefix)
    load = trace.load(layer, k).tolist()  # (E,)
    top = max(max(load), 1 / trace.num_experts)
    even = 200 / (top * trace.num_experts)
    rows = []
    for e, share in enumerate(load):
        bar = (
            f'<div style="position:relative;width:210px;height:14px"><div style="background:'
            f"{expert_colour(e, trace.num_experts)};width:{200 * share / top:.0f}px;height:14px;"
            f'border:1px solid #777"></div><div style="position:absolute;left:{even:.0f}px;top:-2px;height:18px;'
            f'border-left:2px dashed var(--jp-content-font-color1,#333)"></div></div>'
        )
        rows.append(
            f'<tr id="{p}-L{layer}-e{e}" class="{state_class(None, [e], None, dimmed).strip()}" '
            f'data-expert="{e}" data-experts="{e}" data-share="{share:.4f}">'
            f'<td class="moe-c">expert {e}</td><td class="moe-c">{bar}</td>'
            f'<td class="moe-c">{100 * share:.1f}%</td></tr>'
        )
    note = (
        f'<p style="{NOTE}">Expert load at layer {layer}: each expert\'s share of the {trace.num_tokens} tokens x '
        f"{k} routed slots. Dashed line: the even share, 1/E = {100 / trace.num_experts:.1f}%.</p>"
    )
    body = f"{note}<table {_TABLE}>{''.join(rows)}</table>"
    return _wrap("moe-load", f"{p}-L{layer}", trace.num_experts, body, f' data-layer="{layer}"')


def overview_html(
    trace: RoutingTrace,
    k: int | None = None,
    *,
    id_prefix: str = "moe-overview",
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """Layers x tokens grid: each cell shows the token's top-k experts at that layer as stacked colour
    bands (heights = weights) and the first choice's number."""
    k = trace.check_k(k)
    p = check_prefix(id_prefix)
    labels, span_of = token_labels(trace), trace.span_of_token
    head = "".join(
        f'<th class="moe-c{state_class(span_of[t], [], selected, None)}" data-g="{span_of[t]}">{lab}</th>'
        for t, lab in enumerate(labels)
    )
    rows = []
    for layer in range(trace.num_layers):
        weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
        cells = []
        for t, (ws, es) in enumerate(zip(weights.tolist(), experts.tolist(), strict=True)):
            g = span_of[t]
            cells.append(
                f'<td class="moe-c{state_class(g, es, selected, dimmed)}" data-g="{g}" data-expert="{es[0]}" '
                f'data-experts="{" ".join(map(str, sorted(es)))}" style="'
                f'{bands([[(e, round(w, 2)) for e, w in zip(es, ws, strict=True)]], trace.num_experts)}">'
                f"{es[0]}</td>"
            )
        rows.append(
            f'<tr id="{p}-L{layer}"><th class="moe-c" style="position:sticky;left:0;background:var(--jp-layout-color0,#fff);z-index:2">'
            f"layer&nbsp;{layer}</th>{''.join(cells)}</tr>"
        )
    note = (
        f'<p style="{NOTE}">Every token (columns) at every layer (rows): the number is its first-choice expert, '
        f"the bands its top-{k} experts, each as tall as its weight. Click a column to follow a token.</p>"
    )
    body = f'{note}<div style="overflow-x:auto"><table {_TABLE}><tr><th></th>{head}</tr>{"".join(rows)}</table></div>'
    return _wrap("moe-overview", p, trace.num_experts, body, f' data-k="{k}"')


def topk_html(
    trace: RoutingTrace, layer: int, k: int | None = None, *, id_prefix: str = "moe-topk", selected: int | None = None
) -> str:
    """Per token: the k chosen experts with renormalised weights, the probability mass they keep,
    and (when k differs) the model's own top-k for comparison."""
    layer, k = trace.check_layer(layer), trace.check_k(k)
    p = check_prefix(id_prefix)
    weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
    kept = trace.probs[layer].topk(k, dim=-1).values.sum(-1).tolist()  # (T,)
    compare = k != trace.top_k
    if compare:
        w0, e0 = trace.topk(layer, trace.top_k)  # (T, k0), (T, k0)
    labels, span_of, E = token_labels(trace), trace.span_of_token, trace.num_experts
    rows = []
    for t in range(trace.num_tokens):
        g = span_of[t]
        chips = "".join(chip(int(e), float(w), E) for w, e in zip(weights[t], experts[t], strict=True))
        extra = ""
        if compare:
            extra = (
                '<td class="moe-c" style="text-align:left">'
                + "".join(chip(int(e), float(w), E) for w, e in zip(w0[t], e0[t], strict=True))
                + "</td>"
            )
        rows.append(
            f'<tr id="{p}-L{layer}-t{t}" class="{state_class(g, [], selected, None).strip()}" data-g="{g}">'
            f'<th class="moe-c" style="text-align:right">{labels[t]}</th>'
            f'<td class="moe-c" style="text-align:left">{chips}</td>'
            f'<td class="moe-c">{kept[t]:.2f}</td>{extra}</tr>'
        )
    extra_head = f'<th class="moe-c">model (k={trace.top_k})</th>' if compare else ""
    note = (
        f'<p style="{NOTE}">k = {k}: the chosen experts and their weights, renormalised to sum to 1 '
        f"(weight = p / mass kept). k = 1 gives weight 1; k = {E} keeps the whole softmax.</p>"
    )
    body = (
        f'{note}<div style="max-height:420px;overflow:auto"><table {_TABLE}><tr><th></th>'
        f'<th class="moe-c">top-{k} (weight)</th><th class="moe-c">mass kept</th>{extra_head}</tr>'
        f"{''.join(rows)}</table></div>"
    )
    return _wrap("moe-topk", f"{p}-L{layer}", trace.num_experts, body, f' data-layer="{layer}" data-k="{k}"')


def path_html(trace: RoutingTrace, g: int, k: int | None = None, *, id_prefix: str = "moe-path") -> str:
    """The route of span `g` through every layer: each of its tokens' top-k experts and weights."""
    k = trace.check_k(k)
    p = check_prefix(id_prefix)
    if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < len(trace.spans):
        raise ValueError(f"span index must be an int in [0, {len(trace.spans)}), got {g!r}")
    span = trace.spans[g]
    rows = []
    for layer in range(trace.num_layers):
        weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
        cells = "".join(
            '<td class="moe-c" style="text-align:left">'
            + "".join(chip(int(e), float(w), trace.num_experts) for w, e in zip(weights[t], experts[t], strict=True))
            + "</td>"
            for t in range(span.start, span.stop)
        )
        rows.append(f'<tr data-layer="{layer}"><th class="moe-c">layer&nbsp;{layer}</th>{cells}</tr>')
    n = span.stop - span.start
    head = "".join(f'<th class="moe-c">token {t}</th>' for t in range(span.start, span.stop))
    title = (
        f'<p style="{NOTE}"><b>Path of “{token_label(span.text)}”</b> ({n} token{"s" if n > 1 else ""}) '
        f"through the {trace.num_layers} layers, top-{k} experts and weights. Click it again to unselect.</p>"
    )
    body = f"{title}<table {_TABLE}><tr><th></th>{head}</tr>{''.join(rows)}</table>{layer_stack(trace, g, k)}"
    return _wrap("moe-path", f"{p}-g{g}", trace.num_experts, body, f' data-span="{g}" style="margin:6px 0"')


def layer_stack(trace: RoutingTrace, g: int, k: int) -> str:
    """The span's first token's path as a stack of layers, each a row of E expert boxes: the chosen ones lit in
    their colours and as opaque as their weight, the others outlined (the Visual Guide to MoE's picture)."""
    t = trace.spans[g].start
    rows = []
    for layer in reversed(range(trace.num_layers)):  # the last layer on top, as a network is drawn
        weights, experts = trace.topk(layer, k)  # (T, k), (T, k)
        lit = {int(e): float(w) for w, e in zip(weights[t], experts[t], strict=True)}
        boxes = "".join(
            f'<span class="moe-box" data-layer="{layer}" data-expert="{e}" data-experts="{e}"'
            + (f' data-w="{lit[e]:.2f}"' if e in lit else "")
            + ' style="display:inline-block;width:28px;height:18px;margin:1px;border-radius:3px;font-size:11px;'
            + "text-align:center;line-height:18px;color:#000;"
            + (
                f"background:{expert_colour(e, trace.num_experts)};opacity:{0.35 + 0.65 * lit[e]:.2f};"
                "outline:1px solid var(--jp-content-font-color1,#333)"
                if e in lit
                else "border:1px dashed var(--jp-border-color1,#aaa);color:var(--jp-content-font-color3,#999)"
            )
            + f'">e{e}</span>'
            for e in range(trace.num_experts)
        )
        rows.append(
            f'<div class="moe-stack-row"><span style="{NOTE};display:inline-block;width:56px">layer {layer}</span>{boxes}</div>'
        )
    return f'<div class="moe-layer-stack" style="margin-top:4px">{"".join(rows)}</div>'

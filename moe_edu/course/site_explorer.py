"""The routing explorer without a kernel: the presets' routing exported for a static web page.

Notebook 06's explorer routes text in Python. A website has no Python, so this module traces the
shipped tiny model once per preset text (no network, deterministic) and writes, per token, its text
and at every layer all E router probabilities (4 decimals) and their order, as a plain JS file
(`window.MOE_ROUTING = {...}`, which loads from file:// too, unlike JSON). `static/site_explorer.js`
draws the same views client side from that data (tokens with top-k bands, hover card, flow, heatmap),
so changing k re-ranks and renormalises in the page; with `live`, a text box routes the reader's own
text in the page too (`site_model`: the model for the browser). Why an explicit order: probabilities rounded to
4 decimals tie or swap where two experts are within 1e-4 (the presets have such pairs), and the page's
top-k must be the model's.

    write_site_explorer(Path("site/_static"))  # data, JS, CSS, the model file, a standalone demo page
    site_explorer_html(asset_prefix="_static/")  # the snippet to put in a page
    python -m moe_edu.course.site_explorer OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from html import escape, unescape
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from moe_edu import load_pretrained
from moe_edu.course import site_model
from moe_edu.course.palette import expert_colour
from moe_edu.course.widgets.explorer import PRESET_TEXTS, SCRIPT_TEXTS
from moe_edu.course.widgets.render import joined_edges, rtl_runs
from moe_edu.course.widgets.text_spans import visible
from moe_edu.course.widgets.trace import RoutingTrace, trace_routing

FORMAT = 1  # bump when the data's fields change (the JS checks it)
DECIMALS = 4
DATA_FILE = "site_explorer_data.js"
ASSETS = ("site_explorer.js", "site_explorer.css", "site_explorer_live.js")
DEMO_FILE = "site_explorer.html"
GLOBAL = "MOE_ROUTING"  # the window property the data file sets


def explorer_presets() -> dict[str, str]:
    """The preset texts the notebook explorer offers, in its order (its `presets` default)."""
    return dict(PRESET_TEXTS | SCRIPT_TEXTS)


def plain_label(text: str) -> str:
    """A span's text as the notebook's token view shows it, as plain text for `textContent`: newlines and
    tabs as arrows, control / bidi / zero-width characters as ‹LABEL› markers (`text_spans.visible`)."""
    return unescape(visible(text, html=False))


def export_trace(name: str, trace: RoutingTrace) -> dict[str, Any]:
    """One preset's routing as JSON-ready data: spans (label, token range, newline, Arabic joins), token ids,
    right-to-left runs, and per layer and token the E probabilities (rounded) and the experts by rank."""
    probs = trace.probs  # (L, T, E)
    order = torch.topk(probs, trace.num_experts, dim=-1).indices  # (L, T, E) experts by probability, as topk
    joins = joined_edges([s.text for s in trace.spans])
    spans = [
        {
            "label": plain_label(s.text),
            "start": s.start,
            "stop": s.stop,
            "newline": "\n" in s.text,
            "join": list(joins[g]),
        }
        for g, s in enumerate(trace.spans)
    ]
    return {
        "name": name,
        "text": trace.text,
        "token_ids": list(trace.token_ids),
        "spans": spans,
        "rtl_runs": [list(run) for run in rtl_runs([s.text for s in trace.spans])],
        "truncated": trace.truncated,
        "probs": [[[round(p, DECIMALS) for p in row] for row in layer] for layer in probs.tolist()],
        "order": order.tolist(),
    }


def export_routing(model: Any = None, tokenizer: Any = None, presets: Mapping[str, str] | None = None) -> dict:
    """Every preset traced through `model` (default: the shipped tiny model) on one CPU thread, so the
    numbers are the same run after run; plus the model's facts and the expert colours."""
    if model is None or tokenizer is None:
        model, tokenizer = load_pretrained()
    presets = explorer_presets() if presets is None else dict(presets)
    if not presets:
        raise ValueError("presets is empty: give at least one text to export")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        traces = {name: trace_routing(model, tokenizer, text) for name, text in presets.items()}
    finally:
        torch.set_num_threads(threads)
    config = model.config
    E = int(config.num_local_experts)
    return {
        "format": FORMAT,
        "model": {
            "name": "the course's tiny trained Mixtral (moe_edu.load_pretrained())",
            "num_layers": int(config.num_hidden_layers),
            "num_experts": E,
            "top_k": int(config.num_experts_per_tok),
            "vocab_size": int(config.vocab_size),
            "context": int(config.max_position_embeddings),
        },
        "colours": [expert_colour(e, E) for e in range(E)],
        "preset_names": list(traces),
        "presets": [export_trace(name, trace) for name, trace in traces.items()],
    }


def js_global(name: str, data: dict) -> str:
    """`window.<name> = {...};` as a JS file's text: compact JSON with `<`, `>` and `&` escaped as \\u003c etc.
    (a token like `</script>` cannot end an inline script block) and the line separators U+2028/9 too."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")  # line separators end a JS line
    return f"window.{name} = {text};\n"


def data_js(data: dict) -> str:
    """The routing data file's text: `window.MOE_ROUTING = {...};` (see `js_global`)."""
    return js_global(GLOBAL, data)


def asset_text(name: str) -> str:
    """The text of one of the page's static files (`moe_edu/course/static/`)."""
    if name not in ASSETS:
        raise ValueError(f"asset must be one of {ASSETS}, got {name!r}")
    static = resources.files("moe_edu.course").joinpath("static")
    text = static.joinpath(name).read_text(encoding="utf-8")
    if name == "site_explorer.js":  # the hover card's placement, shared with the notebook explorer
        text = static.joinpath("float_card.js").read_text(encoding="utf-8") + "\n" + text
    return text


def site_explorer_html(
    asset_prefix: str = "", *, include_assets: bool = True, preset: str | None = None, live: bool = True
) -> str:
    """The HTML to put in a page: a `<div class="moe-site-explorer">` (which says what it needs until the JS
    replaces its content) and, with `include_assets`, the tags that load the data, JS and CSS from
    `asset_prefix` (e.g. "_static/"). Leave them out when the site loads those three files itself.
    `live`: a text box that routes the reader's own text in the page; its two files (the live JS and the
    model) are loaded on first use only, from `asset_prefix` or, when that is "", from beside site_explorer.js.
    `preset`: the preset shown first."""
    if not isinstance(asset_prefix, str) or any(c in asset_prefix for c in "\"'<>"):
        raise ValueError(f"asset_prefix must be a URL path without quotes or angle brackets, got {asset_prefix!r}")
    if preset is not None and not isinstance(preset, str):
        raise TypeError(f"preset must be a preset name (str) or None, got {type(preset).__name__}")
    p = escape(asset_prefix, quote=True)
    first = "" if preset is None else f' data-preset="{escape(preset, quote=True)}"'
    first += f' data-live="{p}"' if live else ""
    div = (
        f'<div class="moe-site-explorer" data-source="{GLOBAL}"{first}>'
        '<p class="moe-site-loading">The routing explorer loads here (it needs JavaScript; no Python runs).</p></div>'
    )
    if not include_assets:
        return div
    return (
        f'<link rel="stylesheet" href="{p}site_explorer.css">{div}'
        f'<script src="{p}{DATA_FILE}"></script><script src="{p}site_explorer.js"></script>'
    )


def standalone_page(asset_prefix: str = "", *, live: bool = True) -> str:
    """A whole HTML page with the explorer alone (the demo file, and what the browser test serves)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        '<title>Routing explorer (no kernel)</title></head><body style="max-width:900px;margin:1em auto;'
        'padding:0 1em;font-family:sans-serif">'
        "<h1>Where does each token go?</h1><p>The routing of the course's tiny trained Mixtral, precomputed for "
        "the preset texts (or your own text, routed in this page): pick a layer and k, hover or select a token.</p>"
        f"{site_explorer_html(asset_prefix, live=live)}</body></html>\n"
    )


def write_site_explorer(out_dir: Path, data: dict | None = None, *, live: bool = True) -> list[Path]:
    """Write the routing data, the JS and CSS assets, a standalone demo page and (`live`) the model file
    into `out_dir` (created if needed); returns the paths written. `data`: from `export_routing()` (default:
    exported now from the shipped model)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {str(out_dir)!r} is a file, not a folder")
    model = tokenizer = None
    if data is None or live:
        model, tokenizer = load_pretrained()
    data = export_routing(model, tokenizer) if data is None else data
    files = {DATA_FILE: data_js(data)} | {name: asset_text(name) for name in ASSETS}
    files[DEMO_FILE] = standalone_page(live=live)
    if live:
        files[site_model.FILE] = js_global(site_model.GLOBAL, site_model.export_model(model, tokenizer))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m moe_edu.course.site_explorer OUT_DIR`: write the files; a clear one-line error, no traceback."""
    parser = argparse.ArgumentParser(
        prog="python -m moe_edu.course.site_explorer",
        description="Export the routing explorer for a static web page (no kernel): data, JS, CSS, a demo page.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into (created if missing)")
    parser.add_argument("--no-live", action="store_true", help="no text box for the reader's own text (no model file)")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if not args.out_dir.strip():
        parser.error("OUT_DIR is empty: give a folder to write into")
    if out.exists() and not out.is_dir():
        parser.error(f"OUT_DIR {args.out_dir!r} is a file, not a folder")
    try:
        written = write_site_explorer(out, live=not args.no_live)
    except OSError as err:
        parser.exit(1, f"{parser.prog}: error: cannot write OUT_DIR {args.out_dir!r}: {err.strerror or err}\n")
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

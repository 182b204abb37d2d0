"""The kernel-less routing explorer: the export (moe_edu.course.site_explorer) and its page in Chromium.

Unit tests: the data's shape, probabilities that sum to 1, a top-k equal to moe_edu's own routing of the
same text at every layer and k, escaping, the snippet, the CLI's errors. Browser tests (mark `browser`):
a standalone page served from tmp_path by a localhost http.server thread, driven for every preset by
tests/site_explorer_checks.py (the book's test can reuse it); no request leaves localhost, no kernel or
websocket is contacted; hostile token text stays text; broken data shows a message, not a blank area.
Screenshots: test-artifacts/site-explorer-*.png.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from site_explorer_checks import check_preset, check_site_explorer, route_typed_text, watch_page
from test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser

import moe_edu
from moe_edu.course import site_explorer as se
from moe_edu.course import site_model
from moe_edu.course.palette import EXPERT_PALETTE
from moe_edu.course.widgets.trace import trace_routing
from moe_edu.routing import softmax_topk

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'> & </div>\u2028"


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return moe_edu.load_pretrained()


@pytest.fixture(scope="module")
def data(model_and_tokenizer):
    return se.export_routing(*model_and_tokenizer)


def test_export_shape_and_presets(data, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    m = data["model"]
    assert (m["num_layers"], m["num_experts"], m["top_k"]) == (4, 8, 2)
    assert data["format"] == se.FORMAT
    assert data["colours"] == list(EXPERT_PALETTE[:8])
    assert data["preset_names"] == list(se.explorer_presets()) == [p["name"] for p in data["presets"]]
    assert len(data["presets"]) == 6
    for p in data["presets"]:
        T = len(p["token_ids"])
        assert p["token_ids"] == tokenizer.encode(p["text"]) and not p["truncated"]
        assert [s["start"] for s in p["spans"]] == [0] + [s["stop"] for s in p["spans"][:-1]]
        assert p["spans"][-1]["stop"] == T
        assert "".join(tokenizer.decode(p["token_ids"][s["start"] : s["stop"]]) for s in p["spans"]) == p["text"]
        for field in ("probs", "order"):
            assert len(p[field]) == 4 and all(len(layer) == T for layer in p[field]), field
            assert all(len(row) == 8 for layer in p[field] for row in layer), field
        assert all(sorted(row) == list(range(8)) for layer in p["order"] for row in layer)


def test_probabilities_sum_to_one_and_are_rounded(data):
    for p in data["presets"]:
        for layer in p["probs"]:
            for row in layer:
                assert abs(sum(row) - 1) <= 8 * 0.5e-4, row
                assert all(0 < x < 1 and round(x, 4) == x for x in row)


def test_topk_is_the_models_own_routing(data, model_and_tokenizer):
    """Every k at every layer: the exported order's first k are the experts moe_edu's router picks, and the
    weights the page renormalises from the rounded probabilities are within 1e-3 of the block's."""
    model, _ = model_and_tokenizer
    for p in data["presets"]:
        with torch.no_grad():
            logits = model(torch.tensor([p["token_ids"]]), output_router_logits=True).router_logits
        for layer, router in enumerate(logits):
            probs = torch.tensor(p["probs"][layer])  # (T, E)
            assert torch.allclose(probs, torch.softmax(router.float(), dim=-1), atol=1e-4)
            order = torch.tensor(p["order"][layer])  # (T, E)
            for k in range(1, 9):
                weights, experts = softmax_topk(router, k)  # (T, k), (T, k)
                assert (order[:, :k] == experts).all(), (p["name"], layer, k)
                kept = probs.gather(-1, order[:, :k])  # (T, k) as the page does: p / sum of the top-k p
                assert (kept / kept.sum(-1, keepdim=True) - weights).abs().max() < 1e-3, (p["name"], layer, k)


def test_rounding_alone_would_reorder_experts(data):
    """Why the order is exported: somewhere in the presets, two experts round to the same 4 decimals or swap."""
    ties = sum(
        row[order[i]] <= row[order[i + 1]]
        for p in data["presets"]
        for probs, orders in zip(p["probs"], p["order"], strict=True)
        for row, order in zip(probs, orders, strict=True)
        for i in range(7)
    )
    assert ties > 0


def test_labels_show_the_text_as_typed(data):
    code = next(p for p in data["presets"] if p["name"] == "code")
    newlines = [s for s in code["spans"] if s["newline"]]
    assert newlines and all("↵" in s["label"] for s in newlines)
    assert se.plain_label("a<b>&\u202e") == "a<b>&‹RLO›"  # plain text (for textContent), markers for bidi
    hebrew = next(p for p in data["presets"] if "שלום" in p["name"])
    assert hebrew["rtl_runs"], "the Hebrew words are one right-to-left run"


def test_data_js_escapes_markup_and_round_trips(model_and_tokenizer):
    data = se.export_routing(*model_and_tokenizer, presets={"hostile": HOSTILE})
    text = se.data_js(data)
    assert text.startswith(f"window.{se.GLOBAL} = ") and text.endswith(";\n")
    body = text[len(f"window.{se.GLOBAL} = ") : -2]
    assert not re.search("[<>&\u2028\u2029]", body), "markup or a line separator left raw in the data file"
    back = json.loads(body)
    assert back["presets"][0]["text"] == HOSTILE
    assert "".join(s["label"] for s in back["presets"][0]["spans"]).startswith("<script>window.__pwned")


def test_snippet_and_errors():
    full = se.site_explorer_html("_static/")
    assert '<div class="moe-site-explorer" data-source="MOE_ROUTING" data-live="_static/">' in full
    for name in ("site_explorer.css", se.DATA_FILE, "site_explorer.js"):
        assert f'"_static/{name}"' in full
    assert full.index(se.DATA_FILE) < full.index('site_explorer.js"')  # data before the code
    bare = se.site_explorer_html(include_assets=False)
    assert bare.startswith("<div") and "<script" not in bare and "needs JavaScript" in bare
    assert 'data-live=""' in bare and 'data-live="_static/"' in full  # where the live JS and model are loaded from
    assert "data-live" not in se.site_explorer_html(live=False)
    assert 'data-preset="a&quot;&lt;"' in se.site_explorer_html(include_assets=False, preset='a"<')
    with pytest.raises(ValueError, match="asset_prefix"):
        se.site_explorer_html('x"><script>')
    with pytest.raises(ValueError, match="asset must be one of"):
        se.asset_text("../site_explorer.py")
    with pytest.raises(ValueError, match="presets is empty"):
        se.export_routing(presets={})


def test_assets_are_offline_and_never_parse_html():
    js = se.asset_text("site_explorer.js") + se.asset_text("site_explorer_live.js")
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert not re.search(r"\bfetch\(|XMLHttpRequest|WebSocket|import\(", js)
    urls = set(re.findall(r"https?://[^\s\"'`)]+", js + se.asset_text("site_explorer.css")))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"course/static/*"' in pyproject, "the static files ship with the package"


def test_write_site_explorer(tmp_path, data):
    written = se.write_site_explorer(tmp_path / "out", data, live=False)
    assert sorted(p.name for p in written) == sorted([se.DATA_FILE, *se.ASSETS, se.DEMO_FILE])
    assert "data-live" not in (tmp_path / "out" / se.DEMO_FILE).read_text(), "no text box without the model file"
    size = (tmp_path / "out" / se.DATA_FILE).stat().st_size
    assert 50_000 < size < 200_000, f"the data file is {size:,} bytes"
    again = se.write_site_explorer(tmp_path / "again")  # exported afresh: the same bytes
    assert (tmp_path / "again" / se.DATA_FILE).read_bytes() == (tmp_path / "out" / se.DATA_FILE).read_bytes()
    assert sorted(p.name for p in again) == sorted([p.name for p in written] + [site_model.FILE])
    assert 'data-live=""' in (tmp_path / "again" / se.DEMO_FILE).read_text()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="out_dir"):
        se.write_site_explorer(tmp_path / "file", data)


def test_model_export_holds_what_the_routers_need(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    exported = site_model.export_model(model, tokenizer)
    weights = np.frombuffer(base64.b64decode(exported["weights"]), dtype="<f4")
    assert weights.size == exported["num_floats"]
    state = model.state_dict()
    for name, spec in exported["tensors"].items():
        n = int(np.prod(spec["shape"]))
        assert np.array_equal(weights[spec["offset"] : spec["offset"] + n], state[name].flatten().numpy()), name
    names = set(exported["tensors"])
    assert "lm_head.weight" not in names and "model.norm.weight" not in names  # no router reads them
    assert "model.layers.3.mlp.experts.gate_up_proj" not in names and "model.layers.2.mlp.experts.down_proj" in names
    assert exported["config"] | {"rope_theta": 0} == {
        "hidden_size": 64, "intermediate_size": 224, "num_layers": 4, "num_experts": 8, "top_k": 2, "heads": 8,
        "kv_heads": 2, "head_dim": 8, "rope_theta": 0, "rms_norm_eps": 1e-5, "context": 256, "vocab_size": 1024,
        "sliding_window": None,
    }  # fmt: skip
    assert len(exported["tokenizer"]["vocab"]) == 1024 and all(" " in m for m in exported["tokenizer"]["merges"])
    text = se.js_global(site_model.GLOBAL, exported)
    assert 4_000_000 < len(text) < 8_000_000, f"the model file is {len(text):,} bytes"


def test_model_export_rejects_a_tokenizer_the_page_cannot_run():
    spec = json.loads(moe_edu.load_pretrained()[1].backend.to_str())
    assert site_model.check_tokenizer(spec)["merges"]
    for change, field in (
        (lambda s: s.__setitem__("normalizer", {"type": "NFC"}), "normalizer"),
        (lambda s: s["pre_tokenizer"]["pretokenizers"].pop(0), "pre_tokenizer"),
        (lambda s: s["model"].__setitem__("type", "WordPiece"), "model"),
    ):
        bad = json.loads(json.dumps(spec))
        change(bad)
        with pytest.raises(ValueError, match=f"tokenizer {field}"):
            site_model.check_tokenizer(bad)


def test_cli_errors_name_the_argument(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        se.main([])
    assert exit_info.value.code == 2 and "OUT_DIR" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        se.main([str(tmp_path / "file")])
    assert exit_info.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        se.main([""])
    assert exit_info.value.code == 2 and "OUT_DIR is empty" in capsys.readouterr().err


def test_cli_writes_and_fails_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "moe_edu.course.site_explorer"]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    (tmp_path / "file").write_text("x")
    bad = subprocess.run([*cmd, str(tmp_path / "file" / "sub")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 1 and "cannot write OUT_DIR" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    ok = subprocess.run([*cmd, str(tmp_path / "site")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("wrote ") == 6 and (tmp_path / "site" / site_model.FILE).is_file()


# ---------------------------------------------------------------------------------------------- browser


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the test's output stays readable
        pass


@contextmanager
def serve(folder: Path):
    """`folder` over http on 127.0.0.1 (a free port) from a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def chromium(width: int = 1100, height: int = 800):
    from playwright.sync_api import sync_playwright

    require_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


@pytest.mark.browser
def test_site_explorer_in_chromium(tmp_path, data):
    se.write_site_explorer(tmp_path, data)
    with serve(tmp_path) as url, chromium() as page:
        watch = watch_page(page)
        page.goto(f"{url}/{se.DEMO_FILE}")
        try:
            summaries = check_site_explorer(page, artifacts=ARTIFACTS)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "site-explorer-failure.png"))
            raise
        assert [s["preset"] for s in summaries] == data["preset_names"]
        assert any(s["card_flipped"] for s in summaries), "a bottom token's card opened above it"
        print(f"[site explorer] {summaries}")

        # the reader's dark preference: a dark explorer with light text, the expert colours unchanged
        page.emulate_media(color_scheme="dark")
        root = page.locator(".moe-site-explorer")
        colours = root.evaluate("r => [getComputedStyle(r).backgroundColor, getComputedStyle(r).color]")
        assert colours == ["rgb(20, 24, 30)", "rgb(230, 230, 230)"], colours
        root.scroll_into_view_if_needed()
        root.screenshot(path=str(ARTIFACTS / "site-explorer-dark.png"))
        # a phone: the controls wrap, nothing wider than the screen
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": 400, "height": 800})
        widths = root.evaluate("r => [r.scrollWidth, r.clientWidth, r.querySelector('.moe-site-controls').scrollWidth]")
        assert widths[0] <= widths[1] + 1 and widths[2] <= widths[1], widths
        root.screenshot(path=str(ARTIFACTS / "site-explorer-phone.png"))
        assert not watch.problems(), watch.problems()
        assert all(u.startswith(url) for u in watch.requests) and len(watch.requests) == 4, watch.requests


@pytest.mark.browser
def test_site_explorer_hostile_text_and_broken_data(tmp_path, model_and_tokenizer):
    hostile = se.export_routing(*model_and_tokenizer, presets={"<b>hostile</b>": HOSTILE})
    se.write_site_explorer(tmp_path / "hostile", hostile)
    broken = json.loads(json.dumps(hostile))
    broken["presets"][0]["probs"][1][3] = broken["presets"][0]["probs"][1][3][:7]
    se.write_site_explorer(tmp_path / "probs", broken)
    colour = json.loads(json.dumps(hostile))
    colour["colours"][0] = "red;background:url(http://example.com/x)"
    se.write_site_explorer(tmp_path / "colour", colour)
    se.write_site_explorer(tmp_path / "missing", hostile)
    (tmp_path / "missing" / se.DATA_FILE).unlink()
    late = se.site_explorer_html(include_assets=False) + '<script src="site_explorer.js"></script>'
    late += f'<link rel="stylesheet" href="site_explorer.css"><script async src="{se.DATA_FILE}"></script>'
    (tmp_path / "hostile" / "late.html").write_text(
        f'<!DOCTYPE html><meta charset="utf-8"><link rel="icon" href="data:,">{late}'
    )
    with serve(tmp_path) as url, chromium() as page:
        watch = watch_page(page)
        page.goto(f"{url}/hostile/{se.DEMO_FILE}")
        root = page.locator(".moe-site-explorer")
        page.wait_for_function("() => document.querySelector('.moe-site-explorer').dataset.ready === 'true'")
        shown = root.locator(".moe-text").inner_text()
        assert "<script>window.__pwned" in shown and "<img src=x" in shown
        assert page.evaluate("() => window.__pwned") is None
        assert root.locator("script, img, b").count() == 0, "token text was parsed as HTML"
        assert root.locator(".moe-site-preset option").first.inner_text() == "<b>hostile</b>"
        root.locator(".moe-tok").first.hover()
        assert root.locator(".moe-tok").first.get_attribute("aria-label").startswith("< · layer 0, top-2: token 0")
        assert page.locator(".moe-site-card b").inner_text() == "<", "the card shows the token's text as text"
        assert not watch.problems(), watch.problems()
        for case, want in (
            ("probs", "presets[0].probs[1][3] has 7 entries, expected 8"),
            ("colour", "colours[0] must be a colour"),
            ("missing", "window.MOE_ROUTING is missing"),
        ):
            page.goto(f"{url}/{case}/{se.DEMO_FILE}")
            message = page.locator(".moe-site-explorer .moe-message")
            message.wait_for(state="visible")
            assert want in message.inner_text(), message.inner_text()
            if case == "probs":
                message.screenshot(path=str(ARTIFACTS / "site-explorer-message.png"))
        # the data script loaded async, after the explorer's code: the explorer waits for it
        page.goto(f"{url}/hostile/late.html")
        page.wait_for_function("() => document.querySelector('.moe-site-explorer').dataset.ready === 'true'")
        assert page.locator(".moe-site-explorer .moe-tok").count() > 10
        assert not [u for u in watch.requests if not u.startswith(url)], watch.requests


TYPED = (
    "專家混合模型在台灣很熱門 👍🏽",
    "مرحبا بالعالم 🇹🇼 e\u0301 naïve ½ ² \u202e <script>x</script>\tdone\n\n  def f(x):\n    return 12 * x",
    "The router sends each token to two experts. " * 30,  # past the model's 256 tokens: cut, and said so
)


@pytest.mark.browser
def test_site_explorer_routes_typed_text_like_torch(tmp_path, data, model_and_tokenizer):
    """Typed text, routed in the page by the JS tokenizer and forward pass: the same token ids, character spans,
    labels and right-to-left runs as Python's export, the same top-2 experts at every layer and token, the
    probabilities within 2e-4; then the views work on it as on a preset. Nothing but localhost is requested."""
    model, tokenizer = model_and_tokenizer
    se.write_site_explorer(tmp_path, data)
    (tmp_path / "nomodel").mkdir()
    se.write_site_explorer(tmp_path / "nomodel", data)
    (tmp_path / "nomodel" / site_model.FILE).unlink()
    with serve(tmp_path) as url, chromium() as page:
        watch = watch_page(page)
        page.goto(f"{url}/{se.DEMO_FILE}")
        page.wait_for_function("() => document.querySelector('.moe-site-explorer').dataset.ready === 'true'")
        assert not any(site_model.FILE in u for u in watch.requests), "the model loads on first use only"
        for i, text in enumerate(TYPED):
            got = route_typed_text(page, text, keyboard=i == 1)
            want = se.export_trace("your text", trace_routing(model, tokenizer, text))
            for field in ("token_ids", "spans", "rtl_runs", "truncated"):
                assert got[field] == want[field], (text[:30], field)
            for layer, (a, b) in enumerate(zip(got["order"], want["order"], strict=True)):
                assert [r[:2] for r in a] == [r[:2] for r in b], (text[:30], layer)
            gap = (torch.tensor(got["probs"]) - torch.tensor(want["probs"])).abs().max().item()  # (L, T, E)
            assert gap <= 2e-4, (text[:30], gap)
        assert got["truncated"] and "cut to the model's 256 tokens" in page.inner_text(".moe-site-live-status")
        root = page.locator(".moe-site-explorer")
        route_typed_text(page, TYPED[0])
        index = int(root.locator(".moe-site-preset").input_value())
        summary = check_preset(page, root, index, ARTIFACTS, "site-explorer-typed")
        assert summary["preset"] == "your text" and summary["spans"] == 14, summary
        root.locator(".moe-site-preset").select_option(index=index)
        root.screenshot(path=str(ARTIFACTS / "site-explorer-typed.png"))
        assert not watch.problems(), watch.problems()
        assert sum(site_model.FILE in u for u in watch.requests) == 1, "the model file is loaded once"

        page.goto(f"{url}/nomodel/{se.DEMO_FILE}")  # the model file missing: a message, not a dead button
        root.locator(".moe-site-live .moe-input").fill("hello")
        root.locator(".moe-site-route").click()
        message = root.locator(".moe-site-live-status.moe-message")
        message.wait_for(state="visible")
        assert re.search(f"could not load http://127.0.0.1:\\d+/nomodel/{site_model.FILE}", message.inner_text())

"""Headless tests of the routing explorer (moe_edu.course.widgets): views must match the model's router."""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest
import torch

import moe_edu
import moe_edu.course.widgets.explorer as explorer_module
from moe_edu.course.palette import EXPERT_PALETTE
from moe_edu.course.widgets import text_spans
from moe_edu.course.widgets.explorer import RoutingExplorer
from moe_edu.course.widgets.flow import flow_html
from moe_edu.course.widgets.render import CLICK_LEGEND, MANY_TOKENS, render_routing_html
from moe_edu.course.widgets.text_spans import visible
from moe_edu.course.widgets.trace import RoutingTrace, trace_routing
from moe_edu.course.widgets.views import heatmap_html, load_html, overview_html, path_html, token_labels, topk_html


class ByteTokenizer:
    """Stand-in tokenizer for tests: one token per UTF-8 byte (ids 0..255)."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return moe_edu.MixtralForCausalLM(moe_edu.PRESETS["tiny"]).eval()


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


def router_probs(model, text: str) -> torch.Tensor:
    """The reference: the model's own router logits -> softmax, (L, T, E)."""
    ids = torch.tensor([list(text.encode("utf-8"))])  # (1, T)
    with torch.no_grad():
        logits = model(ids, output_router_logits=True).router_logits  # L x (T, E)
    return torch.softmax(torch.stack(logits).float(), dim=-1)  # (L, T, E)


def token_experts(html: str) -> list[int]:
    return [int(e) for e in re.findall(r'class="moe-tok[^"]*"[^>]*data-expert="(\d+)"', html)]


def shown_text(html: str) -> str:
    """The text the tokens view displays, spans joined (markup, hover cards and the zero-width joiners that
    keep joining scripts' letters in their contextual forms removed)."""
    return "".join(re.findall(r"<bdi>(.*?)</bdi>", html)).replace("&zwj;", "")


def test_arabic_letters_in_separate_spans_are_joined_by_zero_width_joiners(model, tok):
    trace = moe_edu.trace_routing(model, tok, "مرحبا بالعالم")
    texts = re.findall(r"<bdi>(.*?)</bdi>", render_routing_html(trace, layer=0))
    assert len(texts) > 5, "one span per letter: each is its own byte-level token here"
    inner = [t for t in texts if t.replace("&zwj;", "") != " "]
    assert all(t.startswith("&zwj;") or t.endswith("&zwj;") for t in inner)  # every letter joins a neighbour
    assert not any("&zwj;" in t for t in texts if t.replace("&zwj;", "") == " ")  # never across the space
    latin = re.findall(r"<bdi>(.*?)</bdi>", render_routing_html(moe_edu.trace_routing(model, tok, "abc def"), 0))
    assert not any("&zwj;" in t for t in latin)


def test_token_colouring_follows_first_choice_expert(model, tok):
    text = "for i in range(10): total += i"
    ex = RoutingExplorer(model, tok, text="hello")
    ex.text = text
    probs = router_probs(model, text)  # (L, T, E)
    seen = set()
    for layer in range(model.config.num_hidden_layers):
        ex.layer = layer
        html = ex.views["tokens"]
        expected = probs[layer].argmax(-1).tolist()  # (T,)
        assert token_experts(html) == expected
        colours = re.findall(r'class="moe-tok[^"]*"[^>]*background-color:(#[0-9a-f]{6})', html)
        assert colours == [moe_edu.course.widgets.expert_colour(e, 8) for e in expected]
        seen.add(tuple(expected))
    assert len(seen) > 1, "layers route differently on a random model"
    assert ex.message == ""


def test_heatmap_load_and_overview_match_router(model, tok):
    text = "The cat sat on the mat."
    ex = RoutingExplorer(model, tok, text=text, layer=2)
    probs = router_probs(model, text)  # (L, T, E)
    T, E = probs.shape[1:]
    cells = [float(p) for p in re.findall(r'data-p="([0-9.]+)"', ex.views["heatmap"])]
    assert len(cells) == T * E
    torch.testing.assert_close(torch.tensor(cells).reshape(T, E), probs[2], atol=1e-4, rtol=0)
    shares = [float(s) for s in re.findall(r'data-share="([0-9.]+)"', ex.views["expert load"])]
    top2 = probs[2].topk(2, dim=-1).indices  # (T, 2)
    expected = torch.bincount(top2.flatten(), minlength=E).float() / (2 * T)  # (E,)
    torch.testing.assert_close(torch.tensor(shares), expected, atol=1e-4, rtol=0)
    cell = r'<td class="moe-c[^"]*" data-g="\d+" data-expert="(\d+)"'
    grid = [int(e) for e in re.findall(cell, ex.views["all layers"])]
    assert grid == probs.argmax(-1).flatten().tolist()  # (L*T,)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_k_control_renormalises(model, tok, k):
    text = "12 + 35 = 47"
    ex = RoutingExplorer(model, tok, text=text, layer=1)
    ex.k = k
    probs = router_probs(model, text)[1]  # (T, E)
    top_p, top_i = probs.topk(k, dim=-1)  # (T, k)
    rows = re.findall(r'<tr id="moe-explorer-topk-L1-t\d+"[^>]*>(.*?)</tr>', ex.views["top-k"])
    assert len(rows) == len(text)
    for t, row in enumerate(rows):
        chips = re.findall(r'data-expert="(\d+)" data-experts="\d+" data-w="([0-9.]+)"', row)[:k]  # this k's first
        assert [int(e) for e, _ in chips] == top_i[t].tolist()
        weights = torch.tensor([float(w) for _, w in chips])
        torch.testing.assert_close(weights, top_p[t] / top_p[t].sum(), atol=1e-4, rtol=0)
    assert ex.views["top-k"].count("model (k=2)") == (k != 2)
    assert f'data-k="{k}"' in ex.views["tokens"]


def test_empty_text_shows_message(model, tok):
    ex = RoutingExplorer(model, tok, text="")
    assert "Type some text" in ex.message
    assert ex.views == {} and ex.view.html == ""
    ex.text = "abc"
    assert ex.message == "" and len(token_experts(ex.views["tokens"])) == 3
    ex.text = "  \n "
    assert "Type some text" in ex.message and ex.trace is None
    ex.layer = 3  # changing the layer or selecting with nothing to show must not raise
    ex.selected, ex.dimmed = 0, 1
    assert ex.views == {}


def test_overlong_text_is_truncated_with_notice(model, tok):
    context = model.config.max_position_embeddings
    ex = RoutingExplorer(model, tok, text="ab" * context)
    assert ex.trace.num_tokens == context and ex.trace.truncated
    assert f"first {context} of {2 * context} tokens" in ex.message
    assert ex.view.html.count("moe-notice") == 0, "the notice appears once, in the status line"
    assert len(token_experts(ex.views["tokens"])) == context
    ex.text = "short"
    assert ex.message == ""
    small = RoutingExplorer(model, tok, text="abcdefgh", max_tokens=5)
    assert small.trace.num_tokens == 5 and "first 5 of 8" in small.message


def test_unknown_characters_and_bad_tokens_never_raise(model, tok):
    ex = RoutingExplorer(model, tok, text="日本語 🙂 <b>&amp;</b>")
    assert ex.message == "" and ex.trace.num_tokens == len("日本語 🙂 <b>&amp;</b>".encode())
    assert shown_text(ex.views["tokens"]) == "日本語 🙂 &lt;b&gt;&amp;amp;&lt;/b&gt;"  # whole characters, escaped

    class OutOfVocab(ByteTokenizer):
        def encode(self, text):
            return [10_000] * len(text)

    bad = RoutingExplorer(model, OutOfVocab(), text="abc")
    assert "Could not route this text" in bad.message and "vocab_size" in bad.message
    assert bad.views == {}


def test_preset_sets_text_and_editing_clears_it(model, tok):
    ex = RoutingExplorer(model, tok)
    ex.preset.value = ex.presets["code"]
    assert ex.text == ex.presets["code"] and ex.trace.text == ex.presets["code"]
    ex.text = ex.presets["code"] + " # edited"
    assert ex.preset.value == "", "the preset box must not claim an edited text"
    ex.text = ex.presets["code"]
    assert repr(ex) == f"RoutingExplorer(layer=0, k=2, tokens={len(ex.presets['code'].encode())})"
    assert ex._repr_mimebundle_()["text/plain"] == repr(ex)


def test_static_renderer_is_deterministic(model, tok):
    trace = trace_routing(model, tok, "a\tb\nc")
    assert isinstance(trace, RoutingTrace)
    a = render_routing_html(trace, layer=1, id_prefix="demo")
    assert a == render_routing_html(trace, layer=1, id_prefix="demo")
    ids = re.findall(r'id="([^"]+)"', a)
    assert ids[0] == "demo-L1" and ids[1:] == [f"demo-L1-g{t}" for t in range(5)]
    assert "↵" in a and "⇥" in a and "<script" not in a and "title=" not in a  # no native tooltips
    w, e = trace.topk(1)  # (T, 2)
    card = a.split('<span class="moe-card"')[1]
    chips = re.findall(r'moe-e(\d+)" data-expert="\d+" data-experts="\d+" style="[^"]+">e\d+ ([0-9.]+)<', card)
    assert chips[:2] == [(str(int(e[0, j])), f"{float(w[0, j]):.2f}") for j in range(2)]  # the card shows the top-k
    assert not re.search(r"\d\.\d{3}", re.sub(r'data-(w|p|share)="[0-9.]+"', "", a)), "at most 2 decimals shown"
    for view in (heatmap_html, load_html, topk_html, flow_html):
        assert view(trace, 0) == view(trace, 0)
    assert overview_html(trace) == overview_html(trace)


def test_bad_arguments_raise_clear_errors(model, tok):
    trace = trace_routing(model, tok, "abc")
    with pytest.raises(ValueError, match="layer"):
        render_routing_html(trace, layer=4)
    with pytest.raises(ValueError, match="k must"):
        render_routing_html(trace, layer=0, k=9)
    with pytest.raises(TypeError, match="RoutingTrace"):
        render_routing_html("abc", layer=0)
    for view in (render_routing_html, heatmap_html, load_html, topk_html, flow_html):
        with pytest.raises(ValueError, match="id_prefix"):
            view(trace, 0, id_prefix='x" onmouseover="')
    with pytest.raises(ValueError, match="id_prefix"):
        overview_html(trace, id_prefix="a b")
    with pytest.raises(ValueError, match="id_prefix"):
        RoutingExplorer(model, tok, id_prefix="<p>")
    with pytest.raises(ValueError, match="text is empty"):
        trace_routing(model, tok, "")
    no_router = type("M", (torch.nn.Module,), {"forward": lambda self, x, **kw: object()})()
    no_router.config = model.config
    with pytest.raises(TypeError, match="router_logits"):
        trace_routing(no_router, tok, "a")
    with pytest.raises(ValueError, match="layer"):
        RoutingExplorer(model, tok, layer=-1)
    with pytest.raises(ValueError, match="k must"):
        RoutingExplorer(model, tok, k=0)
    with pytest.raises(TypeError, match="encode"):
        RoutingExplorer(model, object())


def test_accepts_a_transformers_model(model, tok):
    transformers = pytest.importorskip("transformers")
    hf = transformers.MixtralForCausalLM(model.config.to_hf()).eval()
    hf.load_state_dict(model.state_dict(), strict=False)
    theirs = trace_routing(hf, tok, "same routing")
    ours = trace_routing(model, tok, "same routing")
    assert theirs.logits.shape == ours.logits.shape == (4, 12, 8)
    assert torch.equal(theirs.first_choices(), ours.first_choices())


@pytest.mark.gpu
def test_explorer_on_cuda_bf16(model, tok):
    import copy

    cuda_model = copy.deepcopy(model).to("cuda", torch.bfloat16)
    ex = RoutingExplorer(cuda_model, tok, text="The cat sat.")
    assert ex.message == ""
    assert ex.trace.logits.device.type == "cpu" and ex.trace.logits.dtype == torch.float32
    assert ex.trace.logits.shape == (4, 12, 8)
    assert token_experts(ex.views["tokens"]) == ex.trace.first_choice(0).tolist()


def test_explorer_on_the_shipped_model_and_bpe_tokenizer():
    try:
        model, tokenizer = moe_edu.load_pretrained()
    except (ImportError, ValueError) as err:  # the shipped checkpoint is another part of the course
        pytest.skip(f"no shipped checkpoint: {err}")
    text = "def add(a, b):\n    return a + b  # the sum"
    ex = RoutingExplorer(model, tokenizer, text=text, layer=1)
    ids = tokenizer.encode(text)
    assert ex.message == "" and ex.trace.token_ids == ids and len(ids) < len(text.encode())  # multi-byte pieces
    with torch.no_grad():
        logits = model(torch.tensor([ids]), output_router_logits=True).router_logits[1]  # (T, E)
    assert token_experts(ex.views["tokens"]) == logits.argmax(-1).tolist()
    assert shown_text(ex.views["tokens"]).replace("↵", "\n") == text  # every piece shown, in order


# ---------------------------------------------------------------- issue 13: text as typed, k, linked views
TYPED = {
    "Chinese": "專家混合模型",
    "emoji": "I 🙂 MoE 👩‍💻 🇹🇼",
    "accented": "café naïve Ångström e\u0301",
    "right-to-left": "שלום עולם مرحبا",
}


@pytest.fixture(scope="module")
def shipped():
    try:
        return moe_edu.load_pretrained()
    except (ImportError, ValueError) as err:
        pytest.skip(f"no shipped checkpoint: {err}")


@pytest.mark.parametrize("name", list(TYPED))
def test_text_is_shown_as_typed(shipped, tok, name):
    text = TYPED[name]
    for model_, tokenizer in (shipped, (moe_edu.MixtralForCausalLM(moe_edu.PRESETS["tiny"]).eval(), tok)):
        trace = trace_routing(model_, tokenizer, text)
        assert "".join(s.text for s in trace.spans) == text
        html = render_routing_html(trace, layer=0)
        assert "\ufffd" not in html and shown_text(html) == text
        multi = [s for s in trace.spans if s.stop - s.start > 1]
        if name in ("Chinese", "emoji"):
            assert multi, "multi-byte characters are made of several byte tokens"
        for s in multi:  # the span's card lists every token it is made of, with its experts
            g = trace.spans.index(s)
            span_html = html.split(f'data-g="{g}"')[1].split("</span></span>")[0]
            assert f'data-t="{" ".join(map(str, range(s.start, s.stop)))}"' in html
            assert span_html.count("token ") == s.stop - s.start
            n = s.stop - s.start
            if n < MANY_TOKENS:
                assert span_html.count("linear-gradient") == n  # one colour column per token
            else:  # the first token's bands in full, and a bottom strip with one segment per token
                assert span_html.count("linear-gradient") == 2
                strip = span_html.split("linear-gradient(to right,")[1].split(")")[0]
                assert strip.count("#") == n and "bottom/100% 4px" in span_html


def test_spans_agree_with_the_tokenizers_offsets(shipped):
    _, tokenizer = shipped
    text = "".join(TYPED.values())
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    for s in text_spans(tokenizer, enc.ids):
        start, stop = enc.offsets[s.start][0], enc.offsets[s.stop - 1][1]
        assert text[start:stop] == s.text


def test_invisible_and_unsafe_characters_are_shown_safely(model, tok):
    text = "a\u202eb\u2066c\u200bd\x07e\x00<script>x</script>&"
    html = render_routing_html(trace_routing(model, tok, text), layer=0)
    for raw in ("\u202e", "\u2066", "\u200b", "\x07", "\x00", "<script>"):
        assert raw not in html
    for label in ("‹RLO›", "‹LRI›", "‹ZWSP›", "‹U+0007›", "‹U+0000›"):
        assert label in html
    assert re.sub("<[^>]+>", "", shown_text(html)).endswith("e‹U+0000›&lt;script&gt;x&lt;/script&gt;&amp;")
    assert "<bdi>" in html and 'dir="ltr"' in html  # every span bidi-isolated, tokens in typed order
    rtl = render_routing_html(trace_routing(model, tok, "hi שלום עולם, ok"), layer=0)
    assert rtl.count('<bdi dir="rtl" class="moe-rtl">') == 1
    run = rtl.split('class="moe-rtl">')[1].split("</span></bdi><span id=")[0]
    assert "".join(re.findall(r"<bdi>(.*?)</bdi>", run)) == "שלום עולם"  # one run, read right to left
    assert visible("👩\u200d💻") == "👩\u200d💻" and visible("\u200d") != "\u200d"  # joiners kept inside emoji
    assert visible("") == "∅" and visible("a b", visible_space=True) == "a␣b"


def test_k_changes_the_rendered_tokens_and_grid(model, tok):
    trace = trace_routing(model, tok, "The cat sat.")
    seen = {}
    for k in (1, 2, 8):
        html = render_routing_html(trace, layer=1, k=k)
        backgrounds = re.findall(r'class="moe-tok[^"]*"[^>]*style="background:linear-gradient\(([^)]*)\)', html)
        assert len(backgrounds) == trace.num_tokens
        assert all(b.count("#") == (k if k > 1 else 2) for b in backgrounds), "one colour band per chosen expert"
        seen[k] = (html, overview_html(trace, k))
    assert len({h for h, _ in seen.values()}) == 3 and len({o for _, o in seen.values()}) == 3
    w, e = trace.topk(1, 2)  # (T, 2)
    first = re.findall(r'class="moe-tok[^"]*"[^>]*style="background:linear-gradient\(([^)]*)\)', seen[2][0])[0]
    top = round(100 * round(float(w[0, 0]), 2))
    assert (
        first == f"{moe_edu.course.widgets.expert_colour(int(e[0, 0]), 8)} {top}%,"
        f"{moe_edu.course.widgets.expert_colour(int(e[0, 1]), 8)} 0"
    )  # band heights = weights


def test_selection_and_dimming_state(model, tok):
    ex = RoutingExplorer(model, tok, text="The cat sat on the mat.", layer=1)
    assert ex.selected is None and not re.search(r'class="[^"]*moe-sel', ex.view.html)
    ex.selected = 4
    assert ex.view.selected == 4
    rows = re.findall(r'<tr id="moe-explorer-heatmap-L1-t(\d+)" class="moe-sel"', ex.views["heatmap"])
    assert rows == ["4"]
    cells = re.findall(r'<td class="moe-c moe-sel[^"]*" data-g="4"', ex.views["all layers"])
    assert len(cells) == model.config.num_hidden_layers
    path = re.findall(r'<tr data-layer="(\d+)">', ex.views["tokens"])
    assert path == [str(i) for i in range(model.config.num_hidden_layers)]  # its per-layer path is shown
    assert 'class="moe-tok moe-sel' in ex.views["tokens"] and "moe-sel" in ex.views["flow"]
    ex.dimmed = 3
    dims = re.findall(r'class="moe-legend-item( moe-dim)?" data-expert="(\d)"', ex.views["tokens"])
    assert [e for d, e in dims if not d] == ["3"]
    for m in re.finditer(r'class="moe-tok([^"]*)"[^>]*data-experts="([\d ]+)"', ex.views["tokens"]):
        assert ("moe-dim" in m.group(1)) == ("3" not in m.group(2).split())
    ex.selected = 99  # out of range (a stale click): cleared, not an error
    assert ex.selected is None and ex.message == ""
    ex.selected = 2
    ex.text = "Another text"
    assert ex.selected is None, "a new text has new spans: the selection is cleared"
    assert ex.dimmed is None, "and starts unfiltered (the legend filter was expert 3)"
    with pytest.raises(ValueError, match="span index"):
        path_html(ex.trace, 50)


def test_flow_routes_and_pure_css_hover_isolation(model, tok):
    trace = trace_routing(model, tok, "12 + 35")
    html = flow_html(trace, 2, 3)
    routes = re.findall(
        r'class="moe-ftok[^"]*" data-g="\d+" data-t="(\d+)" data-experts="[\d ]+" data-route="([^"]+)"', html
    )
    assert [int(t) for t, _ in routes] == list(range(trace.num_tokens))
    w, e = trace.topk(2, 3)  # (T, 3)
    for t, route in routes:
        pairs = [pair.split(":") for pair in route.split()]
        assert [int(x) for x, _ in pairs] == e[int(t)].tolist()  # the lines the browser draws: top-k, in order
        assert [float(v) for _, v in pairs] == pytest.approx(w[int(t)].tolist(), abs=0.005)
        for x, v in pairs:  # hovering the token lights exactly its experts' bins and writes their weights
            rule = f'.moe-ftok[data-t="{t}"]:hover) .moe-bin[data-e="{x}"] .moe-bin-w::after{{content:" {v}"}}'
            assert rule in html
    assert html.count('<div class="moe-bin') == trace.num_experts and "<path" not in html  # no lines until hovered
    long = trace_routing(model, tok, "the cat sat on the mat. " * 30)
    assert long.num_tokens > 150
    assert re.search(r'moe-flow-tokens" style="max-height:(\d+)px;overflow:auto', flow_html(long, 0))  # fixed height
    sel = flow_html(long, 0, selected=long.num_tokens // 2)
    assert sel.count("moe-bin-on") == len(set(long.topk(0)[1][long.spans[long.num_tokens // 2].start].tolist()))


def test_static_picture_in_the_saved_notebook(model, tok):
    a = RoutingExplorer(model, tok, text="The cat sat.", id_prefix="nb")
    b = RoutingExplorer(model, tok, text="The cat sat.", id_prefix="nb")
    static, live = a.display_bundles()
    assert set(static) == {"text/plain", "text/html"} and "RoutingExplorer(layer=0" in static["text/plain"]
    assert set(live) == {"text/plain", "application/vnd.jupyter.widget-view+json"}
    html = static["text/html"]
    assert html == b.display_bundles()[0]["text/html"], "deterministic (nbval compares it)"
    assert moe_edu.course.widgets.explorer.RUN_NOTE in html and 'id="nb-tokens-L0"' in html
    assert CLICK_LEGEND not in html and "Click an expert" not in html, "a picture does not invite clicks"
    assert 'id="nb-tokens-L0"' in a.view.html and CLICK_LEGEND in a.view.html  # the live view does
    assert live["text/plain"] == "", "no stray RoutingExplorer(...) line after the picture where widgets cannot run"
    assert not re.search(r"\d\.\d{3}", html), "no digits that could differ between CPUs"
    a.tab = "all layers"
    assert 'class="moe-overview"' in a.static_html()
    with pytest.raises(ValueError, match="tab"):
        a.tab = "nope"


def test_only_the_open_tab_is_rendered_and_sent(model, tok, monkeypatch):
    """A 256-token text is ~1.3 MB of HTML over the eight tabs: the page gets the open tab's panel only, and the
    compare tab's untrained forward runs only when that tab is open."""
    calls = []
    real = explorer_module.compare_traces
    monkeypatch.setattr(explorer_module, "compare_traces", lambda *a: calls.append(1) or real(*a))
    ex = RoutingExplorer(model, tok, text="The cat sat on the mat.")

    def sent():  # (tab, state) of each panel in the page's html
        return re.findall(r'<div class="moe-panel" data-tab="([^"]+)" data-state="(\d+)">', ex.view.html)

    assert [t for t, _ in sent()] == ["tokens"] and set(ex.panels) == {"tokens"} and not calls
    tokens = ex.view.html
    ex.tab = "heatmap"
    assert [t for t, _ in sent()] == ["heatmap"] and sent()[0][1] == str(ex.view.state) and not calls
    ex.tab = "tokens"
    assert ex.view.html == tokens, "the same state: the kept panel, not a new render"
    ex.k = 3
    ((tab, state),) = sent()
    assert tab == "tokens" and int(state) == ex.view.state > int(re.search(r'data-state="(\d+)"', tokens).group(1))
    assert 'data-k="3"' in ex.view.html and not calls
    ex.tab = "compare"
    assert [t for t, _ in sent()] == ["compare"] and len(calls) == 1
    assert ex.views == ex.render_panels() and len(ex.views) == len(explorer_module.TABS)


def test_idle_renderer_steps_until_done_and_a_new_state_cancels_the_old():
    from moe_edu.course.widgets.idle import IdleRenderer

    calls = []

    def step(state):
        calls.append(state)
        return calls.count(state) < 3

    async def main():
        idle = IdleRenderer(step, delay_s=0.01, gap_s=0.0)
        assert idle.schedule("old")
        await asyncio.sleep(0.002)
        idle.schedule("new")  # before "old" started: it never runs
        await asyncio.sleep(0.2)

    asyncio.run(main())
    assert calls == ["new", "new", "new"]
    assert IdleRenderer(step).schedule("x") is False, "no event loop: nothing scheduled"
    with pytest.raises(ValueError, match="delay_s"):
        IdleRenderer(step, delay_s=-1)


def test_the_other_tabs_are_sent_while_the_kernel_idles(model, tok):
    """In a kernel (an event loop runs) the tabs that are not open follow the open one, one per loop turn, each
    stamped with the current state; a newer state stops the old ones."""
    sent = []

    async def main():
        ex = RoutingExplorer(model, tok, text="The cat sat on the mat.")
        ex.view.send = lambda content, buffers=None: sent.append(content["panel"])
        ex._idle.delay_s = 0.01
        ex.k = 3  # a new state: schedules the idle work for it
        await asyncio.sleep(1.0)
        return ex

    ex = asyncio.run(main())
    tabs = [re.search(r'data-tab="([^"]+)" data-state="(\d+)"', h).groups() for h in sent]
    assert [t for t, _ in tabs] == [t for t in explorer_module.TABS if t != "tokens"]  # the open tab went as html
    assert {int(s) for _, s in tabs} == {ex.view.state}
    heatmap = next(h for h in sent if 'data-tab="heatmap"' in h)
    assert "the top-3 chosen" in heatmap, "rendered for the new k"


def test_one_palette_no_near_twins_and_readable_text(model, tok):
    def lab(hex_colour):
        rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        x, y, z = (
            (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
            0.2126 * r + 0.7152 * g + 0.0722 * b,
            (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
        )
        f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x, y, z)]
        return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]), y

    def de2000(c1, c2):  # CIEDE2000 colour difference
        import math

        (L1, a1, b1, _), (L2, a2, b2, _) = lab(c1), lab(c2)
        Cb = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
        G = 0.5 * (1 - math.sqrt(Cb**7 / (Cb**7 + 25**7)))
        a1, a2 = (1 + G) * a1, (1 + G) * a2
        C1, C2 = math.hypot(a1, b1), math.hypot(a2, b2)
        h1, h2 = math.degrees(math.atan2(b1, a1)) % 360, math.degrees(math.atan2(b2, a2)) % 360
        dh = h2 - h1 if abs(h2 - h1) <= 180 else h2 - h1 - 360 * math.copysign(1, h2 - h1)
        dH = 2 * math.sqrt(C1 * C2) * math.sin(math.radians(dh / 2))
        Lb, Cbp = (L1 + L2) / 2, (C1 + C2) / 2
        hb = (h1 + h2) / 2 if abs(h1 - h2) <= 180 else (h1 + h2 + 360) / 2 % 360
        T = (
            1
            - 0.17 * math.cos(math.radians(hb - 30))
            + 0.24 * math.cos(math.radians(2 * hb))
            + 0.32 * math.cos(math.radians(3 * hb + 6))
            - 0.20 * math.cos(math.radians(4 * hb - 63))
        )
        SL = 1 + 0.015 * (Lb - 50) ** 2 / math.sqrt(20 + (Lb - 50) ** 2)
        SC, SH = 1 + 0.045 * Cbp, 1 + 0.015 * Cbp * T
        RC = 2 * math.sqrt(Cbp**7 / (Cbp**7 + 25**7))
        RT = -math.sin(math.radians(60 * math.exp(-(((hb - 275) / 25) ** 2)))) * RC
        return math.sqrt(((L2 - L1) / SL) ** 2 + ((C2 - C1) / SC) ** 2 + (dH / SH) ** 2 + RT * (C2 - C1) / SC * dH / SH)

    import itertools

    assert min(de2000(a, b) for a, b in itertools.combinations(EXPERT_PALETTE[:8], 2)) >= 20
    assert min(de2000(a, b) for a, b in itertools.combinations(EXPERT_PALETTE, 2)) >= 11
    assert all((lab(c)[3] + 0.05) / 0.05 >= 7 for c in EXPERT_PALETTE), "black text on every expert colour"
    assert [moe_edu.course.widgets.expert_colour(e, 8) for e in range(8)] == list(EXPERT_PALETTE[:8])
    ex = RoutingExplorer(model, tok, text="The cat sat.")
    ex.selected = 1
    sizes = [int(s) for s in re.findall(r"font(?:-size)?:\s*(\d+)px", ex.view.html + ex.static_html())]
    assert sizes and min(sizes) >= 11, "no text under 8 pt (11 px)"


def test_the_card_draws_the_router_softmax_top_k_and_the_mass_kept(model, tok):
    trace = trace_routing(model, tok, "def f(x):")
    html = render_routing_html(trace, layer=1, k=2)
    card = html.split('<span class="moe-card"')[1].split("</span></span>")[0]  # the first span's card
    bars = re.findall(r'<i class="moe-bar( moe-k)?" style="([^"]+)"', card)[: trace.num_experts]  # expert order
    assert len(bars) == trace.num_experts
    colours = [re.search(r"background:(#[0-9a-f]+)", style).group(1) for _, style in bars]
    assert colours == [EXPERT_PALETTE[e] for e in range(trace.num_experts)]  # one bar per expert, in its colour
    probs = trace.probs[1][0].tolist()  # (E,) token 0
    heights = [int(re.search(r"height:(\d+)px", style).group(1)) for _, style in bars]
    assert heights == [max(1, round(20 * round(p, 2))) for p in probs]
    _w, e = trace.topk(1, 2)  # (T, 2)
    outlined = [x for x, (k, _) in enumerate(bars) if k]
    assert sorted(outlined) == sorted(e[0].tolist())  # the top-k are outlined
    kept = sum(probs[x] for x in e[0].tolist())
    assert f"keeps {kept:.2f} →" in card
    # the renormalised weights as bars too (what moving k animates): the chosen experts' only, in expert order
    w, _ = trace.topk(1, 2)  # (T, 2)
    wbars = [int(h) for h in re.findall(r'<i class="moe-wbar" style="height:(\d+)px', card)[: trace.num_experts]]
    weight = dict(zip(e[0].tolist(), w[0].tolist(), strict=True))
    assert wbars == [round(20 * round(weight.get(x, 0.0), 2)) for x in range(trace.num_experts)]
    assert sum(h > 0 for h in wbars) == 2


def test_by_layer_view_is_fig_8_with_repeats_made_visible(model, tok):
    from moe_edu.course.widgets.layers import layers_html, repeat_share

    text = "def add(a, b):\n    return a + b"
    trace = trace_routing(model, tok, text)
    html = layers_html(trace, 2, id_prefix="t")
    heads = re.findall(r'class="moe-layer-head" data-layer="(\d)" data-repeat="([0-9.]+)"', html)
    assert [int(layer) for layer, _ in heads] == list(range(trace.num_layers))  # one row per layer
    for layer, share in heads:
        first = trace.first_choice(int(layer)).tolist()  # (T,)
        pairs = list(itertools.pairwise(first))
        assert float(share) == pytest.approx(sum(a == b for a, b in pairs) / len(pairs), abs=1e-4)
        assert repeat_share(trace, int(layer)) == pytest.approx(float(share), abs=1e-4)
    rows = html.split('class="moe-layer-row"')[1:]
    for layer, row in enumerate(rows):  # a span is outlined exactly when its first token repeats the previous one's
        first = trace.first_choice(layer).tolist()
        marks = re.findall(r'class="moe-tok( moe-rep)?[^"]*" data-g="(\d+)"', row)
        for rep, g in marks:
            start = trace.spans[int(g)].start
            assert bool(rep) == (start > 0 and first[start] == first[start - 1])
    assert shown_text(rows[0]) == shown_text(render_routing_html(trace, 0))  # the text as typed in every row
    assert 'class="moe-fc" id="t-stack-fc" checked' in html and 'class="moe-rp" id="t-stack-rp"' in html
    assert "<script" not in html


def test_clicking_an_expert_shows_its_profile(model, tok):
    from moe_edu.course.widgets.profile import top_tokens

    ex = RoutingExplorer(model, tok, text="def f(self):\n    return self.x", layer=3)
    assert "moe-profile" not in ex.views["tokens"]
    ex.dimmed = 1
    html = ex.views["tokens"]
    assert 'class="moe-profile" data-expert="1"' in html and "in this text:" in html and "in the presets:" in html
    pairs, routed, total = top_tokens([ex.trace], 3, 1, ex.k)
    chosen = ex.trace.topk(3, ex.k)[1].tolist()  # (T, k)
    assert routed == sum(1 in row for row in chosen) and total == ex.trace.num_tokens
    assert sum(n for _, n in pairs) <= routed and pairs == sorted(pairs, key=lambda p: -p[1])
    assert f"{routed} of {total} tokens" in html
    ex.dimmed = None
    assert "moe-profile" not in ex.views["tokens"]


def test_heatmap_offers_an_absolute_scale(model, tok):
    trace = trace_routing(model, tok, "The cat sat.")
    html = heatmap_html(trace, 3, id_prefix="h")
    top = float(trace.probs[3].max())
    for p, a, rel in re.findall(r'data-p="([0-9.]+)"[^>]*--a:([0-9.]+);background:rgba\([0-9,]+,([0-9.]+)\)', html):
        assert float(a) == pytest.approx(0.8 * float(p), abs=0.006)  # absolute: 0.8 at probability 1
        assert float(rel) == pytest.approx(0.8 * float(p) / top, abs=0.006)  # default: relative to the layer's max
    assert 'class="moe-abs" id="h-L3-abs"' in html and ".moe-abs:checked ~ div td[data-p]" in html


def test_compare_tab_routes_the_text_through_an_untrained_twin(model, tok):
    from moe_edu.course.widgets.compare import untrained_twin

    before = torch.random.get_rng_state()
    a, b = untrained_twin(model), untrained_twin(model)
    assert torch.equal(torch.random.get_rng_state(), before), "making the twin leaves the global RNG alone"
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name  # seeded: the same twin every time
    ex = RoutingExplorer(model, tok, text="def f(x):\n    return x", layer=2)
    html = ex.views["compare"]
    heads = re.findall(r'data-model="(\w+)" data-repeat="([0-9.]+)"', html)
    assert [n for n, _ in heads] == ["untrained", "trained"]
    traces = ex.compare_traces()
    assert traces["trained"] is ex.trace and traces["untrained"].text == ex.trace.text
    for name, share in heads:
        first = traces[name].first_choice(2).tolist()
        expected = sum(x == y for x, y in itertools.pairwise(first)) / (len(first) - 1)
        assert float(share) == pytest.approx(expected, abs=1e-4)


def test_flow_view_escapes_token_labels_once(model, tok):
    """The flow view escaped the already-escaped labels again: a browser showed `&lt;`, `&#x27;`, `&amp;`."""
    html = flow_html(trace_routing(model, tok, "if a < b & c: print('x')"), 0)
    assert "&amp;lt;" not in html and "&amp;amp;" not in html and "&amp;#x27;" not in html
    assert "&lt;" in html and "<script" not in html


def test_lone_surrogates_are_a_named_error(model, tok):
    """`trace_routing` on a lone surrogate raised a raw TypeError from the tokenizer."""
    with pytest.raises(ValueError, match="lone surrogate"):
        trace_routing(model, tok, "abc \ud800 def")


def test_the_path_is_drawn_as_a_stack_of_lit_expert_boxes(model, tok):
    trace = trace_routing(model, tok, "The cat sat.")
    html = path_html(trace, 1, 2)
    stack = html.split('class="moe-layer-stack"')[1]
    boxes = re.findall(
        r'class="moe-box" data-layer="(\d)" data-expert="(\d)" data-experts="\d"( data-w="[0-9.]+")?', stack
    )
    assert len(boxes) == trace.num_layers * trace.num_experts
    assert [int(layer) for layer, _, _ in boxes[:: trace.num_experts]] == list(reversed(range(trace.num_layers)))
    t = trace.spans[1].start
    for layer in range(trace.num_layers):
        lit = {int(e) for la, e, w in boxes if int(la) == layer and w}
        assert lit == set(trace.topk(layer, 2)[1][t].tolist())  # exactly the chosen experts are lit


def test_flow_tokens_show_their_labels_only(model, tok):
    trace = trace_routing(model, tok, "a < b & c")
    html = flow_html(trace, 0)
    shown = re.findall(r'class="moe-ftok[^"]*"[^>]*>([^<]*)</span>', html)
    assert shown == token_labels(trace)  # escaped once (&lt; not &amp;lt;), and nothing but the label

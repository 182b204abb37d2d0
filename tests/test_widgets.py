"""Headless tests of the routing explorer (moe_edu.widgets): views must match the model's router."""

from __future__ import annotations

import re

import pytest
import torch

import moe_edu
from moe_edu.widgets import (RoutingExplorer, RoutingTrace, heatmap_html, load_html, overview_html,
                             render_routing_html, topk_html, trace_routing)


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
    return [int(e) for e in re.findall(r'class="moe-tok"[^>]*data-expert="(\d+)"', html)]


def test_token_colouring_follows_first_choice_expert(model, tok):
    text = "for i in range(10): total += i"
    ex = RoutingExplorer(model, tok, text="hello")
    ex.text = text
    probs = router_probs(model, text)  # (L, T, E)
    seen = set()
    for layer in range(model.config.num_hidden_layers):
        ex.layer = layer
        html = ex.views["tokens"].value
        expected = probs[layer].argmax(-1).tolist()  # (T,)
        assert token_experts(html) == expected
        colours = re.findall(r'class="moe-tok"[^>]*background:(#[0-9a-f]{6})', html)
        assert colours == [moe_edu.widgets.expert_colour(e, 8) for e in expected]
        seen.add(tuple(expected))
    assert len(seen) > 1, "layers route differently on a random model"
    assert ex.message == ""


def test_heatmap_load_and_overview_match_router(model, tok):
    text = "The cat sat on the mat."
    ex = RoutingExplorer(model, tok, text=text, layer=2)
    probs = router_probs(model, text)  # (L, T, E)
    T, E = probs.shape[1:]
    cells = [float(p) for p in re.findall(r'data-p="([0-9.]+)"', ex.views["heatmap"].value)]
    assert len(cells) == T * E
    torch.testing.assert_close(torch.tensor(cells).reshape(T, E), probs[2], atol=1e-4, rtol=0)
    shares = [float(s) for s in re.findall(r'data-share="([0-9.]+)"', ex.views["expert load"].value)]
    top2 = probs[2].topk(2, dim=-1).indices  # (T, 2)
    expected = torch.bincount(top2.flatten(), minlength=E).float() / (2 * T)  # (E,)
    torch.testing.assert_close(torch.tensor(shares), expected, atol=1e-4, rtol=0)
    grid = [int(e) for e in re.findall(r'<td data-expert="(\d+)"', ex.views["all layers"].value)]
    assert grid == probs.argmax(-1).flatten().tolist()  # (L*T,)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_k_control_renormalises(model, tok, k):
    text = "12 + 35 = 47"
    ex = RoutingExplorer(model, tok, text=text, layer=1)
    ex.k = k
    probs = router_probs(model, text)[1]  # (T, E)
    top_p, top_i = probs.topk(k, dim=-1)  # (T, k)
    rows = re.findall(r'<tr id="moe-explorer-topk-L1-t\d+">(.*?)</tr>', ex.views["top-k"].value)
    assert len(rows) == len(text)
    for t, row in enumerate(rows):
        chips = re.findall(r'data-expert="(\d+)" data-w="([0-9.]+)"', row)[:k]  # this k's chips come first
        assert [int(e) for e, _ in chips] == top_i[t].tolist()
        weights = torch.tensor([float(w) for _, w in chips])
        torch.testing.assert_close(weights, top_p[t] / top_p[t].sum(), atol=1e-4, rtol=0)
    assert ex.views["top-k"].value.count("model (k=2)") == (k != 2)
    assert 'data-k="%d"' % k in ex.views["tokens"].value


def test_empty_text_shows_message(model, tok):
    ex = RoutingExplorer(model, tok, text="")
    assert "Type some text" in ex.message
    assert all(v.value == "" for v in ex.views.values())
    ex.text = "abc"
    assert ex.message == "" and len(token_experts(ex.views["tokens"].value)) == 3
    ex.text = "  \n "
    assert "Type some text" in ex.message and ex.trace is None
    ex.layer = 3  # changing the layer with nothing to show must not raise
    assert ex.views["tokens"].value == ""


def test_overlong_text_is_truncated_with_notice(model, tok):
    context = model.config.max_position_embeddings
    ex = RoutingExplorer(model, tok, text="ab" * context)
    assert ex.trace.num_tokens == context and ex.trace.truncated
    assert f"first {context} of {2 * context} tokens" in ex.message
    assert len(token_experts(ex.views["tokens"].value)) == context
    ex.text = "short"
    assert ex.message == ""
    small = RoutingExplorer(model, tok, text="abcdefgh", max_tokens=5)
    assert small.trace.num_tokens == 5 and "first 5 of 8" in small.message


def test_unknown_characters_and_bad_tokens_never_raise(model, tok):
    ex = RoutingExplorer(model, tok, text="日本語 🙂 <b>&amp;</b>")
    assert ex.message == "" and ex.trace.num_tokens == len("日本語 🙂 <b>&amp;</b>".encode("utf-8"))
    assert "<b>" not in ex.views["tokens"].value  # escaped

    class OutOfVocab(ByteTokenizer):
        def encode(self, text):
            return [10_000] * len(text)

    bad = RoutingExplorer(model, OutOfVocab(), text="abc")
    assert "Could not route this text" in bad.message and "vocab_size" in bad.message
    assert bad.views["tokens"].value == ""


def test_preset_sets_text(model, tok):
    ex = RoutingExplorer(model, tok)
    ex.preset.value = ex.presets["code"]
    assert ex.text == ex.presets["code"] and ex.trace.text == ex.presets["code"]
    assert repr(ex) == f"RoutingExplorer(layer=0, k=2, tokens={len(ex.presets['code'].encode())})"
    assert ex._repr_mimebundle_()["text/plain"] == repr(ex)


def test_static_renderer_is_deterministic(model, tok):
    trace = trace_routing(model, tok, "a\tb\nc")
    assert isinstance(trace, RoutingTrace)
    a = render_routing_html(trace, layer=1, id_prefix="demo")
    assert a == render_routing_html(trace, layer=1, id_prefix="demo")
    ids = re.findall(r'id="([^"]+)"', a)
    assert ids[0] == "demo-L1" and ids[1:] == [f"demo-L1-t{t}" for t in range(5)]
    assert "↵" in a and "⇥" in a and "<script" not in a
    w, e = trace.topk(1)  # (T, 2)
    assert f"expert {int(e[0, 0])}: {float(w[0, 0]):.3f}&#10;expert {int(e[0, 1])}: {float(w[0, 1]):.3f}" in a
    for view in (heatmap_html, load_html, topk_html):
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
    with pytest.raises(ValueError, match="id_prefix"):
        render_routing_html(trace, layer=0, id_prefix='x" onmouseover="')
    with pytest.raises(ValueError, match="text is empty"):
        trace_routing(model, tok, "")
    with pytest.raises(TypeError, match="router_logits"):
        no_router = type("M", (torch.nn.Module,), {"forward": lambda self, x, **kw: object()})()
        no_router.config = model.config
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
    assert token_experts(ex.views["tokens"].value) == ex.trace.first_choice(0).tolist()


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
    assert token_experts(ex.views["tokens"].value) == logits.argmax(-1).tolist()
    shown = re.findall(r'class="moe-tok"[^>]*>([^<]*)</span>', ex.views["tokens"].value)
    assert "".join(shown).replace("↵", "\n") == text  # every piece shown, in order

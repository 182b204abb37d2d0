"""RoutingExplorer: type a text, pick a layer and k, and see which experts every token goes to.

ipywidgets controls (preset, layer, k) above a `RoutingView` (anywidget: text box, tabs, panels).
Python routes the text and renders the shown tab's panel as HTML (a 256-token text is ~1.3 MB of HTML
over all eight tabs, ~0.3 MB for the tokens tab); the other tabs follow while the kernel idles (idle.py), or
when opened, each kept until the text, layer, k, selection or highlighted expert changes; callbacks only set widget traits,
never print, so nbval and Voila stay clean, and errors become a message in the widget, never a
traceback. Displayed, the explorer first outputs a static HTML picture of its current view, which
is what a saved notebook shows where no kernel runs (GitHub, nbviewer, JupyterLab before running).
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from moe_edu.course.widgets.compare import compare_html, compare_traces, untrained_twin
from moe_edu.course.widgets.flow import flow_html
from moe_edu.course.widgets.idle import IdleRenderer
from moe_edu.course.widgets.layers import layers_html
from moe_edu.course.widgets.profile import profile_html
from moe_edu.course.widgets.render import CLICK_FLOW, CLICK_LEGEND, check_prefix, notice_html, render_routing_html
from moe_edu.course.widgets.trace import RoutingTrace, Tokenizer, trace_routing
from moe_edu.course.widgets.view import RoutingView
from moe_edu.course.widgets.views import heatmap_html, load_html, overview_html, path_html, topk_html

PRESET_TEXTS: dict[str, str] = {
    "prose": "The cat sat on the warm mat and watched the rain fall. When the sun came out, the cat went "
    "into the garden and slept under the old tree.",
    "code": "def add(a, b):\n    return a + b\n\n\nfor i in range(3):\n    print(add(i, i * 2))\n",
    "arithmetic": "12 + 35 = 47; 9 * 8 = 72; 100 - 1 = 99; 144 / 12 = 12; 7 * 7 = 49",
    "French": "Le chat dort près de la fenêtre, où il fait chaud. Demain, nous irons au marché avec les enfants.",
}
# Shown as presets by the explorer but kept out of PRESET_TEXTS (notebook 06 measures routing over those):
# characters made of several byte tokens, and right-to-left text.
SCRIPT_TEXTS: dict[str, str] = {
    "繁體中文 (zh-TW)": "早上搭捷運去上班，車廂裡大家都在滑手機看網路新聞。下班後和朋友去夜市吃蚵仔煎，再買一杯珍珠奶茶。",
    "中文 · emoji · שלום": "混合專家模型讓每個 token 只啟用 2 個專家 🙂。Café, naïve — שלום עולם.",
}

TABS = ("tokens", "by layer", "flow", "heatmap", "expert load", "all layers", "top-k", "compare")
RUN_NOTE = "Static picture of the explorer: run this cell to type your own text and click through the views."


class RoutingExplorer:
    """Live routing views of `model` on a text, driven by a text box, a layer selector and k.

    `model`: anything with `.config` and `forward(input_ids, output_router_logits=True)
    .router_logits`; `tokenizer`: anything with `encode` / `decode`. Display the explorer
    (last expression of a cell) to get the app; set `.text`, `.layer`, `.k`, `.selected`,
    `.dimmed`, `.tab` from code.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        text: str | None = None,
        *,
        layer: int = 0,
        k: int | None = None,
        presets: dict[str, str] | None = None,
        max_tokens: int | None = None,
        id_prefix: str = "moe-explorer",
    ) -> None:
        config = getattr(model, "config", None)
        for field in ("num_hidden_layers", "num_local_experts", "num_experts_per_tok"):
            if not isinstance(getattr(config, field, None), int):
                raise TypeError(f"model.config must have an int {field} (a Mixtral-style config)")
        for method in ("encode", "decode"):
            if not callable(getattr(tokenizer, method, None)):
                raise TypeError(f"tokenizer must have a {method}() method")
        L, E = config.num_hidden_layers, config.num_local_experts
        k = config.num_experts_per_tok if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= E:
            raise ValueError(f"k must be an int in [1, num_local_experts={E}], got {k!r}")
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < L:
            raise ValueError(f"layer must be an int in [0, {L}), got {layer!r}")
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self.id_prefix = check_prefix(id_prefix)
        self.presets = dict(PRESET_TEXTS | SCRIPT_TEXTS if presets is None else presets)
        self._preset_traces: list[RoutingTrace] | None = None
        self._untrained = None  # the compare tab's untrained twin of `model`, made on first use
        self._compare: dict[str, RoutingTrace] | None = None
        if text is None:
            text = next(iter(self.presets.values()), "")
        self.trace: RoutingTrace | None = None
        self.panels: dict[str, str] = {}  # the tabs rendered for the current state (`_state`), by tab name
        self._state: tuple = ()  # (trace number, layer, k, selected, dimmed) that `panels` were rendered for
        self._traces = 0  # +1 per new trace: part of `_state` (an id() could be reused by the next trace)
        self._renders = 0  # +1 per new state: the panels' data-state, so the page knows which are stale
        self._sent: set[str] = set()  # the tabs whose panel for the current state the page has
        self._idle = IdleRenderer(self._send_next_tab)  # the other tabs, rendered and sent while the kernel idles
        self.last_update_ms = 0.0  # Python time of the last route + render (notebook 06 prints it)

        self.preset = widgets.Dropdown(
            options=[("(choose a preset)", "")] + [(n, t) for n, t in self.presets.items()],
            value="",
            description="preset",
        )
        self.layer_box = widgets.Dropdown(
            options=[(f"layer {i}", i) for i in range(L)], value=layer, description="layer"
        )
        self.k_box = widgets.IntSlider(value=k, min=1, max=E, description="k")
        self.view = RoutingView(text=text, tabs=list(TABS))
        controls = widgets.HBox(  # wrap on a narrow screen (a phone at 400 px) instead of falling off it
            [self.preset, self.layer_box, self.k_box], layout=widgets.Layout(flex_flow="row wrap", max_width="100%")
        )
        self.widget = widgets.VBox([controls, self.view], layout=widgets.Layout(max_width="100%"))

        self.preset.observe(self._on_preset, names="value")
        self.view.observe(self._on_text, names="text")
        self.layer_box.observe(self._on_view, names="value")
        self.k_box.observe(self._on_view, names="value")
        self.view.observe(self._on_mark, names=["selected", "dimmed"])
        self.view.observe(self._on_view, names="tab")  # a tab is rendered when it is opened
        self._on_text({"new": text})  # the first trace and render

    # ------------------------------------------------------------ public handles
    @property
    def text(self) -> str:
        return self.view.text

    @text.setter
    def text(self, value: str) -> None:
        self.view.text = value

    @property
    def layer(self) -> int:
        return self.layer_box.value

    @layer.setter
    def layer(self, value: int) -> None:
        self.layer_box.value = value

    @property
    def k(self) -> int:
        return self.k_box.value

    @k.setter
    def k(self, value: int) -> None:
        self.k_box.value = value

    @property
    def selected(self) -> int | None:
        """The selected span (index into `trace.spans`), or None."""
        return None if self.view.selected < 0 else self.view.selected

    @selected.setter
    def selected(self, value: int | None) -> None:
        self.view.selected = -1 if value is None else value

    @property
    def dimmed(self) -> int | None:
        """The highlighted expert (all others dimmed), or None."""
        return None if self.view.dimmed < 0 else self.view.dimmed

    @dimmed.setter
    def dimmed(self, value: int | None) -> None:
        self.view.dimmed = -1 if value is None else value

    @property
    def tab(self) -> str:
        return self.view.tab

    @tab.setter
    def tab(self, value: str) -> None:
        if value not in TABS:
            raise ValueError(f"tab must be one of {TABS}, got {value!r}")
        self.view.tab = value

    @property
    def message(self) -> str:
        """The status line shown above the views (empty when all is well)."""
        return self.view.status

    @property
    def views(self) -> dict[str, str]:
        """The HTML of every tab's panel for the current state ({} while a message is shown); the tabs not
        yet opened are rendered now (and kept, so opening them in the page costs no render)."""
        if self.trace is None:
            return {}
        self._check_state()
        for tab in TABS:
            if tab not in self.panels:
                self.panels[tab] = self.render_panel(tab)
        return dict(self.panels)

    # ----------------------------------------------------------------- callbacks
    def _on_preset(self, change: dict) -> None:
        if change["new"]:
            self.view.text = change["new"]

    def _on_text(self, change: dict) -> None:
        start = time.perf_counter()
        text = change["new"]
        self.preset.value = text if text in self.presets.values() else ""  # never a stale preset
        self.trace, self.view.selected, self.view.dimmed = None, -1, -1  # a new text starts unfiltered
        if not text.strip():
            self._show_message("Type some text (or choose a preset) to see where its tokens are routed.")
            return
        try:
            self.trace = trace_routing(self.model, self.tokenizer, text, self.max_tokens)
            self._traces += 1
        except Exception as err:  # the notebook must never get a traceback from a callback
            self._show_message(f"Could not route this text: {err}")
            return
        self._render(start)

    def _on_view(self, change: dict) -> None:
        if self.trace is not None:
            self._render(time.perf_counter())

    def _on_mark(self, change: dict) -> None:
        if self.trace is None:
            return
        if change["name"] == "selected" and change["new"] >= len(self.trace.spans):
            self.view.selected = -1
            return
        if change["name"] == "dimmed" and change["new"] >= self.trace.num_experts:
            self.view.dimmed = -1
            return
        self._render(time.perf_counter())

    def _show_message(self, text: str) -> None:
        self.view.status = f'<p class="moe-message" style="color:#a63603;margin:2px 0">{escape(text)}</p>'
        self.panels, self._state = {}, ()
        self._idle.cancel()
        with self.view.hold_sync():
            self.view.html = ""
            self.view.revision += 1

    def render_panel(self, tab: str) -> str:
        """One tab's HTML for the current text, layer, k, selection and highlighted expert."""
        trace, layer, k, p = self.trace, self.layer, self.k, self.id_prefix
        sel, dim = self.selected, self.dimmed
        path = "" if sel is None else path_html(trace, sel, k, id_prefix=f"{p}-path")
        if tab == "tokens":
            profile = "" if dim is None else profile_html(trace, self.preset_traces(), layer, dim, k)
            tokens = render_routing_html(
                trace, layer, k, id_prefix=f"{p}-tokens", notice=False, selected=sel, dimmed=dim
            )
            return tokens + profile + path
        if tab == "by layer":
            return layers_html(trace, k, id_prefix=f"{p}-layers", selected=sel, dimmed=dim)
        if tab == "flow":
            return flow_html(trace, layer, k, id_prefix=f"{p}-flow", selected=sel, dimmed=dim)
        if tab == "heatmap":
            return heatmap_html(trace, layer, k, id_prefix=f"{p}-heatmap", selected=sel, dimmed=dim)
        if tab == "expert load":
            return load_html(trace, layer, k, id_prefix=f"{p}-load", dimmed=dim)
        if tab == "all layers":
            return overview_html(trace, k, id_prefix=f"{p}-overview", selected=sel, dimmed=dim) + path
        if tab == "top-k":
            return topk_html(trace, layer, k, id_prefix=f"{p}-topk", selected=sel)
        if tab == "compare":  # the untrained model's forward runs only when this tab is shown
            return compare_html(self.compare_traces(), layer, k, id_prefix=f"{p}-compare", selected=sel, dimmed=dim)
        raise ValueError(f"tab must be one of {TABS}, got {tab!r}")

    def render_panels(self) -> dict[str, str]:
        """Every tab's HTML for the current text, layer, k, selection and highlighted expert."""
        return {tab: self.render_panel(tab) for tab in TABS}

    def _check_state(self) -> None:
        """Forget the rendered panels when the text, layer, k, selection or highlighted expert changed."""
        state = (self._traces, self.layer, self.k, self.selected, self.dimmed)
        if state != self._state:
            self.panels, self._state, self._sent = {}, state, set()
            self._renders += 1

    def _panel(self, tab: str) -> str:
        """The page's wrapper of a rendered panel: its tab and the state it was drawn for."""
        return f'<div class="moe-panel" data-tab="{escape(tab)}" data-state="{self._renders}">{self.panels[tab]}</div>'

    def _send_next_tab(self, state: tuple) -> bool:
        """Idle work: render one tab the page lacks for `state` and send it (kept hidden there until opened);
        True while tabs remain. The compare tab (an extra forward pass) comes last, as in TABS."""
        if state != self._state or self.trace is None:
            return False
        tab = next((t for t in TABS if t not in self._sent), None)
        if tab is None:
            return False
        if tab not in self.panels:
            self.panels[tab] = self.render_panel(tab)
        self._sent.add(tab)
        self.view.send({"panel": self._panel(tab)})
        return True

    def compare_traces(self) -> dict[str, RoutingTrace]:
        """The current text through an untrained twin of the model (made once) and through the model."""
        if self._untrained is None:
            self._untrained = untrained_twin(self.model)
        if self._compare is None or self._compare["trained"] is not self.trace:
            self._compare = compare_traces(self._untrained, self.trace, self.tokenizer, self.max_tokens)
        return self._compare

    def preset_traces(self) -> list[RoutingTrace]:
        """The routing of every preset text (traced once, on the first expert profile asked for)."""
        if self._preset_traces is None:
            self._preset_traces = [
                trace_routing(self.model, self.tokenizer, text, self.max_tokens)
                for text in self.presets.values()
                if text.strip()
            ]
        return self._preset_traces

    def _render(self, start: float) -> None:
        """Send the shown tab's panel (rendered now, or kept from an earlier visit in the same state)."""
        self._check_state()
        tab = self.tab
        try:
            if tab not in self.panels:
                self.panels[tab] = self.render_panel(tab)
        except Exception as err:
            self._show_message(f"Could not render the routing: {err}")
            return
        with self.view.hold_sync():  # one message: the page never sees the notice of one text with another's panel
            self.view.status = notice_html(self.trace)  # the one place the truncation notice appears
            self.view.state = self._renders
            self.view.html = self._panel(tab)
            self.view.revision += 1
        self._sent.add(tab)
        self._idle.schedule(self._state)
        self.last_update_ms = 1000 * (time.perf_counter() - start)

    # ------------------------------------------------------------------- display
    def static_html(self) -> str:
        """The current view as static HTML (same renderer as the live panels), for saved notebooks."""
        p = self.id_prefix
        head = (
            f'<p style="margin:2px 0;font-size:12px;color:var(--jp-content-font-color2,#555)">'
            f"Routing explorer · layer {self.layer} · "
            f"k = {self.k} · view: {escape(self.tab)}</p>"
        )
        note = f'<p class="moe-run-note" style="margin:2px 0;font-size:12px;color:#a63603">{RUN_NOTE}</p>'
        body = self.view.status + self.panels.get(self.tab, "")
        for invite in (CLICK_LEGEND, CLICK_FLOW):  # a picture does not react to clicks: don't invite them
            body = body.replace(f" {invite}", "").replace(invite, "")
        return f'<div id="{p}-static" class="moe-explorer-static">{note}{head}{body}</div>'

    def __repr__(self) -> str:
        n = 0 if self.trace is None else self.trace.num_tokens
        return f"RoutingExplorer(layer={self.layer}, k={self.k}, tokens={n})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def display_bundles(self) -> list[dict]:
        """What displaying the explorer outputs: the static picture (its own output, so every viewer shows
        it: JupyterLab before running, GitHub, nbviewer), then the live widget. The widget's CSS hides the
        picture in front ends where the widget runs (view.py)."""
        widget = self._repr_mimebundle_()
        widget["text/plain"] = ""  # where the widget cannot run, the picture above says it all: no stray repr line
        return [{"text/html": self.static_html(), "text/plain": f"<static picture of {self!r}>"}, widget]

    def _ipython_display_(self) -> None:
        for bundle in self.display_bundles():
            display(bundle, raw=True)

"""RoutingExplorer: type a text, pick a layer and k, and see which expert every token goes to.

An ipywidgets app (notebook 06). Every callback only sets widget traits (`HTML.value`), never
prints, so nbval's checks and Voila both stay clean; errors become a message in the widget,
never a traceback in the notebook.
"""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as widgets

from .render import render_routing_html
from .trace import RoutingTrace, Tokenizer, trace_routing
from .views import heatmap_html, load_html, overview_html, topk_html

PRESET_TEXTS: dict[str, str] = {
    "prose": "The cat sat on the warm mat and watched the rain fall. When the sun came out, the cat went "
             "into the garden and slept under the old tree.",
    "code": "def add(a, b):\n    return a + b\n\n\nfor i in range(3):\n    print(add(i, i * 2))\n",
    "arithmetic": "12 + 35 = 47; 9 * 8 = 72; 100 - 1 = 99; 144 / 12 = 12; 7 * 7 = 49",
    "French": "Le chat dort près de la fenêtre, où il fait chaud. Demain, nous irons au marché avec les enfants.",
}

TABS = ("tokens", "heatmap", "expert load", "all layers", "top-k")


class RoutingExplorer:
    """Live routing views of `model` on a text, driven by a text box, a layer selector and k.

    `model`: anything with `.config` and `forward(input_ids, output_router_logits=True)
    .router_logits`; `tokenizer`: anything with `encode` / `decode`. Display the explorer
    (last expression of a cell) to get the app; set `.text`, `.layer`, `.k` from code.
    """

    def __init__(self, model: Any, tokenizer: Tokenizer, text: str | None = None, *, layer: int = 0,
                 k: int | None = None, presets: dict[str, str] | None = None, max_tokens: int | None = None,
                 id_prefix: str = "moe-explorer") -> None:
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
        self.model, self.tokenizer, self.max_tokens, self.id_prefix = model, tokenizer, max_tokens, id_prefix
        self.presets = dict(PRESET_TEXTS if presets is None else presets)
        if text is None:
            text = next(iter(self.presets.values()), "")
        self.trace: RoutingTrace | None = None

        self.preset = widgets.Dropdown(options=[("(choose a preset)", "")] + [(n, t) for n, t in self.presets.items()],
                                       value="", description="preset")
        self.text_box = widgets.Textarea(value=text, placeholder="Type a text to route", description="text",
                                         continuous_update=False, layout=widgets.Layout(width="95%", height="80px"))
        self.layer_box = widgets.Dropdown(options=[(f"layer {i}", i) for i in range(L)], value=layer,
                                          description="layer")
        self.k_box = widgets.IntSlider(value=k, min=1, max=E, description="k", continuous_update=False)
        self.status = widgets.HTML(value="")
        self.views = {name: widgets.HTML(value="") for name in TABS}
        tabs = widgets.Tab(children=[self.views[n] for n in TABS], titles=list(TABS))
        self.widget = widgets.VBox([widgets.HBox([self.preset, self.layer_box, self.k_box]), self.text_box,
                                    self.status, tabs])

        self.preset.observe(self._on_preset, names="value")
        self.text_box.observe(self._on_text, names="value")
        self.layer_box.observe(self._on_view, names="value")
        self.k_box.observe(self._on_view, names="value")
        self._on_text({"new": text})  # the first trace and render

    # ------------------------------------------------------------ public handles
    @property
    def text(self) -> str:
        return self.text_box.value

    @text.setter
    def text(self, value: str) -> None:
        self.text_box.value = value

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
    def message(self) -> str:
        """The status line shown above the views (empty when all is well)."""
        return self.status.value

    # ----------------------------------------------------------------- callbacks
    def _on_preset(self, change: dict) -> None:
        if change["new"]:
            self.text_box.value = change["new"]

    def _on_text(self, change: dict) -> None:
        self.trace = None
        text = change["new"]
        if not text.strip():
            self._show_message("Type some text (or choose a preset) to see where its tokens are routed.")
            return
        try:
            self.trace = trace_routing(self.model, self.tokenizer, text, self.max_tokens)
        except Exception as err:  # the notebook must never get a traceback from a callback
            self._show_message(f"Could not route this text: {err}")
            return
        self._render()

    def _on_view(self, change: dict) -> None:
        if self.trace is not None:
            self._render()

    def _show_message(self, text: str) -> None:
        self.status.value = f'<p class="moe-message" style="color:#a63603">{escape(text)}</p>'
        for view in self.views.values():
            view.value = ""

    def _render(self) -> None:
        trace, layer, k, p = self.trace, self.layer, self.k, self.id_prefix
        try:
            html = {
                "tokens": render_routing_html(trace, layer, k, id_prefix=f"{p}-tokens"),
                "heatmap": heatmap_html(trace, layer, k, id_prefix=f"{p}-heatmap"),
                "expert load": load_html(trace, layer, k, id_prefix=f"{p}-load"),
                "all layers": overview_html(trace, id_prefix=f"{p}-overview"),
                "top-k": topk_html(trace, layer, k, id_prefix=f"{p}-topk"),
            }
        except Exception as err:
            self._show_message(f"Could not render the routing: {err}")
            return
        notice = ""
        if trace.truncated:
            notice = (f'<p class="moe-notice" style="color:#a63603">Text truncated: showing the first '
                      f"{trace.num_tokens} of {trace.num_input_tokens} tokens (the model's context).</p>")
        self.status.value = notice
        for name, value in html.items():
            self.views[name].value = value

    # ------------------------------------------------------------------- display
    def __repr__(self) -> str:
        n = 0 if self.trace is None else self.trace.num_tokens
        return f"RoutingExplorer(layer={self.layer}, k={self.k}, tokens={n})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

"""Interactive and static views of MoE routing (notebook 06).

`trace_routing` runs a model once and keeps every layer's router logits;
`render_routing_html` colours the text by first-choice expert as static HTML;
`RoutingExplorer` is the ipywidgets app built on both.
"""

from .explorer import PRESET_TEXTS, RoutingExplorer
from .render import expert_colour, render_routing_html
from .trace import RoutingTrace, trace_routing
from .views import heatmap_html, load_html, overview_html, topk_html

__all__ = ["PRESET_TEXTS", "RoutingExplorer", "RoutingTrace", "expert_colour", "heatmap_html", "load_html",
           "overview_html", "render_routing_html", "topk_html", "trace_routing"]

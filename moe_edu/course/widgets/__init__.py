"""Interactive and static views of MoE routing (notebook 06).

`trace_routing` runs a model once and keeps every layer's router logits (and the token spans that
make whole characters); `render_routing_html` colours the text by each token's top-k experts as
static HTML; `RoutingExplorer` is the app built on both (ipywidgets controls + an anywidget view).
"""

from moe_edu.course.widgets.explorer import PRESET_TEXTS, SCRIPT_TEXTS, TABS, RoutingExplorer
from moe_edu.course.widgets.flow import flow_html
from moe_edu.course.widgets.text_spans import TextSpan, text_spans, visible
from moe_edu.course.widgets.trace import RoutingTrace, trace_routing
from moe_edu.course.widgets.view import RoutingView
from moe_edu.course.widgets.views import heatmap_html, load_html, overview_html, path_html, topk_html

from ..palette import expert_colour
from .render import render_routing_html

__all__ = [
    "PRESET_TEXTS",
    "SCRIPT_TEXTS",
    "TABS",
    "RoutingExplorer",
    "RoutingTrace",
    "RoutingView",
    "TextSpan",
    "expert_colour",
    "flow_html",
    "heatmap_html",
    "load_html",
    "overview_html",
    "path_html",
    "render_routing_html",
    "text_spans",
    "topk_html",
    "trace_routing",
    "visible",
]

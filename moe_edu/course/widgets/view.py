"""The explorer's front end: an anywidget that shows the Python-rendered views and sends clicks back.

Why anywidget and not ipywidgets.HTML: an HTML widget can show the views but cannot report a click
(select a token, dim an expert) or debounce typing; anywidget adds a few lines of JavaScript to one
widget, with no extension to build. The views themselves stay Python-rendered HTML (the same
renderer as the static picture in the saved notebook); the JavaScript (`static/explorer_view.js`) only
- debounces the text box (`debounce_ms` after the last key, the text goes to Python, which re-routes;
  nothing is sent while an input method is composing, and the committed text is sent on `compositionend`),
- shows one hover card fixed to the viewport (so no ancestor's `overflow` clips it; flipped above the
  token near the bottom of the window), pinned by a click, a tap or the keyboard; a redraw (k or the
  layer moved) keeps it open on the same span and animates its router bars to the new values,
- makes tokens, legend entries and tabs reachable by keyboard (arrows move the selection, Enter/Space
  selects, each token's `aria-label` is its card's text) and scrolls the selection into view,
- shows the panel of the open tab: Python sends only that one (`html`, one `.moe-panel` stamped with
  `data-state`), then the other tabs' panels as custom messages while the kernel idles; panels of other
  tabs stay in the page, hidden, and are redrawn only if the state (text, layer, k, selection,
  highlighted expert) has changed since,
- marks the selected span and the highlighted expert at once (classes `moe-sel` / `moe-dim`), then
  tells Python, which re-renders the same marks plus the selected token's path.
"""

from __future__ import annotations

from importlib import resources

import anywidget
import traitlets

STATIC = resources.files("moe_edu.course").joinpath("static")
# the front end's JavaScript and CSS live in moe_edu/course/static; the card placement is shared with the website
ESM = "\n".join(STATIC.joinpath(name).read_text(encoding="utf-8") for name in ("float_card.js", "explorer_view.js"))
CSS = STATIC.joinpath("explorer_view.css").read_text(encoding="utf-8")


class RoutingView(anywidget.AnyWidget):
    """Front end of `RoutingExplorer`: text box, status line, tabs and the rendered panels."""

    _esm = ESM
    _css = CSS
    html = traitlets.Unicode("").tag(sync=True)  # every panel: <div class="moe-panel" data-tab="...">
    status = traitlets.Unicode("").tag(sync=True)
    text = traitlets.Unicode("").tag(sync=True)
    tabs = traitlets.List(traitlets.Unicode()).tag(sync=True)
    tab = traitlets.Unicode("tokens").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)  # span index, -1: none
    dimmed = traitlets.Int(-1).tag(sync=True)  # expert index, -1: none
    debounce_ms = traitlets.Int(250).tag(sync=True)
    revision = traitlets.Int(0).tag(sync=True)  # +1 per Python update, even one that changes no HTML
    state = traitlets.Int(0).tag(sync=True)  # the panels' data-state for the current text, layer, k and marks

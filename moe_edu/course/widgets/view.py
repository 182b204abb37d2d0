"""The explorer's front end: an anywidget that shows the Python-rendered views and sends clicks back.

Why anywidget and not ipywidgets.HTML: an HTML widget can show the views but cannot report a click
(select a token, dim an expert) or debounce typing; anywidget adds a few lines of JavaScript to one
widget, with no extension to build. The views themselves stay Python-rendered HTML (the same
renderer as the static picture in the saved notebook); the JavaScript only
- debounces the text box (`debounce_ms` after the last key, the text goes to Python, which re-routes),
- switches tabs (all panels are rendered, so switching is instant),
- marks the selected span and the highlighted expert at once (classes `moe-sel` / `moe-dim`), then
  tells Python, which re-renders the same marks plus the selected token's path.
"""

from __future__ import annotations

import anywidget
import traitlets

ESM = r"""
function render({ model, el }) {
  el.classList.add("moe-explorer-view");
  const box = document.createElement("textarea");
  box.className = "moe-input";
  box.rows = 3;
  box.placeholder = "Type a text to route (any language, emoji, code)";
  box.value = model.get("text");
  const status = document.createElement("div");
  status.className = "moe-status";
  const bar = document.createElement("div");
  bar.className = "moe-tabs";
  bar.setAttribute("role", "tablist");
  const body = document.createElement("div");
  body.className = "moe-body";
  el.append(box, status, bar, body);

  let timer = null, sent = null;
  box.addEventListener("input", () => {
    clearTimeout(timer);
    el.classList.add("moe-pending");
    timer = setTimeout(() => {
      sent = box.value;
      model.set("text", box.value);
      model.save_changes();
    }, model.get("debounce_ms"));
  });
  model.on("change:text", () => {
    const t = model.get("text");
    if (t !== box.value && t !== sent) box.value = t;  // set from Python (a preset), not an echo
  });

  function show() {
    const tab = model.get("tab");
    for (const p of body.querySelectorAll(":scope > .moe-panel")) p.hidden = p.dataset.tab !== tab;
    for (const b of bar.children) {
      b.classList.toggle("moe-tab-on", b.dataset.tab === tab);
      b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    }
  }
  function tabs() {
    bar.replaceChildren(...model.get("tabs").map((name) => {
      const b = document.createElement("button");
      b.textContent = name;
      b.dataset.tab = name;
      b.className = "moe-tab";
      b.setAttribute("role", "tab");
      return b;
    }));
    show();
  }
  function mark() {
    const g = model.get("selected"), e = String(model.get("dimmed"));
    for (const n of body.querySelectorAll(".moe-sel")) n.classList.remove("moe-sel");
    if (g >= 0) for (const n of body.querySelectorAll(`[data-g="${g}"]`)) n.classList.add("moe-sel");
    for (const n of body.querySelectorAll("[data-experts]"))
      n.classList.toggle("moe-dim", e !== "-1" && !n.dataset.experts.split(" ").includes(e));
    for (const n of body.querySelectorAll(".moe-legend-item"))
      n.classList.toggle("moe-dim", e !== "-1" && n.dataset.expert !== e);
  }
  function paint() {
    body.innerHTML = model.get("html");
    el.classList.remove("moe-pending");
    show();
    mark();
    el.dataset.renders = String(Number(el.dataset.renders || 0) + 1);
  }
  bar.addEventListener("click", (ev) => {
    const b = ev.target.closest(".moe-tab");
    if (!b) return;
    model.set("tab", b.dataset.tab);
    model.save_changes();
  });
  body.addEventListener("click", (ev) => {
    const item = ev.target.closest(".moe-legend-item");
    if (item) {
      const e = Number(item.dataset.expert);
      model.set("dimmed", model.get("dimmed") === e ? -1 : e);
      model.save_changes();
      return;
    }
    const tok = ev.target.closest("[data-g]");
    if (tok) {
      const g = Number(tok.dataset.g);
      model.set("selected", model.get("selected") === g ? -1 : g);
      model.save_changes();
    }
  });
  model.on("change:html", paint);
  model.on("change:revision", () => el.classList.remove("moe-pending"));  // also when the views did not change
  model.on("change:status", () => { status.innerHTML = model.get("status"); });
  model.on("change:tab", show);
  model.on("change:tabs", tabs);
  model.on("change:selected", mark);
  model.on("change:dimmed", mark);
  status.innerHTML = model.get("status");
  tabs();
  paint();
  return () => clearTimeout(timer);
}
export default { render };
"""

CSS = """
.moe-explorer-view { font-size: 13px; }
.moe-explorer-view .moe-input { width: 95%; min-height: 60px; font: 15px/1.4 ui-monospace, Menlo, Consolas, monospace;
  padding: 4px; box-sizing: border-box; }
.moe-explorer-view .moe-tabs { display: flex; gap: 2px; border-bottom: 1px solid #999; margin: 4px 0; }
.moe-explorer-view .moe-tab { font-size: 13px; padding: 3px 10px; border: 1px solid #bbb; border-bottom: none;
  background: #f1f1f1; border-radius: 4px 4px 0 0; cursor: pointer; color: #222; }
.moe-explorer-view .moe-tab.moe-tab-on { background: #fff; font-weight: bold; border-color: #777; }
.moe-explorer-view.moe-pending .moe-body { opacity: 0.75; }
/* where the live widget runs, hide the static picture output just before it (RoutingExplorer.display_bundles) */
.jp-OutputArea-child:has(+ .jp-OutputArea-child .moe-explorer-view) .moe-explorer-static,
.output_area:has(+ .output_area .moe-explorer-view) .moe-explorer-static { display: none; }
"""


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

// The routing explorer's anywidget front end (see moe_edu/course/widgets/view.py); float_card.js comes first.
let VIEWS = 0;

function render({ model, el }) {
  el.classList.add("moe-explorer-view");
  el.id = `moe-view-${++VIEWS}-${Math.random().toString(36).slice(2, 8)}`;
  const own = document.createElement("style");  // beats the static pictures' in-place CSS cards (id + !important)
  own.textContent = `#${el.id} .moe-tok:hover > .moe-card { display: none !important; }`;
  const box = document.createElement("textarea");
  box.className = "moe-input";
  box.rows = 3;
  box.placeholder = "Type a text to route (any language, emoji, code)";
  box.setAttribute("aria-label", "text to route");
  box.value = model.get("text");
  const status = document.createElement("div");
  status.className = "moe-status";
  const chipBox = document.createElement("div");
  chipBox.className = "moe-filter";
  const bar = document.createElement("div");
  bar.className = "moe-tabs";
  bar.setAttribute("role", "tablist");
  const body = document.createElement("div");
  body.className = "moe-body";
  el.append(own, box, status, chipBox, bar, body);

  // One hover card for the whole page, fixed to the viewport: no ancestor's overflow can clip it.
  const card = document.createElement("div");
  card.className = "moe-float-card";
  card.setAttribute("role", "tooltip");
  card.hidden = true;
  document.body.append(card);
  let pinned = null;  // the span whose card stays open (tap, click or keyboard)
  let hovered = null;  // the span under the mouse: its card stays open when the views are redrawn (k moved)
  let cardSrc = "";  // the HTML the card shows (a span's .moe-card)

  function showCard(tok) {
    const src = tok && tok.querySelector(".moe-card");
    if (!src) { card.hidden = true; return; }
    const same = !card.hidden && card.dataset.g === tok.dataset.g;
    if (!same) card.classList.remove("moe-morph");
    if (cardSrc !== src.innerHTML) {  // (not card.innerHTML: the animation rewrites its bars' style attributes)
      cardSrc = src.innerHTML;
      const bars = (root) => Array.from(root.querySelectorAll(".moe-bar, .moe-wbar"));
      const before = same ? bars(card).map((b) => [b.className, b.style.height]) : [];
      card.innerHTML = src.innerHTML;
      const now = bars(card);
      if (same && now.length === before.length) {  // the same token redrawn: animate from its old bars
        const after = now.map((b) => [b.className, b.style.height]);
        now.forEach((b, i) => { [b.className, b.style.height] = before[i]; });
        card.classList.remove("moe-morph");
        void card.offsetWidth;  // commit the old look, so that the change below is a transition
        now.forEach((b, i) => { [b.className, b.style.height] = after[i]; });
        card.classList.add("moe-morph");
      }
    }
    card.dataset.g = tok.dataset.g;
    card.dataset.pinned = String(pinned !== null && pinned === Number(tok.dataset.g));
    card.hidden = false;
    placeFloatCard(card, tok);
  }
  function hideCard() { hovered = null; if (pinned === null) card.hidden = true; }

  // The flow tab: lines from one token to its chosen experts' bins, drawn where the browser placed them.
  const SVGNS = "http://www.w3.org/2000/svg";
  function drawFlow(tok) {
    const flow = visiblePanel()?.querySelector(".moe-flow");
    const svg = flow?.querySelector(".moe-flow-lines");
    if (!svg) return;
    svg.replaceChildren();
    if (!tok || !flow.contains(tok)) return;
    const box = flow.getBoundingClientRect(), t = tok.getBoundingClientRect();
    const area = flow.querySelector(".moe-flow-tokens").getBoundingClientRect();
    const x0 = t.left + t.width / 2 - box.left, y0 = Math.min(t.bottom, area.bottom) - box.top;
    for (const pair of (tok.dataset.route || "").split(" ")) {
      const [e, w] = pair.split(":");
      const bin = flow.querySelector(`.moe-bin[data-e="${e}"]`);
      if (!bin) continue;
      const b = bin.getBoundingClientRect();
      const x1 = b.left + b.width / 2 - box.left, y1 = b.top - box.top, ym = (y0 + y1) / 2;
      const path = document.createElementNS(SVGNS, "path");
      path.setAttribute("d", `M${x0} ${y0} C${x0} ${ym} ${x1} ${ym} ${x1} ${y1}`);
      path.setAttribute("stroke", getComputedStyle(bin).backgroundColor);
      path.setAttribute("stroke-width", String(1 + 8 * Number(w)));
      path.setAttribute("fill", "none");
      const dim = model.get("dimmed");
      path.setAttribute("class", dim >= 0 && Number(e) !== dim ? "moe-line moe-dim" : "moe-line");
      path.dataset.experts = e;
      path.dataset.w = w;
      svg.append(path);
    }
  }
  function selectedFlowTok() {
    const g = model.get("selected");
    return g < 0 ? null : visiblePanel()?.querySelector(`.moe-ftok[data-g="${g}"]`);
  }
  function pinnedTok() {
    return pinned === null ? null : visiblePanel()?.querySelector(`.moe-tok[data-g="${pinned}"]`);
  }
  function cardTok() {  // the span whose card is open: pinned, else hovered
    const g = pinned === null ? hovered : pinned;
    return g === null ? null : visiblePanel()?.querySelector(`.moe-tok[data-g="${g}"]`);
  }

  let timer = null, sent = null, composing = false;
  function send() {
    sent = box.value;
    pinned = hovered = null;  // a new text: the spans are new
    card.hidden = true;
    model.set("text", box.value);
    model.set("dimmed", -1);  // a new text starts unfiltered
    model.save_changes();
  }
  function schedule() {
    clearTimeout(timer);
    el.classList.add("moe-pending");
    timer = setTimeout(send, model.get("debounce_ms"));
  }
  box.addEventListener("input", (ev) => { if (!(composing || ev.isComposing)) schedule(); });
  box.addEventListener("compositionstart", () => { composing = true; clearTimeout(timer); });
  box.addEventListener("compositionend", () => { composing = false; schedule(); });
  model.on("change:text", () => {
    const t = model.get("text");
    if (t !== box.value && t !== sent) box.value = t;  // set from Python (a preset), not an echo
  });

  function visiblePanel() { return body.querySelector(":scope > .moe-panel:not([hidden])"); }
  function fresh(panel) { return !!panel && panel.dataset.state === String(model.get("state")); }
  function settle() {  // a tab not drawn for this state yet: Python renders it on the tab change, the page waits faded
    el.classList.toggle("moe-pending", !!model.get("html") && !fresh(visiblePanel()));
    el.dataset.state = String(model.get("state"));
  }
  function reveal() {
    // bring the selected span into view inside its panel's scroll boxes (never the page itself)
    const target = visiblePanel()?.querySelector(".moe-sel");
    if (!target) return;
    for (let sc = target.parentElement; sc && sc !== body; sc = sc.parentElement) {
      const cs = getComputedStyle(sc);
      if (!/(auto|scroll)/.test(cs.overflow + cs.overflowX + cs.overflowY)) continue;
      const b = sc.getBoundingClientRect(), t = target.getBoundingClientRect();
      if (t.top < b.top || t.bottom > b.bottom) sc.scrollTop += t.top - b.top - (b.height - t.height) / 2;
      if (t.left < b.left || t.right > b.right) sc.scrollLeft += t.left - b.left - (b.width - t.width) / 2;
    }
  }
  // DOM writes first (applyTab, applyMarks), then one pass that reads the layout (place): on a page as large
  // as a JupyterLab notebook, every write-then-read costs a whole layout
  function applyTab() {
    const tab = model.get("tab");
    for (const p of body.querySelectorAll(":scope > .moe-panel")) p.hidden = p.dataset.tab !== tab;
    settle();
    for (const b of bar.children) {
      const on = b.dataset.tab === tab;
      b.classList.toggle("moe-tab-on", on);
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    }
  }
  function place() {  // the selection into view, the open card beside its span, the flow lines
    reveal();
    const t = cardTok();
    if (t) showCard(t); else card.hidden = true;
    drawFlow(selectedFlowTok());
  }
  function show() { applyTab(); place(); }
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
  function filterChip() {
    const e = model.get("dimmed");
    chipBox.replaceChildren();
    if (e < 0) return;
    const b = document.createElement("button");
    b.className = "moe-filter-chip";
    b.textContent = `showing expert ${e} only \u00d7`;
    b.setAttribute("aria-label", `showing expert ${e} only; press to show every expert`);
    b.addEventListener("click", () => { model.set("dimmed", -1); model.save_changes(); });
    chipBox.append(b);
  }
  function applyMarks() {
    const g = model.get("selected"), e = String(model.get("dimmed"));
    if (pinned !== null && pinned !== g) pinned = null;  // a card is pinned with its span's selection
    for (const n of body.querySelectorAll(".moe-sel")) n.classList.remove("moe-sel");
    if (g >= 0) for (const n of body.querySelectorAll(`[data-g="${g}"]`)) n.classList.add("moe-sel");
    for (const n of body.querySelectorAll("[data-experts]"))
      n.classList.toggle("moe-dim", e !== "-1" && !n.dataset.experts.split(" ").includes(e));
    for (const n of body.querySelectorAll(".moe-legend-item"))
      n.classList.toggle("moe-dim", e !== "-1" && n.dataset.expert !== e);
    for (const n of body.querySelectorAll(".moe-tok, .moe-ftok"))
      n.tabIndex = Number(n.dataset.g) === Math.max(g, 0) ? 0 : -1;
    filterChip();
  }
  function mark() { applyMarks(); place(); }
  function prepare(panel) {  // keyboard and screen-reader roles of a newly drawn panel
    for (const n of panel.querySelectorAll(".moe-tok")) {
      const c = n.querySelector(".moe-card");
      n.setAttribute("role", "button");
      if (c) n.setAttribute("aria-label", c.textContent);
    }
    for (const n of panel.querySelectorAll(".moe-legend-item")) { n.tabIndex = 0; n.setAttribute("role", "button"); }
    for (const n of panel.querySelectorAll("tr[data-g]")) n.tabIndex = -1;
  }
  function paint() {
    const start = performance.now();
    const focused = body.contains(document.activeElement);  // keep keyboard focus across a re-render
    const html = model.get("html");
    if (!html) body.replaceChildren();  // a message (empty text, an error) instead of the views
    const incoming = document.createElement("template");
    incoming.innerHTML = html;
    for (const panel of Array.from(incoming.content.children)) {
      const old = Array.from(body.children).find((p) => p.dataset.tab === panel.dataset.tab);
      if (old && old.dataset.state === panel.dataset.state) continue;  // already drawn for this state
      prepare(panel);
      if (old) old.replaceWith(panel); else body.append(panel);
    }
    applyTab();
    applyMarks();
    place();
    if (focused) {
      const g = Math.max(model.get("selected"), 0);
      visiblePanel()?.querySelector(`.moe-tok[data-g="${g}"]`)?.focus({ preventScroll: true });
    }
    el.dataset.renders = String(Number(el.dataset.renders || 0) + 1);
    el.dataset.paintMs = (performance.now() - start).toFixed(1);  // the DOM swap's share of an update (for tests)
  }
  function select(g) {
    model.set("selected", g);
    model.save_changes();
  }
  bar.addEventListener("click", (ev) => {
    const b = ev.target.closest(".moe-tab");
    if (!b) return;
    model.set("tab", b.dataset.tab);
    model.save_changes();
  });
  bar.addEventListener("keydown", (ev) => {  // the WAI-ARIA tabs pattern: arrows move between tabs
    const names = model.get("tabs"), i = names.indexOf(model.get("tab"));
    const j = ev.key === "ArrowRight" ? i + 1 : ev.key === "ArrowLeft" ? i - 1 : null;
    if (j === null) return;
    ev.preventDefault();
    model.set("tab", names[(j + names.length) % names.length]);
    model.save_changes();
    setTimeout(() => bar.querySelector(".moe-tab-on")?.focus(), 0);
  });
  function activate(target) {
    const item = target.closest(".moe-legend-item");
    if (item) {
      const e = Number(item.dataset.expert);
      model.set("dimmed", model.get("dimmed") === e ? -1 : e);
      model.save_changes();
      return true;
    }
    const tok = target.closest("[data-g]");
    if (tok) {
      const g = Number(tok.dataset.g);
      const off = model.get("selected") === g;
      pinned = off || !tok.classList.contains("moe-tok") ? null : g;  // a tap pins the card on touch screens
      if (pinned === null) hovered = null;  // a tap that unpins closes the card (a touch leaves no hover behind)
      if (pinned !== null) showCard(tok); else card.hidden = true;
      select(off ? -1 : g);
      return true;
    }
    return false;
  }
  body.addEventListener("click", (ev) => { activate(ev.target); });
  body.addEventListener("keydown", (ev) => {
    if ((ev.key === "Enter" || ev.key === " ") && activate(ev.target)) { ev.preventDefault(); return; }
    if (ev.key === "Escape") { pinned = null; card.hidden = true; return; }
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[ev.key];
    if (!step || !ev.target.closest("[data-g]")) return;
    ev.preventDefault();
    const toks = visiblePanel()?.querySelectorAll(".moe-tok") || [];
    const n = toks.length || body.querySelectorAll(".moe-tok").length;
    if (!n) return;
    const now = model.get("selected"), from = now >= 0 ? now : Number(ev.target.closest("[data-g]").dataset.g);
    const g = Math.min(n - 1, Math.max(0, from + step));
    pinned = g;
    select(g);
    setTimeout(() => { const t = pinnedTok(); if (t) { t.focus(); showCard(t); } }, 0);
  });
  // a touch screen has no hover: the mouse events a browser makes up after a tap must not open or keep a card
  let touching = false;
  body.addEventListener("pointerdown", (ev) => { touching = ev.pointerType === "touch"; });
  body.addEventListener("pointermove", (ev) => { if (ev.pointerType === "mouse") touching = false; });
  body.addEventListener("mouseover", (ev) => {
    const tok = ev.target.closest(".moe-tok");
    if (tok && touching) return;
    if (tok) { hovered = Number(tok.dataset.g); showCard(tok); } else hideCard();
    const ftok = ev.target.closest(".moe-ftok");
    if (ftok) drawFlow(ftok);
    else if (ev.target.closest(".moe-flow")) drawFlow(selectedFlowTok());
  });
  body.addEventListener("mouseleave", () => { hideCard(); drawFlow(selectedFlowTok()); });
  body.addEventListener("focusin", (ev) => {  // keyboard focus only: a tap or click focuses too, and pins instead
    const tok = ev.target.closest(".moe-tok");
    if (tok && tok.matches(":focus-visible")) showCard(tok);
  });
  const onScroll = () => {
    const t = cardTok();
    if (t) showCard(t); else card.hidden = true;
    drawFlow(selectedFlowTok());
  };
  window.addEventListener("scroll", onScroll, true);
  model.on("msg:custom", (msg) => {  // a tab that is not open, sent while the kernel idles: kept hidden
    if (!msg || typeof msg.panel !== "string") return;
    const incoming = document.createElement("template");
    incoming.innerHTML = msg.panel;
    const panel = incoming.content.firstElementChild;
    if (!panel || panel.dataset.state !== String(model.get("state")) || panel.dataset.tab === model.get("tab")) return;
    const old = Array.from(body.children).find((p) => p.dataset.tab === panel.dataset.tab);
    if (old && old.dataset.state === panel.dataset.state) return;
    prepare(panel);
    panel.hidden = true;
    if (old) old.replaceWith(panel); else body.append(panel);
  });
  model.on("change:html", paint);
  model.on("change:revision", settle);  // also when the views did not change
  model.on("change:status", () => { status.innerHTML = model.get("status"); });
  model.on("change:tab", show);
  model.on("change:tabs", tabs);
  model.on("change:selected", mark);
  model.on("change:dimmed", mark);
  status.innerHTML = model.get("status");
  tabs();
  paint();
  return () => {
    clearTimeout(timer);
    window.removeEventListener("scroll", onScroll, true);
    card.remove();
  };
}
export default { render };

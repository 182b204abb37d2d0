/* The routing explorer of notebook 06 without a kernel: the same views, drawn in the browser from
 * precomputed router probabilities (window.MOE_ROUTING, written by moe_edu.course.site_explorer).
 *
 * Every <div class="moe-site-explorer" data-source="MOE_ROUTING"> on the page becomes an explorer:
 * preset, layer and k controls; a tokens view (each token's top-k experts as colour bands as tall as
 * their renormalised weights), a flow view (tokens on top, the experts as bins below, lines for the
 * hovered or selected token) and a heatmap (tokens x experts). One hover card per explorer, fixed to
 * the viewport (no ancestor's overflow clips it; flipped above the token near the bottom), pinned by
 * a click, a tap or the keyboard. Tokens are reachable by keyboard (roving tabindex: arrows move the
 * selection, Enter/Space select, Escape closes the card). Top-k uses the exported order of the experts
 * (the model's own ranking), weights are renormalised from the exported probabilities.
 * With data-live on the div, a text box routes the reader's own text in the page: on first use it
 * loads site_explorer_live.js and site_explorer_model.js (from data-live's prefix, else from beside
 * this file) and adds "your text" to the presets.
 * Vanilla JS, nothing fetched but those files, no build step; token text only ever goes through textContent.
 */
(function () {
  "use strict";
  const SVGNS = "http://www.w3.org/2000/svg";
  const FORMAT = 1;
  const BAR_PX = 20; // a probability of 1 in the card's router bars (render.py's BAR_PX)
  const MANY_TOKENS = 3; // a character of this many byte tokens gets a strip, not slivers (render.py)
  const TABS = ["tokens", "flow", "heatmap"];
  const SHADE = "49,130,189"; // heatmap blue (views.py)
  let COUNT = 0;
  // where this file was loaded from: the live JS and the model file lie beside it (whatever the page's depth)
  const HERE = document.currentScript && document.currentScript.src ? new URL(".", document.currentScript.src).href : "";

  // ------------------------------------------------------------------ data checks
  class DataError extends Error {}
  function need(ok, path, what) { if (!ok) throw new DataError(`${path} ${what}`); }
  const isInt = Number.isInteger;
  const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);

  function checkArray(x, path, n, what) {
    need(Array.isArray(x), path, `must be an array${what ? " of " + what : ""}`);
    if (n !== undefined) need(x.length === n, path, `has ${x.length} entries, expected ${n}${what ? " (" + what + ")" : ""}`);
    return x;
  }

  function checkPreset(p, path, L, E) {
    need(isObj(p), path, "must be an object");
    need(typeof p.name === "string" && p.name.length > 0, `${path}.name`, "must be a non-empty string");
    const ids = checkArray(p.token_ids, `${path}.token_ids`);
    const T = ids.length;
    need(T > 0, `${path}.token_ids`, "is empty");
    ids.forEach((id, t) => need(isInt(id) && id >= 0, `${path}.token_ids[${t}]`, "must be a non-negative int"));
    const spans = checkArray(p.spans, `${path}.spans`);
    need(spans.length > 0, `${path}.spans`, "is empty");
    let next = 0;
    spans.forEach((s, g) => {
      const sp = `${path}.spans[${g}]`;
      need(isObj(s), sp, "must be an object");
      need(typeof s.label === "string", `${sp}.label`, "must be a string");
      need(isInt(s.start) && s.start === next, `${sp}.start`, `must be ${next} (spans cover the tokens in order)`);
      need(isInt(s.stop) && s.stop > s.start && s.stop <= T, `${sp}.stop`, `must be an int in (${s.start}, ${T}]`);
      need(typeof s.newline === "boolean", `${sp}.newline`, "must be true or false");
      need(Array.isArray(s.join) && s.join.length === 2 && s.join.every((b) => typeof b === "boolean"),
        `${sp}.join`, "must be two booleans");
      next = s.stop;
    });
    need(next === T, `${path}.spans`, `cover ${next} tokens, expected ${T}`);
    checkArray(p.rtl_runs, `${path}.rtl_runs`).forEach((r, i) =>
      need(Array.isArray(r) && r.length === 2 && isInt(r[0]) && isInt(r[1]) && 0 <= r[0] && r[0] < r[1] && r[1] <= spans.length,
        `${path}.rtl_runs[${i}]`, "must be [start, stop] span indices"));
    for (const field of ["probs", "order"]) {
      checkArray(p[field], `${path}.${field}`, L, "num_layers").forEach((layer, l) =>
        checkArray(layer, `${path}.${field}[${l}]`, T, "tokens").forEach((row, t) => {
          const rp = `${path}.${field}[${l}][${t}]`;
          checkArray(row, rp, E, "num_experts");
          if (field === "probs") {
            row.forEach((x, e) => need(typeof x === "number" && isFinite(x) && x >= 0 && x <= 1, `${rp}[${e}]`, "must be a probability in [0, 1]"));
          } else {
            need(row.every(isInt) && new Set(row).size === E && row.every((e) => e >= 0 && e < E), rp,
              `must be the experts 0..${E - 1} in some order`);
          }
        }));
    }
  }

  /** The data, checked field by field; a DataError names the first bad field. */
  function checkData(d, source) {
    need(isObj(d), `window.${source || "MOE_ROUTING"}`, "is missing: site_explorer_data.js did not load");
    need(d.format === FORMAT, "format", `must be ${FORMAT} (got ${JSON.stringify(d.format)}): rebuild the data with this version`);
    const m = d.model;
    need(isObj(m), "model", "must be an object");
    need(isInt(m.num_layers) && m.num_layers >= 1, "model.num_layers", "must be a positive int");
    need(isInt(m.num_experts) && m.num_experts >= 1 && m.num_experts <= 64, "model.num_experts", "must be an int in [1, 64]");
    need(isInt(m.top_k) && m.top_k >= 1 && m.top_k <= m.num_experts, "model.top_k", `must be an int in [1, ${m.num_experts}]`);
    checkArray(d.colours, "colours", m.num_experts, "num_experts").forEach((c, e) =>
      need(typeof c === "string" && /^#[0-9a-fA-F]{6}$/.test(c), `colours[${e}]`, "must be a colour like #5fa8e8"));
    const presets = checkArray(d.presets, "presets");
    need(presets.length > 0, "presets", "is empty");
    presets.forEach((p, i) => checkPreset(p, `presets[${i}]`, m.num_layers, m.num_experts));
    return d;
  }

  // ------------------------------------------------------------------ small helpers
  function h(tag, props, ...children) {
    const n = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") n.className = value;
      else if (key === "text") n.textContent = value;
      else if (key === "style") Object.assign(n.style, value);
      else if (key === "data") for (const [k, v] of Object.entries(value)) n.dataset[k] = String(v);
      else n.setAttribute(key, String(value));
    }
    for (const c of children) if (c !== null && c !== undefined) n.append(c); // strings become text nodes
    return n;
  }
  const fmt2 = (x) => x.toFixed(2);

  /** The top-k of one token at one layer: experts in the model's order, renormalised weights, mass kept. */
  function route(probs, order, k) {
    const experts = order.slice(0, k);
    const kept = experts.reduce((s, e) => s + probs[e], 0);
    const weights = experts.map((e) => (kept > 0 ? probs[e] / kept : 1 / k));
    return { experts, weights, kept };
  }

  /** One token's experts as hard colour stops (render.py's _stack): heights from the weights, whole percent. */
  function stack(col, colours, direction) {
    const stops = [];
    let top = 0;
    col.forEach(([e, w], i) => {
      const c = colours[e];
      if (i === col.length - 1) stops.push(i ? `${c} 0` : c);
      else {
        top = Math.min(100, top + Math.round(100 * w));
        stops.push(`${c} ${i ? "0 " : ""}${top}%`);
      }
    });
    if (stops.length === 1) stops.push(stops[0]);
    return `linear-gradient(${direction || ""}${stops.join(",")})`;
  }

  /** A span's background layers (render.py's bands): one column per token, or a strip for many-token characters. */
  function bands(columns, colours) {
    const n = columns.length;
    if (n >= MANY_TOKENS) {
      const strip = stack(columns.map((col) => [col[0][0], 1 / n]), colours, "to right,");
      return [`${strip} left bottom/100% 4px no-repeat`, stack(columns[0], colours)];
    }
    return columns.map((col, c) => {
      const grad = stack(col, colours);
      return n > 1 ? `${grad} ${Math.round((100 * c) / (n - 1))}% 0/${(100 / n + 0.5).toFixed(1)}% 100% no-repeat` : grad;
    });
  }

  // ------------------------------------------------------------------ one explorer
  function Explorer(root, data) {
    const id = `moe-site-${++COUNT}`;
    const L = data.model.num_layers, E = data.model.num_experts, colours = data.colours;
    const want = root.dataset.preset;
    const presets = [...data.presets]; // this explorer's own list: a typed text is added to it
    const state = {
      preset: Math.max(0, presets.findIndex((p) => p.name === want)),
      layer: 0, k: data.model.top_k, tab: "tokens", selected: -1, dimmed: -1, pinned: -1, hover: -1,
    };
    let routes = null; // per token of the current preset: route() at the current layer and k

    // controls
    const presetBox = h("select", { class: "moe-site-preset", "aria-label": "preset text" },
      ...presets.map((p, i) => h("option", { value: i, text: p.name })));
    const layerBox = h("select", { class: "moe-site-layer", "aria-label": "layer" },
      ...Array.from({ length: L }, (_, l) => h("option", { value: l, text: `layer ${l}` })));
    const kBox = h("input", { type: "range", class: "moe-site-k", min: 1, max: E, step: 1, "aria-label": "k, experts per token" });
    const kOut = h("output", { class: "moe-site-k-value", "aria-hidden": "true" });
    const controls = h("div", { class: "moe-site-controls" },
      h("label", {}, "preset ", presetBox), h("label", {}, "layer ", layerBox), h("label", {}, "k ", kBox, kOut));
    const status = h("p", { class: "moe-status", role: "status" });
    const bar = h("div", { class: "moe-tabs", role: "tablist", "aria-label": "views" },
      ...TABS.map((t) => h("button", { type: "button", class: "moe-tab", role: "tab", id: `${id}-tab-${t}`, "aria-controls": `${id}-panel-${t}`, data: { tab: t }, text: t })));
    const body = h("div", { class: "moe-body" });
    const panels = {};
    for (const t of TABS) {
      panels[t] = h("div", { class: "moe-panel", role: "tabpanel", id: `${id}-panel-${t}`, "aria-labelledby": `${id}-tab-${t}`, data: { tab: t } });
      body.append(panels[t]);
    }
    const card = h("div", { class: "moe-float-card moe-site-card", role: "tooltip", id: `${id}-card` });
    card.hidden = true;
    const theme = root.dataset.theme;
    if (theme) card.dataset.theme = theme;
    root.classList.add("moe-explorer-view");
    root.id = root.id || id;
    root.moeExplorer = { presets, state }; // for tests and the console: this explorer's texts and state
    const live = root.dataset.live !== undefined ? liveBox() : null;
    root.replaceChildren(controls, ...(live ? [live] : []), status, bar, body);
    document.body.append(card);
    presetBox.value = String(state.preset);
    kBox.value = String(state.k);

    const preset = () => presets[state.preset];
    const spanOf = () => { const s = []; preset().spans.forEach((sp, g) => { for (let t = sp.start; t < sp.stop; t++) s.push(g); }); return s; };
    const tokenLabel = (sp, i) => { const n = sp.stop - sp.start, x = sp.label.replace(/ /g, "\u2423"); return n > 1 ? `${x} ${i + 1}/${n}` : x; };

    // ---------------------------------------------------------------- the hover card
    function cardLines(g) {
      const p = preset(), sp = p.spans[g], n = sp.stop - sp.start, lines = [];
      for (let t = sp.start; t < sp.stop; t++) {
        const r = routes[t], probs = p.probs[state.layer][t];
        lines.push({ t, part: n > 1 ? ` (${t - sp.start + 1}/${n})` : "", id: p.token_ids[t], r, probs });
      }
      return { head: `${sp.label} · layer ${state.layer}, top-${state.k}`, lines };
    }
    function ariaText(g) {
      const c = cardLines(g);
      return c.head + ": " + c.lines.map((x) => `token ${x.t}${x.part}, id ${x.id}: keeps ${fmt2(x.r.kept)} → ` +
        x.r.experts.map((e, i) => `e${e} ${fmt2(x.r.weights[i])}`).join(", ")).join("; ");
    }
    function fillCard(g) {
      const c = cardLines(g);
      const parts = [h("b", { text: c.head.split(" · ")[0] }), ` · layer ${state.layer}, top-${state.k}`];
      for (const x of c.lines) {
        const bars = h("span", { class: "moe-bars" }, ...x.probs.map((pr, e) => h("i", {
          class: x.r.experts.includes(e) ? "moe-bar moe-k" : "moe-bar", title: `e${e} ${fmt2(pr)}`,
          data: { expert: e, p: pr.toFixed(4) },
          style: { height: `${Math.max(1, Math.round(BAR_PX * Math.round(pr * 100) / 100))}px`, background: colours[e] },
        })));
        const chips = x.r.experts.map((e, i) => h("span", {
          class: `moe-chip moe-e${e}`, data: { expert: e, experts: e, w: x.r.weights[i].toFixed(4) },
          style: { background: colours[e] }, text: `e${e} ${fmt2(x.r.weights[i])}`,
        }));
        parts.push(h("br"), h("span", { class: "moe-card-line", data: { t: x.t } },
          `token ${x.t}${x.part}, id ${x.id}: `, bars,
          h("span", { class: "moe-kept", data: { kept: x.r.kept.toFixed(4) }, text: `keeps ${fmt2(x.r.kept)} → ` }), ...chips));
      }
      card.replaceChildren(...parts);
    }
    function showCard(tok) {
      if (!tok || !tok.isConnected) { card.hidden = true; return; }
      fillCard(Number(tok.dataset.g));
      card.hidden = false;
      placeFloatCard(card, tok);  // float_card.js, written before this file
    }
    const pinnedTok = () => (state.pinned < 0 ? null : panels.tokens.querySelector(`.moe-tok[data-g="${state.pinned}"]`));
    function hideCard() { if (state.pinned < 0 || panels.tokens.hidden) card.hidden = true; else showCard(pinnedTok()); }

    // ---------------------------------------------------------------- the views
    function tokensView() {
      const p = preset(), parts = [];
      const first = Array(E).fill(0), inTop = Array(E).fill(0);
      routes.forEach((r) => { first[r.experts[0]] += 1; r.experts.forEach((e) => { inTop[e] += 1; }); });
      p.spans.forEach((sp, g) => {
        const toks = []; for (let t = sp.start; t < sp.stop; t++) toks.push(t);
        const cols = toks.map((t) => routes[t].experts.map((e, i) => [e, Math.round(routes[t].weights[i] * 100) / 100]));
        const chosen = [...new Set(toks.flatMap((t) => routes[t].experts))].sort((a, b) => a - b);
        const label = (sp.join[0] ? "\u200d" : "") + sp.label + (sp.join[1] ? "\u200d" : "");
        const tok = h("span", {
          class: "moe-tok", id: `${id}-L${state.layer}-g${g}`, role: "button", tabindex: -1,
          data: { g, t: toks.join(" "), expert: routes[sp.start].experts[0], experts: chosen.join(" ") },
          "aria-label": ariaText(g), "aria-describedby": `${id}-card`,
        }, h("bdi", { text: label }));
        tok.style.background = bands(cols, colours).join(",");
        tok.style.backgroundColor = colours[routes[sp.start].experts[0]];
        if (sp.join[1]) tok.style.borderRightWidth = "0";
        parts.push(sp.newline ? [tok, h("br")] : [tok]);
      });
      for (const [a, b] of [...p.rtl_runs].reverse()) {
        const run = h("bdi", { dir: "rtl", class: "moe-rtl" }, ...parts.slice(a, b).flat());
        parts.splice(a, b - a, [run]);
      }
      const items = colours.map((c, e) => h("span", {
        class: "moe-legend-item", role: "button", tabindex: 0, data: { expert: e }, style: { background: c },
        "aria-pressed": String(state.dimmed === e), text: `expert ${e} · ${first[e]}${state.k > 1 ? " / " + inTop[e] : ""}`,
      }));
      const meaning = state.k > 1 ? `numbers = tokens with this expert first / among their top-${state.k} at layer ${state.layer}. `
        : `number = tokens whose first choice is this expert at layer ${state.layer}. `;
      const note = h("p", { class: "moe-note", text: meaning + `Colour bands: each token's top-${state.k} experts stacked top to bottom, ` +
        "each as tall as its renormalised weight; a character made of several byte tokens has one column per token. " +
        "Hover a token for its router's probabilities; click it (or focus it and press Enter) to select it; click an expert to dim the others." });
      return h("div", { class: "moe-routing", id: `${id}-tokens-L${state.layer}`, data: { layer: state.layer, k: state.k } },
        h("div", { class: "moe-text", dir: "ltr" }, ...parts.flat()),
        h("div", { class: "moe-legend" }, ...items, note));
    }

    function lines() {
      const svg = document.createElementNS(SVGNS, "svg");
      svg.setAttribute("class", "moe-flow-lines");
      svg.setAttribute("aria-hidden", "true");
      return svg;
    }
    function flowView() {
      const p = preset(), span = spanOf();
      const toks = routes.map((r, t) => {
        const sp = p.spans[span[t]];
        return h("span", {
          class: "moe-ftok", tabindex: -1, role: "button",
          data: { g: span[t], t, experts: r.experts.join(" "), route: r.experts.map((e, i) => `${e}:${fmt2(r.weights[i])}`).join(" ") },
          style: { borderBottomColor: colours[r.experts[0]] }, text: tokenLabel(sp, t - sp.start),
        });
      });
      const bins = colours.map((c, e) => h("div", { class: "moe-bin", data: { e, experts: e }, style: { background: c } },
        `e${e}`, h("span", { class: "moe-bin-w" })));
      const note = h("p", { class: "moe-note", text: `Layer ${state.layer}, k = ${state.k}: hover a token (top) to see its ${state.k} chosen ` +
        "experts (bottom); a line's width is the expert's renormalised weight (1 px + 8 px x weight); a token's underline is its " +
        "first choice. Click a token to select it." });
      return h("div", { class: "moe-flow", id: `${id}-flow-L${state.layer}`, data: { layer: state.layer, k: state.k } },
        note, h("div", { class: "moe-flow-tokens" }, ...toks), h("div", { class: "moe-flow-gap" }),
        lines(), h("div", { class: "moe-flow-bins" }, ...bins));
    }

    function heatmapView() {
      const p = preset(), span = spanOf(), probs = p.probs[state.layer];
      const top = Math.max(...probs.flat());
      const head = h("tr", {}, h("th", {}), ...colours.map((_, e) => h("th", { class: "moe-c", data: { experts: e }, text: `e${e}` })));
      const rows = probs.map((row, t) => {
        const sp = p.spans[span[t]];
        return h("tr", { data: { g: span[t], t }, tabindex: -1 },
          h("th", { class: "moe-c moe-row-label", text: tokenLabel(sp, t - sp.start) }),
          ...row.map((pr, e) => h("td", {
            class: routes[t].experts.includes(e) ? "moe-c moe-chosen" : "moe-c", data: { p: pr.toFixed(4), experts: e },
            style: { background: `rgba(${SHADE},${((0.8 * pr) / top).toFixed(2)})` }, text: fmt2(pr),
          })));
      });
      const note = h("p", { class: "moe-note", text: `Router probabilities at layer ${state.layer}: softmax over all ${E} experts, one row ` +
        `per token. Shade: 0 to ${fmt2(top)} (the layer's largest). Outlined: the top-${state.k} chosen. Click a row to select its token.` });
      return h("div", { class: "moe-heatmap", id: `${id}-heatmap-L${state.layer}`, data: { layer: state.layer, k: state.k } },
        note, h("div", { class: "moe-scroll" }, h("table", {}, head, ...rows)));
    }

    // ---------------------------------------------------------------- flow lines and bins
    function drawFlow(g) {
      const flow = panels.flow.querySelector(".moe-flow");
      if (!flow) return;
      const svg = flow.querySelector("svg"), tok = g < 0 ? null : flow.querySelector(`.moe-ftok[data-g="${g}"]`);
      svg.replaceChildren();
      flow.classList.toggle("moe-flow-on", !!tok);
      for (const b of flow.querySelectorAll(".moe-bin")) {
        b.classList.remove("moe-bin-on"); b.style.boxShadow = ""; b.querySelector(".moe-bin-w").textContent = "";
      }
      if (!tok || panels.flow.hidden) return;
      const box = flow.getBoundingClientRect(), t = tok.getBoundingClientRect();
      const area = flow.querySelector(".moe-flow-tokens").getBoundingClientRect();
      const x0 = t.left + t.width / 2 - box.left, y0 = Math.min(t.bottom, area.bottom) - box.top;
      for (const pair of tok.dataset.route.split(" ")) {
        const [e, w] = pair.split(":");
        const bin = flow.querySelector(`.moe-bin[data-e="${e}"]`);
        bin.classList.add("moe-bin-on");
        bin.style.boxShadow = `0 0 0 ${1 + Math.round(4 * Number(w))}px var(--moe-fg)`;
        bin.querySelector(".moe-bin-w").textContent = ` ${w}`;
        const b = bin.getBoundingClientRect();
        const x1 = b.left + b.width / 2 - box.left, y1 = b.top - box.top, ym = (y0 + y1) / 2;
        const path = document.createElementNS(SVGNS, "path");
        path.setAttribute("d", `M${x0} ${y0} C${x0} ${ym} ${x1} ${ym} ${x1} ${y1}`);
        path.setAttribute("stroke", colours[Number(e)]);
        path.setAttribute("stroke-width", String(1 + 8 * Number(w)));
        path.setAttribute("fill", "none");
        path.setAttribute("class", state.dimmed >= 0 && Number(e) !== state.dimmed ? "moe-line moe-dim" : "moe-line");
        path.dataset.experts = e;
        path.dataset.w = w;
        svg.append(path);
      }
    }
    const flowTarget = () => (state.hover >= 0 ? state.hover : state.selected);

    // ---------------------------------------------------------------- state -> page
    function mark() {
      const g = state.selected, e = String(state.dimmed);
      for (const n of body.querySelectorAll(".moe-sel")) n.classList.remove("moe-sel");
      if (g >= 0) for (const n of body.querySelectorAll(`[data-g="${g}"]`)) n.classList.add("moe-sel");
      for (const n of body.querySelectorAll("[data-experts]"))
        n.classList.toggle("moe-dim", e !== "-1" && !n.dataset.experts.split(" ").includes(e));
      for (const n of body.querySelectorAll(".moe-legend-item")) {
        n.classList.toggle("moe-dim", e !== "-1" && n.dataset.expert !== e);
        n.setAttribute("aria-pressed", String(n.dataset.expert === e));
      }
      for (const n of body.querySelectorAll(".moe-tok, .moe-ftok, tr[data-g]")) n.tabIndex = -1;
      for (const panel of Object.values(panels)) { // roving tabindex: one focusable token per view
        const home = panel.querySelector(`.moe-tok[data-g="${Math.max(g, 0)}"], .moe-ftok[data-g="${Math.max(g, 0)}"], tr[data-g="${Math.max(g, 0)}"]`);
        if (home) home.tabIndex = 0;
      }
      for (const n of body.querySelectorAll(".moe-tok, .moe-ftok")) n.setAttribute("aria-pressed", String(n.classList.contains("moe-sel")));
      drawFlow(flowTarget());
      hideCard();
    }
    function show() {
      for (const t of TABS) panels[t].hidden = t !== state.tab;
      for (const b of bar.children) {
        const on = b.dataset.tab === state.tab;
        b.classList.toggle("moe-tab-on", on);
        b.setAttribute("aria-selected", String(on));
        b.tabIndex = on ? 0 : -1;
      }
      root.dataset.tab = state.tab;
      drawFlow(flowTarget());
      hideCard();
    }
    function render() {
      const p = preset();
      routes = p.probs[state.layer].map((probs, t) => route(probs, p.order[state.layer][t], state.k));
      const focused = body.contains(document.activeElement) ? state.tab : null;
      panels.tokens.replaceChildren(tokensView());
      panels.flow.replaceChildren(flowView());
      panels.heatmap.replaceChildren(heatmapView());
      kOut.textContent = String(state.k);
      kBox.setAttribute("aria-valuetext", `k = ${state.k}`);
      status.textContent = `${p.token_ids.length} tokens · layer ${state.layer} of ${L} · k = ${state.k} of ${E} experts` +
        (p.truncated ? " · the text was cut to the model's context" : "") +
        (p.live ? " · routed just now, in this page, by the course's tiny trained model in JavaScript"
          : " · routing precomputed from the course's tiny trained model") + ": no Python runs behind this page";
      show();
      mark();
      if (focused) focusHome();
      root.dataset.renders = String(Number(root.dataset.renders || 0) + 1);
    }
    function focusHome() {
      const g = Math.max(state.selected, 0);
      panels[state.tab].querySelector(`.moe-tok[data-g="${g}"], .moe-ftok[data-g="${g}"], tr[data-g="${g}"]`)?.focus({ preventScroll: false });
    }

    // ---------------------------------------------------------------- your own text, routed in the page
    function liveBox() {
      const box = h("textarea", { class: "moe-input", rows: 2, "aria-label": "your own text to route",
        placeholder: "Type your own text (any language, emoji, code), then press \u201croute my text\u201d (or Ctrl+Enter)" });
      const go = h("button", { type: "button", class: "moe-site-route", text: "route my text" });
      const note = h("span", { class: "moe-site-live-status", role: "status" });
      const run = () => routeText(box.value, go, note);
      go.addEventListener("click", run);
      box.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); } });
      return h("div", { class: "moe-site-live" }, box, h("div", { class: "moe-site-live-row" }, go, note));
    }
    function loadScript(src) {
      return new Promise((resolve, reject) => {
        const s = h("script", { src });
        s.onload = resolve;
        s.onerror = () => reject(new Error(`could not load ${src}`));
        document.head.append(s);
      });
    }
    let loading = null;
    function loadModel() { // on first use only: the model file is a few MB
      const base = root.dataset.live || HERE;
      loading = loading || (async () => {
        if (!window.MoeSiteLive) await loadScript(`${base}site_explorer_live.js`);
        if (!window.MOE_MODEL) await loadScript(`${base}site_explorer_model.js`);
      })();
      return loading.catch((err) => { loading = null; throw err; });
    }
    async function routeText(text, go, note) {
      note.classList.remove("moe-message");
      if (!text.trim()) { note.classList.add("moe-message"); note.textContent = "Type some text first."; return; }
      go.disabled = true;
      note.textContent = window.MOE_MODEL ? "routing\u2026" : "loading the model (a few MB, once)\u2026";
      try {
        await loadModel();
        await new Promise((r) => setTimeout(r, 0)); // let the note paint before the forward pass
        const t0 = performance.now();
        const mine = window.MoeSiteLive.preset(window.MOE_MODEL, text, "your text");
        const ms = performance.now() - t0;
        delete mine.raw_probs;
        checkPreset(mine, "your text", L, E);
        let i = presets.findIndex((p) => p.live);
        mine.live = true;
        if (i < 0) { i = presets.length; presets.push(mine); presetBox.append(h("option", { value: i, text: "your text" })); }
        else presets[i] = mine;
        Object.assign(state, { preset: i, selected: -1, dimmed: -1, pinned: -1, hover: -1 });
        presetBox.value = String(i);
        render();
        note.textContent = `routed ${mine.token_ids.length} tokens in ${Math.round(ms)} ms, in this page` +
          (mine.truncated ? ` (cut to the model's ${window.MOE_MODEL.config.context} tokens)` : "");
        root.dataset.liveRoutes = String(Number(root.dataset.liveRoutes || 0) + 1);
      } catch (err) {
        note.classList.add("moe-message");
        note.textContent = `Could not route this text: ${(err && err.message) || err}`;
      } finally {
        go.disabled = false;
      }
    }

    // ---------------------------------------------------------------- events
    presetBox.addEventListener("change", () => {
      Object.assign(state, { preset: Number(presetBox.value), selected: -1, dimmed: -1, pinned: -1, hover: -1 });
      render();
    });
    layerBox.addEventListener("change", () => { state.layer = Number(layerBox.value); render(); });
    kBox.addEventListener("input", () => { state.k = Number(kBox.value); render(); });
    bar.addEventListener("click", (ev) => {
      const b = ev.target.closest(".moe-tab");
      if (b) { state.tab = b.dataset.tab; show(); }
    });
    bar.addEventListener("keydown", (ev) => { // the WAI-ARIA tabs pattern
      const i = TABS.indexOf(state.tab), j = { ArrowRight: i + 1, ArrowLeft: i - 1 }[ev.key];
      if (j === undefined) return;
      ev.preventDefault();
      state.tab = TABS[(j + TABS.length) % TABS.length];
      show();
      bar.querySelector(".moe-tab-on").focus();
    });
    function select(g, pin) {
      state.selected = g;
      state.pinned = g >= 0 && pin ? g : -1;
      mark();
    }
    function activate(target) {
      const item = target.closest(".moe-legend-item");
      if (item) {
        const e = Number(item.dataset.expert);
        state.dimmed = state.dimmed === e ? -1 : e;
        mark();
        return true;
      }
      const tok = target.closest("[data-g]");
      if (!tok) return false;
      const g = Number(tok.dataset.g), off = state.selected === g;
      select(off ? -1 : g, tok.classList.contains("moe-tok")); // a tap pins the card on touch screens
      return true;
    }
    body.addEventListener("click", (ev) => { activate(ev.target); });
    body.addEventListener("keydown", (ev) => {
      if ((ev.key === "Enter" || ev.key === " ") && activate(ev.target)) { ev.preventDefault(); return; }
      if (ev.key === "Escape") {
        if (state.pinned >= 0 || !card.hidden) { state.pinned = -1; card.hidden = true; }
        else if (state.selected >= 0) select(-1, false);
        return;
      }
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -Infinity, End: Infinity }[ev.key];
      const from = ev.target.closest("[data-g]");
      if (!step || !from) return;
      ev.preventDefault();
      const n = preset().spans.length, now = state.selected >= 0 ? state.selected : Number(from.dataset.g);
      const g = Math.min(n - 1, Math.max(0, now + step));
      select(g, state.tab === "tokens");
      focusHome();
      if (state.tab === "tokens") showCard(pinnedTok());
    });
    body.addEventListener("mouseover", (ev) => {
      const tok = ev.target.closest(".moe-tok");
      if (tok) showCard(tok); else hideCard();
      const ftok = ev.target.closest(".moe-ftok");
      const g = ftok ? Number(ftok.dataset.g) : -1;
      if (g !== state.hover) { state.hover = g; drawFlow(flowTarget()); }
    });
    body.addEventListener("mouseleave", () => { state.hover = -1; hideCard(); drawFlow(flowTarget()); });
    body.addEventListener("focusin", (ev) => { const tok = ev.target.closest(".moe-tok"); if (tok) showCard(tok); });
    body.addEventListener("focusout", (ev) => {
      if (!body.contains(ev.relatedTarget)) { if (state.pinned < 0) card.hidden = true; }
    });
    document.addEventListener("click", (ev) => { // a tap outside the explorer closes a pinned card (touch screens)
      if (state.pinned >= 0 && !root.contains(ev.target)) { state.pinned = -1; card.hidden = true; }
    });
    const onMove = () => { hideCard(); drawFlow(flowTarget()); };
    window.addEventListener("scroll", onMove, true);
    window.addEventListener("resize", onMove);
    render();
  }

  // ------------------------------------------------------------------ start
  function message(root, text) {
    root.classList.add("moe-site-failed");
    root.replaceChildren(h("p", { class: "moe-message", role: "alert", text: `The routing explorer cannot start: ${text}` }));
  }
  function start(root, late) {
    if (root.dataset.started) return;
    const source = root.dataset.source || "MOE_ROUTING";
    const raw = /^[A-Za-z_$][\w$]*$/.test(source) ? window[source] : undefined;
    if (raw === undefined && !late && document.readyState !== "complete") { // the data script may be async
      window.addEventListener("load", () => start(root, true), { once: true });
      return;
    }
    root.dataset.started = "true";
    try {
      Explorer(root, checkData(raw, source));
      root.dataset.ready = "true";
    } catch (err) {
      if (!(err instanceof DataError)) console.warn("moe-site-explorer:", err);
      const what = raw === undefined ? "no routing data" : "invalid routing data";
      message(root, err instanceof DataError ? `${what}: ${err.message}` : String((err && err.message) || err));
    }
  }
  function startAll() { for (const root of document.querySelectorAll(".moe-site-explorer")) start(root); }
  window.MoeSiteExplorer = { start, startAll, checkData };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll);
  else startAll();
})();

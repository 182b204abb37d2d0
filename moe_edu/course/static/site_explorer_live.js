/* Route any typed text in the page: the shipped tiny Mixtral's tokenizer and routers in plain JS.
 *
 * window.MOE_MODEL (written by moe_edu.course.site_model) holds the config, the byte-level BPE
 * tokenizer (vocab, merges; digits split one by one, GPT-2's pre-tokenising regex) and, as base64
 * fp32, every tensor the routers depend on. `MoeSiteLive.preset(model, text)` returns the same
 * fields as one exported preset of site_explorer_data.js (token ids, spans of whole characters with
 * their labels, right-to-left runs, per layer the router probabilities and the experts by rank),
 * so site_explorer.js draws it with the same views. The forward pass is moe_edu's: RMSNorm, RoPE
 * (rotate-half), grouped-query causal attention, softmax over the experts in fp32, top-k, renormalise,
 * SwiGLU experts. Tests compare it with torch (router logits within 1e-5, the same top-k).
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ the model file, checked once
  const cache = new WeakMap();
  function prepare(m) {
    if (cache.has(m)) return cache.get(m);
    const bad = (what) => { throw new Error(`invalid model data: ${what}`); };
    if (!m || m.format !== 1) bad("format must be 1 (did site_explorer_model.js load?)");
    const c = m.config;
    for (const f of ["hidden_size", "intermediate_size", "num_layers", "num_experts", "top_k", "heads", "kv_heads", "head_dim", "context", "vocab_size"])
      if (!Number.isInteger(c[f]) || c[f] < 1) bad(`config.${f} must be a positive int`);
    const bin = atob(m.weights), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    if (bytes.length !== 4 * m.num_floats) bad(`weights hold ${bytes.length} bytes, expected ${4 * m.num_floats}`);
    const all = new Float32Array(bytes.buffer); // little-endian, as every browser's typed arrays
    const W = (name, shape) => {
      const t = m.tensors[name];
      if (!t) bad(`tensors.${name} is missing`);
      if (JSON.stringify(t.shape) !== JSON.stringify(shape)) bad(`tensors.${name} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`);
      return all.subarray(t.offset, t.offset + shape.reduce((a, b) => a * b, 1));
    };
    const H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, D = c.head_dim;
    const layers = [];
    for (let l = 0; l < c.num_layers; l++) {
      const p = `model.layers.${l}.`;
      layers.push({
        norm1: W(p + "input_layernorm.weight", [H]), norm2: W(p + "post_attention_layernorm.weight", [H]),
        q: W(p + "self_attn.q_proj.weight", [c.heads * D, H]), k: W(p + "self_attn.k_proj.weight", [c.kv_heads * D, H]),
        v: W(p + "self_attn.v_proj.weight", [c.kv_heads * D, H]), o: W(p + "self_attn.o_proj.weight", [H, c.heads * D]),
        gate: W(p + "mlp.gate.weight", [E, H]),
        gateUp: l < c.num_layers - 1 ? W(p + "mlp.experts.gate_up_proj", [E, 2 * I, H]) : null,
        down: l < c.num_layers - 1 ? W(p + "mlp.experts.down_proj", [E, H, I]) : null,
      });
    }
    const vocab = m.tokenizer.vocab, idToken = [];
    for (const [piece, id] of Object.entries(vocab)) idToken[id] = piece;
    const ranks = new Map(m.tokenizer.merges.map((pair, i) => [pair, i]));
    const ready = { c, embed: W("model.embed_tokens.weight", [c.vocab_size, H]), layers, vocab, idToken, ranks };
    cache.set(m, ready);
    return ready;
  }

  // ------------------------------------------------------------------ byte-level BPE
  const BYTE_CHAR = (() => { // GPT-2's alphabet: a printable character for every byte
    const printable = new Set();
    for (const [a, b] of [[33, 126], [161, 172], [174, 255]]) for (let x = a; x <= b; x++) printable.add(x);
    const out = []; let extra = 0;
    for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable.has(b) ? b : 256 + extra++));
    return out;
  })();
  const CHAR_BYTE = new Map(BYTE_CHAR.map((ch, b) => [ch, b]));
  const WORDS = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  const utf8 = new TextEncoder();

  function bpe(word, ranks) {
    let parts = Array.from(word);
    for (;;) {
      let best = -1, rank = Infinity;
      for (let i = 0; i < parts.length - 1; i++) {
        const r = ranks.get(parts[i] + " " + parts[i + 1]);
        if (r !== undefined && r < rank) { rank = r; best = i; }
      }
      if (best < 0) return parts;
      parts = [...parts.slice(0, best), parts[best] + parts[best + 1], ...parts.slice(best + 2)];
    }
  }
  /** Token ids of `text`, as tokenizers' Digits(individual) + ByteLevel + BPE give them. */
  function encode(model, text) {
    const { vocab, ranks } = prepare(model), ids = [];
    for (const piece of text.split(/(\p{N})/u)) {
      if (!piece) continue;
      for (const word of piece.match(WORDS) || []) {
        for (const p of bpe(Array.from(utf8.encode(word), (b) => BYTE_CHAR[b]).join(""), ranks)) {
          if (vocab[p] === undefined) throw new Error(`the tokenizer has no token for ${JSON.stringify(p)}`);
          ids.push(vocab[p]);
        }
      }
    }
    return ids;
  }
  const tokenBytes = (ready, id) => Array.from(ready.idToken[id] || "", (ch) => CHAR_BYTE.get(ch) ?? 0);

  // ------------------------------------------------------------------ spans of whole characters (text_spans.py)
  const strict = new TextDecoder("utf-8", { fatal: true });
  function decodes(bytes) { try { return strict.decode(new Uint8Array(bytes)); } catch { return null; } }
  function joinsPrevious(prev, next) {
    if (!prev || !next) return false;
    const c = String.fromCodePoint(next.codePointAt(0)), last = Array.from(prev).pop();
    if (last === "\u200d" || c === "\u200d" || /^[\p{Mn}\p{Me}\p{Mc}\ufe00-\ufe0f]/u.test(c)) return true;
    if (/^[\u{1f3fb}-\u{1f3ff}\u{e0020}-\u{e007f}]/u.test(c)) return true;
    const flags = Array.from(prev).filter((ch) => /[\u{1f1e6}-\u{1f1ff}]/u.test(ch));
    return /[\u{1f1e6}-\u{1f1ff}]/u.test(c) && flags.length % 2 === 1 && last === flags[flags.length - 1];
  }
  function spansOf(ready, ids) {
    const spans = [];
    for (let i = 0; i < ids.length;) {
      let piece = null, j = i + 1;
      for (; j <= Math.min(i + 8, ids.length); j++) {
        piece = decodes(ids.slice(i, j).flatMap((id) => tokenBytes(ready, id)));
        if (piece) break;
      }
      if (!piece) { spans.push({ text: "\ufffd", start: i, stop: i + 1 }); i += 1; continue; }
      const prev = spans[spans.length - 1];
      if (prev && joinsPrevious(prev.text, piece)) { prev.text += piece; prev.stop = j; } else spans.push({ text: piece, start: i, stop: j });
      i = j;
    }
    return spans;
  }

  // ------------------------------------------------------------------ labels, joins, right-to-left runs (render.py)
  const NAMED = { "\u202a": "LRE", "\u202b": "RLE", "\u202c": "PDF", "\u202d": "LRO", "\u202e": "RLO", "\u2066": "LRI",
    "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI", "\u200e": "LRM", "\u200f": "RLM", "\u061c": "ALM", "\u200b": "ZWSP",
    "\u2060": "WJ", "\ufeff": "BOM", "\u00ad": "SHY", "\u2028": "LS", "\u2029": "PS", "\ufffd": "?", "\u200c": "ZWNJ", "\u200d": "ZWJ" };
  const SIMPLE = { "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d" };
  function label(text) {
    if (text === "") return "\u2205";
    const chars = Array.from(text), alone = chars.every((ch) => ch === "\u200c" || ch === "\u200d");
    return chars.map((ch) => {
      if (SIMPLE[ch]) return SIMPLE[ch];
      if ((ch === "\u200c" || ch === "\u200d") && !alone) return ch;
      if (NAMED[ch]) return `\u2039${NAMED[ch]}\u203a`;
      if (/[\p{Cc}\p{Cs}\p{Co}\p{Cn}]/u.test(ch) || (/\p{Cf}/u.test(ch) && !/[\u{e0020}-\u{e007f}]/u.test(ch)))
        return `\u2039U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}\u203a`;
      return ch;
    }).join("");
  }
  const RTL_SCRIPT = /[\p{Script=Hebrew}\p{Script=Arabic}\p{Script=Syriac}\p{Script=Thaana}\p{Script=Nko}]/u;
  const joining = (ch) => /\p{L}/u.test(ch) && /[\p{Script=Arabic}\p{Script=Syriac}\p{Script=Thaana}\p{Script=Nko}]/u.test(ch);
  function direction(text) {
    const chars = Array.from(text);
    if (chars.some((ch) => /\p{L}/u.test(ch) && !RTL_SCRIPT.test(ch))) return "L";
    return chars.some((ch) => /\p{L}/u.test(ch) && RTL_SCRIPT.test(ch)) ? "R" : "N";
  }
  function rtlRuns(texts) {
    const dirs = texts.map(direction), runs = [];
    for (let g = 0; g < dirs.length;) {
      if (dirs[g] !== "R") { g += 1; continue; }
      let stop = g + 1;
      for (let h = g + 1; h < dirs.length; h++) { if (dirs[h] === "L") break; if (dirs[h] === "R") stop = h + 1; }
      runs.push([g, stop]);
      g = stop;
    }
    return runs;
  }

  // ------------------------------------------------------------------ the forward pass, up to the last router
  function linear(x, T, w, out, inn) { // x (T, inn) · w (out, inn)^T -> (T, out)
    const y = new Float32Array(T * out);
    for (let t = 0; t < T; t++) for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0, xo = t * inn, wo = o * inn; i < inn; i++) s += x[xo + i] * w[wo + i];
      y[t * out + o] = s;
    }
    return y;
  }
  function rmsNorm(x, T, H, w, eps) {
    const y = new Float32Array(T * H);
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let i = 0; i < H; i++) s += x[t * H + i] ** 2;
      const r = 1 / Math.sqrt(s / H + eps);
      for (let i = 0; i < H; i++) y[t * H + i] = w[i] * Math.fround(x[t * H + i] * r);
    }
    return y;
  }
  function rope(x, T, heads, D, theta) {
    const r = new Float32Array(D);
    for (let t = 0; t < T; t++) for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D;
      for (let i = 0; i < D / 2; i++) {
        const f = Math.fround(t * Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / D))));
        const c = Math.cos(f), s = Math.sin(f), a = x[o + i], b = x[o + i + D / 2];
        r[i] = a * c - b * s;
        r[i + D / 2] = b * c + a * s;
      }
      x.set(r, o);
    }
  }
  function softmax(z) {
    const mx = Math.max(...z), ex = z.map((v) => Math.exp(v - mx)), s = ex.reduce((a, b) => a + b, 0);
    return ex.map((v) => v / s);
  }
  const rank = (p) => [...p.keys()].sort((a, b) => p[b] - p[a] || a - b);

  /** Per layer and token: the router's probabilities (E) and the experts by rank. */
  function route(model, ids) {
    const { c, embed, layers } = prepare(model);
    const T = ids.length, H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, D = c.head_dim;
    const NH = c.heads, NKV = c.kv_heads, group = NH / NKV, window = c.sliding_window || Infinity;
    const x = new Float32Array(T * H), probs = [], order = [];
    ids.forEach((id, t) => x.set(embed.subarray(id * H, id * H + H), t * H));
    const scores = new Float64Array(T);
    layers.forEach((L, l) => {
      const h = rmsNorm(x, T, H, L.norm1, c.rms_norm_eps);
      const q = linear(h, T, L.q, NH * D, H), k = linear(h, T, L.k, NKV * D, H), v = linear(h, T, L.v, NKV * D, H);
      rope(q, T, NH, D, c.rope_theta);
      rope(k, T, NKV, D, c.rope_theta);
      const att = new Float32Array(T * NH * D), scale = 1 / Math.sqrt(D);
      for (let hd = 0; hd < NH; hd++) {
        const g = Math.floor(hd / group);
        for (let t = 0; t < T; t++) {
          const from = Math.max(0, t - window + 1);
          let mx = -Infinity;
          for (let s = from; s <= t; s++) {
            let d = 0;
            for (let i = 0; i < D; i++) d += q[(t * NH + hd) * D + i] * k[(s * NKV + g) * D + i];
            scores[s] = d * scale;
            if (scores[s] > mx) mx = scores[s];
          }
          let z = 0;
          for (let s = from; s <= t; s++) { scores[s] = Math.exp(scores[s] - mx); z += scores[s]; }
          for (let i = 0; i < D; i++) {
            let a = 0;
            for (let s = from; s <= t; s++) a += scores[s] * v[(s * NKV + g) * D + i];
            att[(t * NH + hd) * D + i] = a / z;
          }
        }
      }
      const o = linear(att, T, L.o, H, NH * D);
      for (let i = 0; i < x.length; i++) x[i] += o[i];
      const m = rmsNorm(x, T, H, L.norm2, c.rms_norm_eps);
      const logits = linear(m, T, L.gate, E, H);
      const P = [], R = [];
      for (let t = 0; t < T; t++) { const p = softmax(Array.from(logits.subarray(t * E, t * E + E))); P.push(p); R.push(rank(p)); }
      probs.push(P);
      order.push(R);
      if (!L.gateUp) return; // the last layer: no router reads its experts' output
      const hid = new Float32Array(I);
      for (let t = 0; t < T; t++) {
        const chosen = R[t].slice(0, c.top_k), kept = chosen.reduce((s, e) => s + P[t][e], 0);
        for (const e of chosen) {
          for (let i = 0; i < I; i++) {
            let a = 0, b = 0;
            const ga = (e * 2 * I + i) * H, ub = (e * 2 * I + I + i) * H;
            for (let j = 0; j < H; j++) { a += L.gateUp[ga + j] * m[t * H + j]; b += L.gateUp[ub + j] * m[t * H + j]; }
            hid[i] = Math.fround(a / (1 + Math.exp(-a))) * b;
          }
          const w = P[t][e] / kept;
          for (let j = 0; j < H; j++) {
            let s = 0;
            for (let i = 0, d0 = (e * H + j) * I; i < I; i++) s += L.down[d0 + i] * hid[i];
            x[t * H + j] += w * s;
          }
        }
      }
    });
    return { probs, order };
  }

  /** A typed text as one preset of the routing data (site_explorer.js draws it like the exported ones). */
  function preset(model, text, name) {
    const ready = prepare(model);
    const all = encode(model, text);
    if (!all.length) throw new Error("the text has no tokens: type something to route");
    const ids = all.slice(0, ready.c.context);
    const spans = spansOf(ready, ids), texts = spans.map((s) => s.text);
    const joins = texts.map((t, g) => [
      g > 0 && !!texts[g - 1] && !!t && joining(Array.from(texts[g - 1]).pop()) && joining(Array.from(t)[0]),
      g < texts.length - 1 && !!t && !!texts[g + 1] && joining(Array.from(t).pop()) && joining(Array.from(texts[g + 1])[0]),
    ]);
    const { probs, order } = route(model, ids);
    return {
      name: name || "your text", text, token_ids: ids, truncated: all.length > ids.length,
      spans: spans.map((s, g) => ({ label: label(s.text), start: s.start, stop: s.stop, newline: s.text.includes("\n"), join: joins[g] })),
      rtl_runs: rtlRuns(texts),
      probs: probs.map((layer) => layer.map((row) => row.map((p) => Math.round(p * 1e4) / 1e4))),
      order, raw_probs: probs,
    };
  }

  window.MoeSiteLive = { encode, route, preset, label, prepare };
})();

"""Browser checks of the kernel-less routing explorer (moe_edu.course.site_explorer), reusable on any page.

`watch_page(page)` (call it before `page.goto`) records console errors, page errors, every request and
websocket; `check_site_explorer(page)` drives the explorer on the loaded page for every preset: k changes
the bands and the card's renormalised weights, the hover card is whole (its four corners are its own under
`document.elementFromPoint`, also for a token on the last line, flipped above it near the window's bottom),
keyboard-only selection, the flow view's lines for the selected token, the heatmap's selected row, a layer
change re-ranks from the exported order. tests/test_site_explorer.py serves a standalone page; the book's
test can call the same functions on its explorer page. Playwright's sync API; plain asserts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STEP_MS = 15_000

# true when the card is shown and each of its corners (1 px inside) is the card or inside it
CARD_ON_TOP = """(card) => {
  if (!card || card.hidden) return false;
  const r = card.getBoundingClientRect();
  if (r.width < 10 || r.height < 10) return false;
  const old = card.style.pointerEvents;
  card.style.pointerEvents = 'auto';  // hit testing skips pointer-events: none; painting (what a person sees) does not
  const ok = [[r.left + 1, r.top + 1], [r.right - 2, r.top + 1], [r.left + 1, r.bottom - 2], [r.right - 2, r.bottom - 2]]
    .every(([x, y]) => { const e = document.elementFromPoint(x, y); return !!e && (e === card || card.contains(e)); });
  card.style.pointerEvents = old;
  return ok;
}"""

# per token span of the tokens view: [span index, colour stops in its background, tokens in the span, first expert]
TOKENS = """(root) => Array.from(root.querySelectorAll('.moe-panel[data-tab="tokens"] .moe-tok')).map(s => [
  Number(s.dataset.g), (s.style.backgroundImage.match(/rgb\\(/g) || []).length, s.dataset.t.split(' ').length,
  Number(s.dataset.expert), s.style.backgroundImage])"""

# the data's first choice of each span's first token at a layer, read from the explorer's own presets
FIRST_CHOICES = """([root, layer]) => {
  const p = root.moeExplorer.presets[Number(root.querySelector('.moe-site-preset').value)];
  return p.spans.map(s => p.order[layer][s.start][0]);
}"""


def bands(k: int) -> int:
    """Colour stops the browser reports for k stacked bands: `linear-gradient(a 60%, b 0 90%, c 0)` reads back
    with the middle colours twice (one stop per position), and k = 1 is drawn as `linear-gradient(a, a)`."""
    return 2 if k == 1 else 2 * k - 2


def span_stops(k: int, n: int) -> int:
    """Colour stops of a span of n byte tokens: n columns of k bands, or from 3 tokens on (MANY_TOKENS) the first
    token's k bands plus a bottom strip of n segments (read back like n bands)."""
    return bands(k) * n if n < 3 else bands(k) + bands(n)


@dataclass
class PageWatch:
    """What a page did: console errors, uncaught errors, requested URLs, websockets opened."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)

    def problems(self, allowed_hosts: tuple[str, ...] = LOCAL_HOSTS) -> list[str]:
        """Everything that breaks the explorer's promises: errors, a request off `allowed_hosts`, a kernel
        or websocket contacted (no Python runs behind the page)."""
        out = [f"console error: {m}" for m in self.console_errors] + [f"page error: {m}" for m in self.page_errors]
        for url in self.requests:
            parsed = urlparse(url)
            if parsed.scheme in ("data", "blob", "about"):
                continue
            if parsed.scheme == "file":
                pass
            elif parsed.hostname not in allowed_hosts:
                out.append(f"request left localhost: {url}")
            if "/api/kernels" in url or "/api/sessions" in url:
                out.append(f"a kernel was contacted: {url}")
        out += [f"websocket opened: {url}" for url in self.websockets]
        return out


def watch_page(page) -> PageWatch:
    """Start recording `page`'s console errors, page errors, requests and websockets (before `goto`)."""
    watch = PageWatch()
    page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: watch.page_errors.append(str(err)))
    page.on("request", lambda r: watch.requests.append(r.url))
    page.on("websocket", lambda ws: watch.websockets.append(ws.url))
    return watch


def _card(page, root):
    """The explorer's hover card (the tokens name it in aria-describedby)."""
    card_id = root.locator(".moe-tok").first.get_attribute("aria-describedby")
    return page.locator(f"#{card_id}")


def _shoot(page, locator, artifacts: Path | None, name: str) -> None:
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(artifacts / name))


def _set_k(page, root, k: int) -> None:
    """Move the k slider with the keyboard (Home, then ArrowRight k - 1 times), as a reader would."""
    slider = root.locator(".moe-site-k")
    slider.focus()
    slider.press("Home")
    for _ in range(k - 1):
        slider.press("ArrowRight")
    assert slider.input_value() == str(k), f"the k slider reads {slider.input_value()}, expected {k}"


def _card_weights(page, root, tok) -> list[str]:
    tok.hover()
    card = _card(page, root)
    card.wait_for(state="visible", timeout=STEP_MS)
    assert page.evaluate(CARD_ON_TOP, card.element_handle()), "the hover card is clipped or covered"
    return card.locator(".moe-chip").all_inner_texts()


def check_preset(page, root, index: int, artifacts: Path | None = None, prefix: str = "site-explorer") -> dict:
    """All checks for preset `index` of the explorer `root` (a locator); returns what it measured."""
    root.locator(".moe-site-preset").select_option(index=index)
    name = root.locator(".moe-site-preset option").nth(index).inner_text()
    root.locator(".moe-tab", has_text="tokens").click()
    top_k = int(root.locator(".moe-site-k").input_value())
    assert top_k == 2, f"{name}: the explorer starts at the model's k = 2, got {top_k}"
    card = _card(page, root)
    handle = root.element_handle()

    # 1. the model's k: every token's stops match k = 2 and the first choice is the exported order's first
    toks = page.evaluate(TOKENS, handle)
    assert len(toks) > 5, f"{name}: the tokens view shows {len(toks)} spans"
    assert all(stops == span_stops(2, n) for _, stops, n, _, _ in toks), f"{name}: k = 2 bands"
    assert [e for *_, e, _ in toks] == page.evaluate(FIRST_CHOICES, [handle, 0]), f"{name}: layer 0 first choices"
    first = root.locator(".moe-panel[data-tab='tokens'] .moe-tok").first
    weights2 = _card_weights(page, root, first)
    assert len(weights2) == 2 * int(first.get_attribute("data-t").count(" ") + 1), weights2

    # 2. k = 3: the bands and the card's renormalised weights change
    page.mouse.move(0, 0)
    _set_k(page, root, 3)
    after = page.evaluate(TOKENS, handle)
    assert all(stops == span_stops(3, n) for _, stops, n, _, _ in after), f"{name}: k = 3 bands"
    assert all(a[4] != b[4] for a, b in zip(toks, after, strict=True)), f"{name}: every span's bands change with k"
    first = root.locator(".moe-panel[data-tab='tokens'] .moe-tok").first
    weights3 = _card_weights(page, root, first)
    assert len(weights3) == 3 * len(weights2) // 2 and weights3[:2] != weights2[:2], (weights2, weights3)
    if index == 0:
        _shoot(page, root, artifacts, f"{prefix}-k3.png")

    # 3. the card of a token on the last line, at the window's bottom (the window shortened to end just below
    # it, wherever the page put the explorer): whole, and flipped above the token instead of cut off
    last = root.locator(".moe-panel[data-tab='tokens'] .moe-tok").last
    last.scroll_into_view_if_needed()
    viewport = page.viewport_size
    tok_box = last.bounding_box()
    if tok_box["y"] > 150:  # room above the token for its card
        page.set_viewport_size({"width": viewport["width"], "height": int(tok_box["y"] + tok_box["height"] + 6)})
    try:
        last.hover()
        card.wait_for(state="visible", timeout=STEP_MS)
        assert page.evaluate(CARD_ON_TOP, card.element_handle()), f"{name}: the last token's card is clipped"
        tok_box, card_box = last.bounding_box(), card.bounding_box()
        room_below = page.evaluate("() => innerHeight") - (tok_box["y"] + tok_box["height"])
        flipped = room_below < card_box["height"] + 8  # no room below the token: the card must open above it
        if flipped:
            assert card_box["y"] + card_box["height"] <= tok_box["y"] + 1, f"{name}: the card flips above the token"
        else:
            assert card_box["y"] >= tok_box["y"] + tok_box["height"] - 1, f"{name}: the card opens below the token"
        if index == 0:
            _shoot(page, card, artifacts, f"{prefix}-card-last-line.png")
            if artifacts is not None:
                page.screenshot(path=str(artifacts / f"{prefix}-card-flipped.png"))
    finally:
        page.set_viewport_size(viewport)
    lines = card.locator(".moe-card-line").count()
    assert lines == last.get_attribute("data-t").count(" ") + 1, f"{name}: one card line per byte token"
    page.mouse.move(0, 0)
    _set_k(page, root, 2)

    # 4. keyboard only: Tab from the tabs into the text, arrows select, Enter toggles, Escape closes the card
    root.locator(".moe-tab.moe-tab-on").focus()
    page.keyboard.press("Tab")
    active = "() => [document.activeElement.className, document.activeElement.dataset.g]"
    assert page.evaluate(active) == ["moe-tok", "0"], f"{name}: Tab reaches the first token: {page.evaluate(active)}"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => document.activeElement.dataset.g === '2' && document.activeElement.classList.contains('moe-sel')",
        timeout=STEP_MS,
    )
    assert page.evaluate(CARD_ON_TOP, card.element_handle()), f"{name}: the keyboard-selected token's card is whole"
    label = page.evaluate("() => document.activeElement.getAttribute('aria-label')")
    assert label and "layer 0" in label and "token" in label and "keeps" in label, label
    if index == 0:
        _shoot(page, root, artifacts, f"{prefix}-keyboard.png")
    page.keyboard.press("Enter")
    assert root.locator(".moe-panel[data-tab='tokens'] .moe-sel").count() == 0, f"{name}: Enter unselects"
    page.keyboard.press("Enter")
    assert root.locator(".moe-panel[data-tab='tokens'] .moe-tok.moe-sel").get_attribute("data-g") == "2"
    page.keyboard.press("Escape")
    assert card.is_hidden(), f"{name}: Escape closes the card"

    # 5. flow: the selected token's k lines to its experts' bins, lit with their weights
    root.locator(".moe-tab", has_text="flow").click()
    page.mouse.move(0, 0)
    flow = root.locator(".moe-panel[data-tab='flow'] .moe-flow")
    flow.locator(".moe-flow-bins").scroll_into_view_if_needed()
    sel = flow.locator(".moe-ftok.moe-sel").first
    route = sel.get_attribute("data-route").split(" ")
    paths = flow.locator("path.moe-line")
    assert paths.count() == len(route) == 2, f"{name}: flow lines {paths.count()} for route {route}"
    lit = flow.locator(".moe-bin.moe-bin-on").all()
    assert sorted(b.get_attribute("data-e") for b in lit) == sorted(r.split(":")[0] for r in route)
    assert all(page.evaluate(CARD_ON_TOP, b.element_handle()) for b in lit), f"{name}: the lit bins are on screen"
    if index == 0:
        _shoot(page, root, artifacts, f"{prefix}-flow.png")

    # 6. heatmap: the selected token's row marked; k outlined cells per row
    root.locator(".moe-tab", has_text="heatmap").click()
    rows = root.locator(".moe-panel[data-tab='heatmap'] tr.moe-sel")
    assert rows.count() >= 1 and all(r.get_attribute("data-g") == "2" for r in rows.all())
    chosen = root.locator(".moe-panel[data-tab='heatmap'] td.moe-chosen").count()
    assert chosen == 2 * sum(n for _, _, n, _, _ in toks), f"{name}: {chosen} outlined cells"
    if index == 0:
        _shoot(page, root, artifacts, f"{prefix}-heatmap.png")

    # 7. another layer: first choices from that layer's exported order
    root.locator(".moe-tab", has_text="tokens").click()
    root.locator(".moe-site-layer").select_option(index=2)
    now = page.evaluate(TOKENS, handle)
    assert [e for *_, e, _ in now] == page.evaluate(FIRST_CHOICES, [handle, 2]), f"{name}: layer 2 first choices"
    root.locator(".moe-site-layer").select_option(index=0)
    return {"preset": name, "spans": len(toks), "tokens": sum(n for _, _, n, _, _ in toks), "card_flipped": flipped}


def check_site_explorer(
    page, selector: str = ".moe-site-explorer", artifacts: Path | None = None, prefix: str = "site-explorer"
) -> list[dict]:
    """Drive the first explorer matching `selector` on the loaded `page` through every preset (see
    `check_preset`); screenshots go to `artifacts` as `{prefix}-*.png`. Returns one summary per preset."""
    root = page.locator(selector).first
    page.wait_for_function(
        "(sel) => { const r = document.querySelector(sel); return !!r && (r.dataset.ready === 'true' || "
        "!!r.querySelector('.moe-message')); }",
        arg=selector,
        timeout=STEP_MS,
    )
    message = root.locator(".moe-message")
    assert message.count() == 0, f"the explorer shows an error: {message.first.inner_text()}"
    root.scroll_into_view_if_needed()
    _shoot(page, root, artifacts, f"{prefix}-tokens.png")
    root.locator(".moe-tok").nth(2).hover()
    _card(page, root).wait_for(state="visible", timeout=STEP_MS)
    if artifacts is not None:
        page.screenshot(path=str(artifacts / f"{prefix}-card.png"))
    names = root.locator(".moe-site-preset option").count()
    assert names >= 1
    return [check_preset(page, root, i, artifacts, prefix) for i in range(names)]


def route_typed_text(page, text: str, selector: str = ".moe-site-explorer", *, keyboard: bool = False) -> dict:
    """Type `text` into the explorer's own-text box and route it (the button, or Ctrl+Enter with `keyboard`);
    waits for the page's forward pass and returns the preset it made (token ids, spans, probs, order)."""
    root = page.locator(selector).first
    before = root.get_attribute("data-live-routes") or "0"
    box = root.locator(".moe-site-live .moe-input")
    box.fill(text)
    if keyboard:
        box.press("Control+Enter")
    else:
        root.locator(".moe-site-route").click()
    page.wait_for_function(
        "([sel, before]) => { const r = document.querySelector(sel); return (r.dataset.liveRoutes || '0') !== before"
        " || !!r.querySelector('.moe-site-live-status.moe-message'); }",
        arg=[selector, before],
        timeout=60_000,
    )
    message = root.locator(".moe-site-live-status.moe-message")
    assert message.count() == 0, f"the page could not route the text: {message.first.inner_text()}"
    assert root.locator(".moe-site-preset option:checked").inner_text() == "your text"
    return root.evaluate("r => r.moeExplorer.presets[Number(r.querySelector('.moe-site-preset').value)]")

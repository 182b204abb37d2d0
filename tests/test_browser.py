"""Real-browser tests of the routing explorer: JupyterLab (notebook 06) and the Voila app, on loopback,
in headless Chromium driven by Playwright.

JupyterLab: the saved notebook shows a static picture before anything runs; after run-all, typing
Chinese text shows its characters with the model's routing, moving k changes the tokens, hovering
opens a card with the weights, clicking a token highlights it in the heatmap and the all-layers grid,
clicking a legend entry dims the other experts. Voila: `make explorer`'s page, typing changes the
colouring. Skipped when Chromium (/usr/bin/chromium) or playwright is missing, unless `CI` is set:
then it fails. Screenshots go to `test-artifacts/` (listed in the module's ARTIFACT_NOTES).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from site_explorer_checks import CARD_ON_TOP as CARD_IS_WHOLE  # (card) => its four corners are its own

import moe_edu
from moe_edu.course.widgets.explorer import PRESET_TEXTS
from moe_edu.course.widgets.render import MANY_TOKENS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_routing_explorer.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APP = ROOT / "notebooks" / "apps" / "routing_explorer_app.ipynb"
# `make explorer`'s allowlist, read from the Makefile so the test runs what the command runs
VOILA_EXTENSIONS = next(
    line.split(":=", 1)[1].strip().replace("'", "")
    for line in (ROOT / "Makefile").read_text().splitlines()
    if line.startswith("VOILA_EXTENSIONS")
)
HARD_LIMIT_S = 300  # each whole test; each browser step has its own, shorter timeout
STEP_MS = 90_000
NEW_TEXT = "專家混合模型 🙂 café — שלום"  # Chinese, emoji, accents, a dash, Hebrew: several bytes per character
NEW_LAYER = 2
APP_TEXT = "def add(a, b):\n    return a + b"
ARABIC = "مرحبا بالعالم"
LONG_TEXT = "The router sends each token to two experts, and the experts add their answers. " * 20
LAST_LINE_TEXT = "專家混合模型在台灣很熱門 👍🏽"  # the course's showcase cards: 專 (several byte tokens), 👍🏽 (8)
ARTIFACT_NOTES = {
    "explorer_static.png": "notebook 06 opened without running: the static picture and the note to run the cell",
    "explorer_typed.png": "after typing Chinese/emoji/accented/Hebrew text at layer 2: whole characters, k bands",
    "explorer_hover.png": "the hover card of the first character: its 3 byte tokens' experts and weights",
    "explorer_k3.png": "the same text after moving k up from 2 (one arrow key): k colour bands per token",
    "explorer_heatmap.png": "heatmap tab after clicking a token: its rows highlighted",
    "explorer_all_layers.png": "all-layers tab: the selected token's column and its per-layer path",
    "explorer_flow.png": "flow tab with one expert highlighted from the legend, the others dimmed",
    "explorer_card_last_line.png": "the whole hover card of 👍🏽, a many-token character on the widget's last line",
    "explorer_keyboard.png": "after selecting by keyboard only (arrows, Enter)",
    "explorer_dark.png": "the explorer in JupyterLab's dark theme (captions and labels readable)",
    "explorer_by_layer.png": "the by-layer tab (Fig. 8 small multiples) with the k bands and no repeat outlines",
    "explorer_flow_256.png": "the flow tab at 256 tokens: a late token selected, its lines to its experts, all on screen",
    "voila_card_last_line.png": "the Voila page: the whole hover card of 👍🏽 on the widget's last line",
    "explorer_card_k4.png": "專's card, still open after moving k from 3 to 4 (its bars animated to the new top-k)",
    "voila_card_k3.png": "the Voila page: 專's card, still open after moving k from 2 to 3",
    "explorer_touch_pinned.png": "a tapped token's card pinned (touch screen), every corner on top",
    "voila_touch_pinned.png": "the Voila page: a tapped token's card pinned",
    "explorer_card_flipped.png": "👍🏽's card with the token at the bottom of the window: opened above it, whole",
    "voila_card_flipped.png": "the Voila page: 👍🏽's card at the bottom of the window, opened above it",
    "voila_keyboard.png": "the Voila page after selecting by keyboard only",
    "voila_flow_256.png": "the Voila page: the flow tab at 256 tokens, a late token and its experts on screen",
    "voila_by_layer.png": "the Voila page: the by-layer tab",
    "voila_phone.png": "the Voila page at 400 px: controls and tabs wrap, none off the screen",
    "voila_dark.png": "the Voila page in its dark theme (?theme=dark): captions and labels readable",
    "voila_app.png": "make explorer's Voila page after typing code: the explorer alone",
}


def require_browser():
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright; do not run `playwright install`)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + " — CI is set, so this is a failure, not a skip")
        pytest.skip(reason)


def expected_routing(text: str, layer: int) -> tuple[list[int], list[str]]:
    """First choice of each displayed span's first token at `layer`, and the spans' texts, computed
    here with notebook 06's model (the shipped tiny Mixtral and its tokenizer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook's setup()
    try:
        model, tokenizer = moe_edu.load_pretrained()
        trace = moe_edu.trace_routing(model, tokenizer, text)
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer.encode(text)]), output_router_logits=True).router_logits
    finally:
        torch.set_num_threads(threads)
    first = torch.softmax(logits[layer].float(), dim=-1).argmax(-1).tolist()  # (T,)
    return [first[s.start] for s in trace.spans], [s.text for s in trace.spans]


@contextmanager
def hard_limit(seconds: int):
    def fail(signum, frame):
        raise TimeoutError(f"browser test exceeded its hard limit of {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(root_dir: Path, tmp: Path, while_starting=lambda: None):
    """A JupyterLab server on 127.0.0.1 with its config/data/runtime dirs in `tmp`; yields (url, token, log).

    `while_starting()` runs while the server boots (it takes seconds), and its result is yielded too."""
    port, token = free_port(), "moe-edu-browser-test"
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        IPYTHONDIR=str(tmp / "ipython"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp / "settings")
    quiet = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    quiet.parent.mkdir(parents=True, exist_ok=True)
    quiet.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news pop-up
    log = tmp / "jupyter.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.token={token}",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--allow-root",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.port_retries=0",
        "--LabApp.expose_app_in_browser=True",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        result = while_starting()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", token, log, result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def notebook_without_outputs(target: Path) -> None:
    """Copy notebook 06 with outputs and saved widget state removed (stored widget views are dead)."""
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    target.write_text(json.dumps(nb))


KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""

# null while running; then {errors: [...]} once the last code cell has an execution count and the kernel is idle
RUN_STATE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.model.cells, errors = [];
  let last = null;
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    last = c;
    for (const o of c.outputs.toJSON()) if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
  }
  if (errors.length) return {errors};
  const k = w.sessionContext.session.kernel;
  return last && last.executionCount && k.status === 'idle' ? {errors} : null;
}"""

# the live token view at a layer: [first-choice expert, text, colour stops, tokens in the span, renders so far]
TOKENS = """([root, layer]) => {
  const view = document.querySelector(root + ' .moe-explorer-view');
  const panel = view && view.querySelector('.moe-panel[data-tab="tokens"][data-state="' + view.dataset.state + '"]');
  const text = panel && panel.querySelector('[id$="-tokens-L' + layer + '"] .moe-text');
  if (!text) return null;
  return Array.from(text.querySelectorAll('.moe-tok')).map(s => [
    Number(s.dataset.expert), s.querySelector('bdi').textContent,
    (s.style.backgroundImage.match(/rgb\\(/g) || []).length, s.dataset.t.split(' ').length,
    Number(view.dataset.renders)]);
}"""


# true when the floating hover card is shown and each of its corners (1 px inside) is the card or inside it
CARD_ON_TOP = f"() => ({CARD_IS_WHOLE})(document.querySelector('.moe-float-card'))"


# [lowest contrast ratio, its text, colour, background] over the visible text of the panel (WCAG relative luminance)
CONTRAST = """(sel) => {
  const lum = (c) => { const v = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(x => x / 255)
    .map(x => x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4); return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const alpha = (c) => { const m = c.match(/[\\d.]+/g); return m.length > 3 ? Number(m[3]) : 1; };
  const bg = (n) => { for (; n; n = n.parentElement) { const c = getComputedStyle(n).backgroundColor;
    if (alpha(c) > 0.5 && !getComputedStyle(n).backgroundImage.includes('gradient')) return c;
    if (getComputedStyle(n).backgroundImage.includes('gradient')) return null; } return 'rgb(255, 255, 255)'; };
  let worst = null;
  const root = document.querySelector(sel);
  for (const n of root.querySelectorAll('p, text, th')) {
    if (!n.textContent.trim() || n.closest('.moe-dim')) continue;
    const s = getComputedStyle(n), color = n.tagName === 'text' ? s.fill : s.color, back = bg(n);
    if (!back || n.closest('rect, g[data-experts]')) continue;  // text on an expert colour: black on light hues
    const [a, b] = [lum(color), lum(back)], ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (!worst || ratio < worst[0]) worst = [ratio, n.textContent.slice(0, 40), color, back];
  }
  return worst;
}"""


# the selected token of the flow tab and its chosen experts' bins: each on top at its centre; the lines drawn
FLOW_ON_SCREEN = """() => {
  const flow = document.querySelector('.moe-explorer-view .moe-panel[data-tab="flow"] .moe-flow');
  const top = (n) => { const r = n.getBoundingClientRect(), e = document.elementFromPoint(r.left + r.width / 2,
    r.top + r.height / 2); return r.width > 0 && r.bottom <= innerHeight && r.top >= 0 && !!e && (e === n || n.contains(e)); };
  const tok = flow.querySelector('.moe-ftok.moe-sel');
  if (!tok) return {token: false, bins: false, lines: 0};
  const bins = tok.dataset.route.split(' ').map(p => flow.querySelector('.moe-bin[data-e="' + p.split(':')[0] + '"]'));
  return {token: top(tok), bins: bins.every(top), lines: flow.querySelectorAll('path.moe-line').length};
}"""


# the selected element of a tab lies inside every scroll box around it (its centre within the box)
SELECTION_SHOWN = """(tab) => {
  const panel = document.querySelector('.moe-explorer-view .moe-panel[data-tab="' + tab + '"]');
  const sel = panel && panel.querySelector('.moe-sel');
  if (!sel) return false;
  const r = sel.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
  for (let n = sel.parentElement; n && n !== panel; n = n.parentElement) {
    const cs = getComputedStyle(n);
    if (!/(auto|scroll)/.test(cs.overflow + cs.overflowX + cs.overflowY)) continue;
    const b = n.getBoundingClientRect();
    if (x < b.left || x > b.right || y < b.top || y > b.bottom) return false;
  }
  return true;
}"""

# [width of the Arabic token spans as drawn, width of the same text drawn plainly in the same font]
ARABIC_WIDTHS = """() => {
  const text = document.querySelector('.moe-explorer-view .moe-panel[data-tab="tokens"] .moe-text');
  const run = text.querySelector('bdi.moe-rtl');  // the right-to-left run that holds the Arabic spans
  const font = text.style.fontFamily;
  text.style.fontFamily = 'sans-serif';  // proportional: isolated forms are wider there (monospace hides it)
  const drawn = run.getBoundingClientRect().width;  // (an inline span's own box is unreliable across bidi runs)
  const plain = document.createElement('span');  // inside the same text block: the same font, size and direction
  plain.textContent = Array.from(run.querySelectorAll('.moe-tok bdi')).map(b => b.textContent.replace(/\\u200d/g, '')).join('');
  plain.dir = 'rtl';
  text.append(plain);
  const w = plain.getBoundingClientRect().width;
  plain.remove();
  text.style.fontFamily = font;
  return [drawn, w];
}"""


# [left, right] of the explorer's controls (preset, layer, k slider) and tab buttons
CONTROLS_BOXES = """() => Array.from(document.querySelectorAll(
    '.widget-dropdown select, .widget-slider .noUi-base, .moe-explorer-view .moe-tab, .moe-explorer-view textarea'))
  .map(n => n.getBoundingClientRect()).filter(r => r.width > 0).map(r => [r.left, r.right])"""


def bands(k: int) -> int:
    """Colour stops the browser reports for k stacked bands: `linear-gradient(a 60%, b 0 90%, c 0)` reads back
    with the middle colours twice (one stop per position), and k = 1 is drawn as `linear-gradient(a, a)`."""
    return 2 if k == 1 else 2 * k - 2


def span_stops(k: int, n: int) -> int:
    """Colour stops of a span of n byte tokens: n columns of k bands, or from MANY_TOKENS tokens on the first
    token's k bands plus a bottom strip of n segments (read back like n bands)."""
    return bands(k) * n if n < MANY_TOKENS else bands(k) + bands(n)


def wait_tokens(page, root: str, layer: int, want, what: str):
    """Poll the token view until `want(tokens)` holds; returns the tokens."""
    deadline = time.monotonic() + STEP_MS / 1000
    while time.monotonic() < deadline:
        tokens = page.evaluate(TOKENS, [root, layer])
        if tokens and want(tokens):
            return tokens
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; last tokens: {tokens}")


def type_and_time(page, root: str, text: str) -> float:
    """Type `text` into the explorer's box; return ms from the last keystroke to the first frame drawn after the
    repaint (a requestAnimationFrame, then a task: style, layout and paint included), minus the debounce."""
    box = page.locator(f"{root} .moe-explorer-view textarea.moe-input").first
    box.scroll_into_view_if_needed()
    return page.evaluate(
        """([root, text]) => new Promise(done => {
      const view = document.querySelector(root + ' .moe-explorer-view'), box = view.querySelector('textarea');
      const before = view.dataset.renders, debounce = 250, t0 = performance.now();
      box.value = text;
      box.dispatchEvent(new Event('input', {bubbles: true}));
      const drawn = () => requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0 - debounce)));
      const poll = () => view.dataset.renders !== before ? drawn() : setTimeout(poll, 5);
      poll();
    })""",
        [root, text],
    )


# the open tab's panel is drawn for the explorer's current state (Python renders a tab when it is opened, or
# sends it while the kernel idles)
PANEL_READY = """([view, tab]) => {
  const panel = view.querySelector(':scope .moe-panel[data-tab="' + tab + '"]:not([hidden])');
  return !!panel && panel.dataset.state === view.dataset.state && !view.classList.contains('moe-pending');
}"""
# click a tab button; resolves with the ms from the click to the first frame drawn with its panel ready
OPEN_TAB = f"""([view, tab]) => new Promise(done => {{
  const ready = {PANEL_READY}, t0 = performance.now();
  view.querySelector('.moe-tab[data-tab="' + tab + '"]').click();
  const poll = () => ready([view, tab]) ? requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0)))
                                       : setTimeout(poll, 5);
  poll();
}})"""
# every tab's panel is in the page, drawn for the current state (the idle-time panels have all arrived)
ALL_TABS_SENT = """(view) => Array.from(view.querySelectorAll(':scope .moe-panel'))
  .filter(p => p.dataset.state === view.dataset.state).length === view.querySelectorAll('.moe-tab').length"""


def open_tab(page, view, tab: str) -> float:
    """Open a tab; return the ms from the click to the first frame drawn with its panel (measured in the page)."""
    return page.evaluate(OPEN_TAB, [view.element_handle(), tab])


def shoot(page, locator, name: str) -> None:
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(ARTIFACTS / name))


def check_card_and_keyboard(page, root: str, view, layer: int, prefix: str) -> None:
    """The hover card of a many-token character on the last line is whole; keyboard-only selection."""
    card = page.locator(".moe-float-card")
    # 8. the card of a many-token character on the widget's last line is whole (the old CSS card was clipped)
    open_tab(page, view, "tokens")
    type_and_time(page, root, LAST_LINE_TEXT)
    wait_tokens(page, root, layer, lambda t: t[-1][1] == "👍🏽", "the thumbs-up text")
    for target in ("專", "👍🏽"):
        tok = view.locator(
            '.moe-panel[data-tab="tokens"] .moe-text .moe-tok', has=page.locator("bdi", has_text=target)
        ).last
        tok.scroll_into_view_if_needed()
        tok.hover()
        card.wait_for(state="visible", timeout=2000)
        assert page.evaluate(CARD_ON_TOP), f"the card of {target} is clipped or covered"
        lines = card.inner_text().count("token ")
        assert lines == tok.get_attribute("data-t").count(" ") + 1, f"{target}: one card line per byte token"
    shoot(page, page.locator(".moe-float-card"), f"{prefix}_card_last_line.png")
    # 8b. at the bottom of the window the card opens above the token (when it does not fit below), whole
    tok.evaluate("t => t.scrollIntoView({block: 'end'})")
    page.mouse.move(0, 0)
    tok.hover()
    card.wait_for(state="visible", timeout=2000)
    assert page.evaluate(CARD_ON_TOP), "the card of a token at the bottom of the window is clipped"
    t, c, vh = tok.bounding_box(), card.bounding_box(), page.viewport_size["height"]
    assert c["y"] >= 0 and c["y"] + c["height"] <= vh, (c, vh)
    if vh - (t["y"] + t["height"]) < c["height"] + 8:  # no room below: flipped above the token
        assert c["y"] + c["height"] <= t["y"] + 1, (t, c)
    shoot(page, page.locator(".moe-float-card"), f"{prefix}_card_flipped.png")
    page.mouse.move(0, 0)
    check_k_animates_card(page, view, prefix)

    # 9. keyboard only: focus the first token, arrows move the selection, the card follows, Escape closes it
    view.locator(".moe-text .moe-tok").first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.classList.contains('moe-tok') "
        "&& document.activeElement.dataset.g === '2' && document.activeElement.classList.contains('moe-sel')"
    )
    assert page.evaluate(CARD_ON_TOP), "the keyboard-selected token's card is shown whole"
    label = page.evaluate("() => document.activeElement.getAttribute('aria-label')")
    assert label and "token" in label and "layer" in label, label
    page.keyboard.press("Enter")  # Enter toggles the selection off
    page.wait_for_function("() => !document.querySelector('.moe-explorer-view .moe-text .moe-sel')")
    page.keyboard.press("Escape")
    shoot(page, view, f"{prefix}_keyboard.png")

    # 9b. touch (the page emulates a touch screen): a tap pins the token's card, whole; a second tap unpins it
    tok = view.locator('.moe-panel[data-tab="tokens"] .moe-text .moe-tok').nth(1)
    tok.scroll_into_view_if_needed()
    tok.tap()
    page.wait_for_function(CARD_PINNED, arg="1")
    page.wait_for_function(  # Python's redraw with the selection has arrived, and the card is still pinned
        "() => { const v = document.querySelector('.moe-explorer-view'); return !v.classList.contains('moe-pending')"
        ' && !!v.querySelector(\'.moe-panel[data-tab="tokens"][data-state="\' + v.dataset.state + \'"] .moe-tok.moe-sel[data-g="1"]\'); }'
    )
    page.wait_for_function(CARD_PINNED, arg="1")
    assert page.evaluate(CARD_ON_TOP), "the tapped token's card is clipped or covered"
    shoot(page, view, f"{prefix}_touch_pinned.png")
    renders = view.get_attribute("data-renders")
    tok.tap()
    page.wait_for_function("() => document.querySelector('.moe-float-card').hidden")
    page.wait_for_function(  # Python's redraw without the selection has arrived (the page unmarks at once)
        "r => { const v = document.querySelector('.moe-explorer-view'); return v.dataset.renders !== r"
        " && !v.querySelector('.moe-text .moe-sel'); }",
        arg=renders,
    )


CARD_PINNED = """(g) => { const c = document.querySelector('.moe-float-card');
  return !!c && !c.hidden && c.dataset.pinned === 'true' && c.dataset.g === g; }"""
# records the card's transitions (class:property) from now on
TRACK_TRANSITIONS = """() => { const c = document.querySelector('.moe-float-card'); window.moeRuns = [];
  c.addEventListener('transitionrun', (e) => window.moeRuns.push(e.target.className + ':' + e.propertyName)); }"""


def check_k_animates_card(page, view, prefix: str) -> None:
    """With a character's card open, moving k keeps the card open on that character, its top-k outline and
    renormalised-weight bars transition (CSS) and the renormalised weights change; k is moved back after."""
    card = page.locator(".moe-float-card")
    handle = page.locator(".widget-slider .noUi-handle").last
    handle.scroll_into_view_if_needed()
    tok = view.locator('.moe-panel[data-tab="tokens"] .moe-text .moe-tok', has=page.locator("bdi", has_text="專")).last
    tok.hover()
    card.wait_for(state="visible", timeout=2000)
    k0 = round(float(handle.get_attribute("aria-valuenow")))
    assert f"top-{k0}" in card.inner_text()
    chips = card.locator(".moe-chip").all_inner_texts()
    page.evaluate(TRACK_TRANSITIONS)
    k1, back = (k0 + 1, "ArrowLeft") if k0 < 8 else (k0 - 1, "ArrowRight")
    handle.evaluate("h => h.focus({preventScroll: true})")  # the mouse stays on the character
    page.keyboard.press("ArrowRight" if back == "ArrowLeft" else "ArrowLeft")
    page.wait_for_function(
        "k => { const c = document.querySelector('.moe-float-card'); return !c.hidden && c.innerText.includes('top-' + k); }",
        arg=k1,
    )
    assert card.inner_text().startswith("專"), "the card stays on the same character"
    assert page.evaluate(CARD_ON_TOP), "the card is still open and whole after moving k"
    page.wait_for_function("() => window.moeRuns.some(r => r.startsWith('moe-wbar') && r.endsWith(':height'))")
    runs = page.evaluate("() => window.moeRuns")
    assert any(r.startswith("moe-bar") and r.endswith(":outline-color") for r in runs), runs  # the top-k outline moved
    after = card.locator(".moe-chip").all_inner_texts()
    assert len(after) == len(chips) // k0 * k1 and after != chips, (chips, after)  # the renormalised weights changed
    time.sleep(1.0)  # the transitions (under 1 s) have ended
    shoot(page, card, f"{prefix}_card_k{k1}.png")
    handle.evaluate("h => h.focus({preventScroll: true})")
    page.keyboard.press(back)
    page.wait_for_function(
        "k => { const c = document.querySelector('.moe-float-card'); return c.hidden || c.innerText.includes('top-' + k); }",
        arg=k0,
    )
    page.wait_for_function("() => !document.querySelector('.moe-explorer-view').classList.contains('moe-pending')")
    page.mouse.move(0, 0)


IME_COMPOSE = """() => {
  const view = document.querySelector('.moe-explorer-view'), box = view.querySelector('textarea');
  const before = view.dataset.renders;
  box.focus();
  box.dispatchEvent(new CompositionEvent('compositionstart', {bubbles: true, data: ''}));
  box.value = 'ㄓㄨㄢ';  // Zhuyin still being composed: not text yet
  box.dispatchEvent(new InputEvent('input', {bubbles: true, isComposing: true, data: 'ㄓㄨㄢ'}));
  return before;
}"""
IME_COMMIT = """() => {
  const box = document.querySelector('.moe-explorer-view textarea');
  box.value = '專';
  box.dispatchEvent(new InputEvent('input', {bubbles: true, isComposing: true, data: '專'}));
  box.dispatchEvent(new CompositionEvent('compositionend', {bubbles: true, data: '專'}));
}"""


def check_ime(page, root: str, layer: int) -> None:
    """An input method's uncommitted text is not routed; the committed character is, once."""
    before = page.evaluate(IME_COMPOSE)
    time.sleep(0.8)  # three times the debounce
    renders = page.evaluate("() => document.querySelector('.moe-explorer-view').dataset.renders")
    assert renders == before, "text still being composed was routed"
    page.evaluate(IME_COMMIT)
    wait_tokens(page, root, layer, lambda t: [x for _, x, *_ in t] == ["專"], "the committed character")


def check_new_views(page, root: str, view, layer: int, k: int, phase, prefix: str) -> None:
    """A 256-token flow view, the by-layer view, the selection in every tab, an expert profile, joined Arabic."""
    from playwright.sync_api import expect

    # 11. a 256-token text in the flow tab: the selected token and its experts are on screen together
    open_tab(page, view, "tokens")
    times = []  # three 256-token texts in a row: (ms from the debounce to the first frame drawn, the DOM swap's ms)
    for text in ("A " + LONG_TEXT, "B " + LONG_TEXT, LONG_TEXT):
        times.append((type_and_time(page, root, text), float(view.get_attribute("data-paint-ms") or "nan")))
    wait_tokens(page, root, layer, lambda t: len(t) > 200, "the long text")
    phase(
        "256 tokens typed: repaint after the debounce "
        + ", ".join(f"{ms:.0f} ms (DOM swap {swap:.0f})" for ms, swap in times)
    )
    late = view.locator(".moe-text .moe-tok").nth(200)
    late.scroll_into_view_if_needed()
    late.click()
    page.wait_for_function(  # Python's re-render with the selection (its path table) has arrived
        "() => !!document.querySelector('.moe-explorer-view .moe-panel[data-tab=\"tokens\"] .moe-path')"
    )
    open_tab(page, view, "flow")  # drawn when opened, with the selection
    assert view.locator('.moe-panel[data-tab="flow"] .moe-ftok.moe-sel').count() == 1
    flow = view.locator('.moe-panel[data-tab="flow"] .moe-flow')
    flow.locator(".moe-flow-bins").scroll_into_view_if_needed()
    height = flow.evaluate("f => f.getBoundingClientRect().height")
    assert height < 520, f"the flow view's height does not grow with the text ({height:.0f} px at 256 tokens)"
    page.wait_for_function("() => document.querySelectorAll('.moe-flow path.moe-line').length > 0")
    seen = page.evaluate(FLOW_ON_SCREEN)
    assert seen["token"] and seen["bins"] and seen["lines"] == k, seen
    shoot(page, view, f"{prefix}_flow_256.png")
    phase("256-token flow checked")

    # 12. by layer (Fig. 8): one row per layer; the toggles switch first-choice colours and repeat outlines
    open_tab(page, view, "by layer")
    stack = view.locator('.moe-panel[data-tab="by layer"] .moe-layers')
    assert stack.locator(".moe-layer-row").count() == 4
    rep = stack.locator(".moe-rep").first
    assert rep.evaluate("n => getComputedStyle(n).outlineStyle") == "dashed"
    assert rep.evaluate("n => getComputedStyle(n).backgroundImage") == "none"  # first choice only
    stack.locator("label", has_text="outline repeats").click()
    stack.locator("label", has_text="first choice only").click()
    assert rep.evaluate("n => getComputedStyle(n).outlineStyle") != "dashed"
    assert "gradient" in rep.evaluate("n => getComputedStyle(n).backgroundImage")  # the k bands again
    shoot(page, view, f"{prefix}_by_layer.png")

    # 13. the selected token (one late in a 256-token text) is inside its scroll box in every tab; once the kernel
    # has idled, every tab has been sent, and opening one needs no kernel round trip
    page.wait_for_function(ALL_TABS_SENT, arg=view.element_handle(), timeout=30_000)
    opened = {}
    for tab in ("tokens", "by layer", "flow", "heatmap", "all layers", "top-k", "compare"):
        opened[tab] = open_tab(page, view, tab)
        if tab not in ("top-k", "compare"):
            assert page.evaluate(SELECTION_SHOWN, tab), f"{tab}: the selected token is scrolled out of sight"
        if tab == "heatmap":  # the absolute 0-1 scale (finding 10): a flat router's cells get paler
            heat = view.locator('.moe-panel[data-tab="heatmap"]')
            shades = "p => Array.from(p.querySelectorAll('td[data-p]'), c => getComputedStyle(c).backgroundColor)"
            relative = heat.evaluate(shades)
            heat.locator("label", has_text="absolute 0–1 scale").click()
            absolute = heat.evaluate(shades)
            alpha = lambda c: float(c.split(",")[3].rstrip(")")) if c.count(",") == 3 else 1.0
            assert sum(map(alpha, absolute)) < sum(map(alpha, relative)), "the absolute scale is paler"
            heat.locator("label", has_text="absolute 0–1 scale").click()
    phase(
        "256 tokens, tab opened after idling (click -> drawn, ms): "
        + ", ".join(f"{t} {ms:.0f}" for t, ms in opened.items())
    )

    # 14. a legend click shows the expert's profile; Arabic keeps its joined letter forms
    open_tab(page, view, "tokens")
    view.locator('.moe-panel[data-tab="tokens"] .moe-legend-item[data-expert="0"]').click()
    profile = view.locator('.moe-panel[data-tab="tokens"] .moe-profile')
    expect(profile).to_contain_text("in the presets")
    view.locator(".moe-filter-chip").click()
    type_and_time(page, root, ARABIC)
    wait_tokens(page, root, layer, lambda t: "".join(x for _, x, *_ in t).replace("\u200d", "") == ARABIC, "Arabic")
    widths = page.evaluate(ARABIC_WIDTHS)
    assert abs(widths[0] / widths[1] - 1) < 0.08, (
        f"Arabic drawn {widths[0]:.0f} px wide, joined text {widths[1]:.0f} px"
    )
    phase(f"selection in every tab, profile, Arabic ({widths[0]:.0f} vs {widths[1]:.0f} px) checked")


def test_explorer_in_jupyterlab(tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    assert NOTEBOOK.exists(), f"{NOTEBOOK} is missing: build it with tools/build_notebooks.py"
    ARTIFACTS.mkdir(exist_ok=True)
    work = tmp_path / "lab"
    work.mkdir()
    notebook_without_outputs(work / NOTEBOOK.name)
    saved = work / ("saved_" + NOTEBOOK.name)
    saved.write_text(NOTEBOOK.read_text())  # as committed: outputs, no live widgets

    def expected():  # the notebook's last explorer state, then the state this test drives it to
        code = PRESET_TEXTS["code"]
        return expected_routing(code, 3), expected_routing(NEW_TEXT, NEW_LAYER)

    start = time.monotonic()

    def phase(name: str) -> None:  # progress for `pytest -s` and for failure reports
        print(f"[browser test] {name}: {time.monotonic() - start:.1f} s")

    root = ".jp-Notebook"
    with (
        hard_limit(HARD_LIMIT_S),
        jupyter_lab(work, tmp_path, expected) as (url, token, log, (before, after)),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, has_touch=True)  # a touch screen and a mouse
        page.set_default_timeout(STEP_MS)
        phase("server and browser up")
        try:
            # 1. the saved notebook, not run: a static picture of the explorer and a note to run the cell
            page.goto(f"{url}/lab/tree/{saved.name}?token={token}&reset")
            static = page.locator(".moe-explorer-static").first
            static.wait_for(state="attached")
            static.scroll_into_view_if_needed()
            expect(static).to_contain_text("run this cell", timeout=STEP_MS)  # waits for the cell to be laid out
            assert static.locator(".moe-tok").count() > 10, "the static picture shows the coloured tokens"
            shoot(page, static, "explorer_static.png")
            phase("static picture shown")

            # 2. run every cell of a clean copy
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
            page.wait_for_function("() => !!window.jupyterapp", timeout=STEP_MS)
            page.wait_for_function(KERNEL_READY, timeout=STEP_MS, polling=250)
            phase("kernel connected and idle")
            # fire and forget: awaiting run-all's promise can hang
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            state = page.wait_for_function(RUN_STATE, timeout=STEP_MS, polling=250).json_value()
            assert not state["errors"], f"notebook cells raised: {state['errors']}"
            phase("all cells run")
            tokens = wait_tokens(page, root, 3, lambda t: [e for e, *_ in t] == before[0], "the code preset")
            expect(page.locator(".moe-explorer-static").first).to_be_hidden()  # the live widget replaces it

            # 3. type Chinese (and emoji, accents, Hebrew) at layer 2: the characters are displayed
            page.locator(".widget-dropdown select").filter(
                has=page.locator("option", has_text="layer 0")
            ).last.select_option(label=f"layer {NEW_LAYER}")
            wait_tokens(page, root, NEW_LAYER, lambda t: len(t) > 0, "layer 2")
            update_ms = type_and_time(page, root, NEW_TEXT)
            tokens = wait_tokens(page, root, NEW_LAYER, lambda t: [x for _, x, *_ in t] == after[1], "typed text")
            phase(f"typed text shown (update {update_ms:.0f} ms after the debounce)")
            assert [e for e, *_ in tokens] == after[0], "the page's first-choice experts differ from the model's"
            shown = page.locator(f'{root} .moe-explorer-view .moe-panel[data-tab="tokens"] .moe-text').last.inner_text()
            assert "專家混合模型" in shown and "🙂" in shown and "café" in shown and "\ufffd" not in shown
            view = page.locator(f"{root} .moe-explorer-view").last
            shoot(page, view, "explorer_typed.png")

            # 4. hover: the card opens at once with the top-k experts and weights of the character's tokens,
            # every corner of it on top (elementFromPoint), not merely "visible" (clipped boxes count as visible)
            first = view.locator(".moe-text .moe-tok").first
            first.hover()
            card = page.locator(".moe-float-card")
            card.wait_for(state="visible", timeout=2000)
            assert page.evaluate(CARD_ON_TOP), "the hover card is covered or clipped somewhere"
            pieces = tokens[0][3]  # byte tokens of 專 (3 UTF-8 bytes) in the shipped vocabulary
            assert pieces > 1, "the first character should span several byte tokens"
            card_re = rf"token 0 \(1/{pieces}\).*e\d 0\.\d\d.*e\d 0\.\d\d"
            assert re.search(card_re, card.inner_text(), re.S), card.inner_text()
            shoot(page, view, "explorer_hover.png")

            # 5. move k up from 2: every byte token now shows k colour bands
            assert all(stops == span_stops(2, n) for _, _, stops, n, _ in tokens), "k = 2: two bands per byte token"
            handle = page.locator(".widget-slider .noUi-handle").last
            handle.focus()
            t0 = time.monotonic()
            handle.press("ArrowRight")
            page.wait_for_function(
                "() => Number(document.querySelector('.widget-slider .noUi-handle').getAttribute('aria-valuenow')) > 2"
            )
            k = round(float(handle.get_attribute("aria-valuenow")))
            tokens = wait_tokens(
                page,
                root,
                NEW_LAYER,
                lambda t: all(stops == span_stops(k, n) for _, _, stops, n, _ in t),
                f"k = {k}: {k} bands per byte token",
            )
            k_ms = 1000 * (time.monotonic() - t0)
            page.mouse.move(0, 0)
            shoot(page, view, "explorer_k3.png")

            # 6. click a token: highlighted in the heatmap and the all-layers grid, its path shown
            view.locator(".moe-text .moe-tok").nth(2).click()
            page.wait_for_function("() => !!document.querySelector('.moe-explorer-view .moe-path')")
            open_tab(page, view, "heatmap")
            rows = view.locator('.moe-panel[data-tab="heatmap"] tr.moe-sel')
            assert rows.count() >= 1 and all(r.get_attribute("data-g") == "2" for r in rows.all())
            assert rows.first.evaluate("r => getComputedStyle(r.cells[0]).backgroundColor") == "rgb(255, 243, 176)"
            assert rows.first.evaluate("r => getComputedStyle(r).outlineStyle") == "solid"
            shoot(page, view, "explorer_heatmap.png")
            open_tab(page, view, "all layers")
            cells = view.locator('.moe-panel[data-tab="all layers"] td.moe-sel')
            assert cells.count() >= 4 and view.locator('.moe-panel[data-tab="all layers"] .moe-path').count() == 1
            shoot(page, view, "explorer_all_layers.png")

            # 7. click a legend entry: the other experts dim
            open_tab(page, view, "flow")
            view.locator('.moe-panel[data-tab="tokens"] .moe-legend-item[data-expert="1"]').evaluate("n => n.click()")
            page.wait_for_function("""() => document.querySelectorAll(
                '.moe-explorer-view .moe-panel[data-tab="flow"] path.moe-dim').length > 0""")
            lines = view.locator('.moe-panel[data-tab="flow"] path.moe-line')
            assert all(
                (l.get_attribute("data-experts") == "1") != ("moe-dim" in l.get_attribute("class")) for l in lines.all()
            )
            shoot(page, view, "explorer_flow.png")
            phase(f"k update {k_ms:.0f} ms; selection and legend checked")
            view.locator(".moe-filter-chip").click()  # the filter shows as a chip; pressing it clears the filter
            page.wait_for_function("() => !document.querySelector('.moe-explorer-view .moe-dim')")

            check_card_and_keyboard(page, root, view, NEW_LAYER, "explorer")
            check_ime(page, root, NEW_LAYER)

            # 10. JupyterLab's dark theme: captions and labels keep a readable contrast (WCAG AA: 4.5:1)
            page.evaluate(
                "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
            )
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
            for tab in ("tokens", "flow", "all layers", "expert load"):
                open_tab(page, view, tab)
                worst = page.evaluate(CONTRAST, f'.moe-explorer-view .moe-panel[data-tab="{tab}"]')
                assert worst and worst[0] >= 4.5, f"dark theme, {tab} tab: lowest contrast {worst}"
            shoot(page, view, "explorer_dark.png")
            page.evaluate(
                "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
            )
            phase("card, keyboard and dark theme checked")

            check_new_views(page, root, view, NEW_LAYER, k, phase, "explorer")
            print(
                f"[browser test] typing -> repaint: {update_ms:.0f} ms after the 250 ms debounce; "
                f"k slider -> repaint: {k_ms:.0f} ms (including polling)"
            )
        except BaseException:  # pytest.fail raises a BaseException
            page.screenshot(path=str(ARTIFACTS / "routing_explorer_failure.png"))
            print(log.read_text()[-3000:])
            raise
        finally:
            browser.close()


@contextmanager
def voila(notebook: Path, tmp: Path):
    """A Voila server for `notebook` on 127.0.0.1; yields its url."""
    port = free_port()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "vconfig"),
        JUPYTER_RUNTIME_DIR=str(tmp / "vruntime"),
        IPYTHONDIR=str(tmp / "ipython"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    log = tmp / "voila.log"
    cmd = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1"]
    cmd.append(VOILA_EXTENSIONS)  # as `make explorer`
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2):
                    break
            except urllib.error.HTTPError:  # the server answers: up
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Voila did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


BACKGROUNDS = """() => Array.from(document.querySelectorAll('.moe-explorer-view .moe-text .moe-tok'))
  .map(s => s.style.backgroundImage)"""


def test_explorer_app_in_voila(tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    assert APP.exists(), f"{APP} is missing: build it with tools/build_notebooks.py"
    ARTIFACTS.mkdir(exist_ok=True)
    first, _ = expected_routing(PRESET_TEXTS["prose"], 0)
    typed, spans = expected_routing(APP_TEXT, 0)
    with hard_limit(HARD_LIMIT_S), voila(APP, tmp_path) as (url, log), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800}, has_touch=True)
        page.set_default_timeout(STEP_MS)
        console = []  # errors the page logs, but offline font downloads (no network here, by design)
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        try:
            page.goto(url)
            root = "body"
            tokens = wait_tokens(page, root, 0, lambda t: len(t) > 0, "the app's first view")
            assert page.get_by_text("load_pretrained").count() == 0, "a page, not a notebook: no code shown"
            expect(page.locator(".moe-explorer-static").first).to_be_hidden()  # the live widget replaces it
            assert [e for e, *_ in tokens] == first
            colours = page.evaluate(BACKGROUNDS)
            type_and_time(page, root, APP_TEXT)
            shown = [s.replace("\n", "↵") for s in spans]
            tokens = wait_tokens(page, root, 0, lambda t: [x for _, x, *_ in t] == shown, "the typed code")
            assert [e for e, *_ in tokens] == typed, "the app's colours are not the model's routing"
            after = page.evaluate(BACKGROUNDS)
            assert after != colours, "the colouring changed"
            page.screenshot(path=str(ARTIFACTS / "voila_app.png"))
            # the same checks as in JupyterLab: the card, the keyboard, and the newer views
            view = page.locator(".moe-explorer-view").last
            check_card_and_keyboard(page, root, view, 0, "voila")
            check_ime(page, root, 0)
            check_new_views(page, root, view, 0, 2, lambda name: print(f"[voila] {name}"), "voila")
            errors = [e for e in console if "Failed to load resource" not in e]
            assert not errors, f"Voila console errors: {errors[:5]}"

            # a phone (400 px): every control and the tabs stay on the screen
            page.set_viewport_size({"width": 400, "height": 800})
            fits = f"() => {{ const b = ({CONTROLS_BOXES})(); return b.length > 0 && b.every(([l, r]) => l >= 0 && r <= 400); }}"
            with contextlib.suppress(Exception):  # the widget layout follows a resize asynchronously: wait for it
                page.wait_for_function(fits, timeout=15_000)
            boxes = page.evaluate(CONTROLS_BOXES)
            assert boxes and all(left >= 0 and right <= 400 for left, right in boxes), boxes
            page.screenshot(path=str(ARTIFACTS / "voila_phone.png"))
            for width in (400, 820):  # the k slider keeps a usable track (the review saw 40 px at 820 px)
                page.set_viewport_size({"width": width, "height": 800})
                track = "() => document.querySelector('.widget-slider .noUi-base').getBoundingClientRect().width"
                with contextlib.suppress(Exception):
                    page.wait_for_function(f"() => ({track})() >= 120", timeout=15_000)
                assert page.evaluate(track) >= 120, f"k slider track {page.evaluate(track):.0f} px at {width} px"

            # Voila's dark theme (`?theme=dark`): captions and labels keep a readable contrast
            page.set_viewport_size({"width": 1100, "height": 800})
            page.goto(url + "?theme=dark")
            wait_tokens(page, root, 0, lambda t: len(t) > 0, "the dark page's first view")
            view = page.locator(".moe-explorer-view").last
            for tab in ("tokens", "by layer", "flow", "all layers", "expert load"):
                open_tab(page, view, tab)
                worst = page.evaluate(CONTRAST, f'.moe-explorer-view .moe-panel[data-tab="{tab}"]')
                assert worst and worst[0] >= 4.5, f"Voila dark theme, {tab} tab: lowest contrast {worst}"
            page.screenshot(path=str(ARTIFACTS / "voila_dark.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "voila_failure.png"))
            print(log.read_text()[-3000:])
            raise
        finally:
            browser.close()


def test_missing_browser_fails_under_ci_and_skips_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        require_browser()

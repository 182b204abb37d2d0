"""Real-browser test of notebook 06: JupyterLab on loopback, headless Chromium driven by Playwright.

Runs every cell, types a new text into the routing explorer, changes the layer and checks that
the colours painted in the page are the first-choice experts the model's router gives. Skipped
when Chromium (/usr/bin/chromium) or playwright is missing, unless `CI` is set: then it fails.
Writes `test-artifacts/routing_explorer.png`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import moe_edu
from moe_edu.widgets import expert_colour

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_routing_explorer.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HARD_LIMIT_S = 150  # the whole test; each browser step has its own, shorter timeout
STEP_MS = 60_000
NEW_TEXT = "Bonjour! The cat said: print(3 + 4)"
NEW_LAYER = 2


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


def expected_first_choices(text: str, layer: int) -> list[int]:
    """The routing of notebook 06's model (the shipped tiny Mixtral and its tokenizer), computed here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook's setup()
    try:
        model, tokenizer = moe_edu.load_pretrained()
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer.encode(text)]), output_router_logits=True).router_logits
    finally:
        torch.set_num_threads(threads)
    return torch.softmax(logits[layer].float(), dim=-1).argmax(-1).tolist()  # (T,)


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


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
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp / "settings")
    quiet = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    quiet.parent.mkdir(parents=True, exist_ok=True)
    quiet.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news pop-up
    log = tmp / "jupyter.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.token={token}", "--ip=127.0.0.1",
           f"--port={port}", "--allow-root", f"--ServerApp.root_dir={root_dir}", "--ServerApp.port_retries=0",
           "--LabApp.expose_app_in_browser=True"]
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

TOKENS = """(layer) => {
  const root = document.querySelector('#moe-explorer-tokens-L' + layer);
  if (!root) return null;
  return Array.from(root.querySelectorAll('.moe-tok')).map(
    s => [Number(s.dataset.expert), getComputedStyle(s).backgroundColor, s.title]);
}"""


def test_explorer_in_jupyterlab(tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    assert NOTEBOOK.exists(), f"{NOTEBOOK} is missing: build it with tools/build_notebooks.py"
    ARTIFACTS.mkdir(exist_ok=True)
    work = tmp_path / "lab"
    work.mkdir()
    notebook_without_outputs(work / NOTEBOOK.name)

    def expected():  # the notebook's last explorer state, then the state this test drives it to
        code = moe_edu.widgets.PRESET_TEXTS["code"]
        return expected_first_choices(code, 3), expected_first_choices(NEW_TEXT, NEW_LAYER)

    n_experts = moe_edu.PRESETS["tiny"].num_local_experts
    start = time.monotonic()

    def phase(name: str) -> None:  # progress for `pytest -s` and for failure reports
        print(f"[browser test] {name}: {time.monotonic() - start:.1f} s")
    with hard_limit(HARD_LIMIT_S), jupyter_lab(work, tmp_path, expected) as (url, token, log, (before, after)), \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(STEP_MS)
        phase("server and browser up")
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
            page.wait_for_function("() => !!window.jupyterapp", timeout=STEP_MS)
            page.wait_for_function(KERNEL_READY, timeout=STEP_MS, polling=250)
            phase("kernel connected and idle")
            # fire and forget: awaiting run-all's promise can hang
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            state = page.wait_for_function(RUN_STATE, timeout=STEP_MS, polling=250).json_value()
            assert not state["errors"], f"notebook cells raised: {state['errors']}"
            phase("all cells run")

            tokens = page.wait_for_function(TOKENS, arg=3, timeout=STEP_MS, polling=250).json_value()
            assert [e for e, *_ in tokens] == before, "explorer's colouring after run-all != model routing"

            box = page.locator(".widget-textarea textarea").first
            box.scroll_into_view_if_needed()
            box.fill(NEW_TEXT)
            box.dispatch_event("change")  # continuous_update=False: the value syncs on change
            layer = page.locator(".widget-dropdown select").filter(has=page.locator("option", has_text="layer 0"))
            layer.select_option(label=f"layer {NEW_LAYER}")
            check = f"""() => {{ const got = ({TOKENS})({NEW_LAYER});
                return got && got.length === {len(after)} ? got : null; }}"""
            tokens = page.wait_for_function(check, timeout=STEP_MS, polling=250).json_value()
            phase("explorer updated")
            explorer = page.locator(".widget-vbox").filter(has=box).last
            explorer.scroll_into_view_if_needed()
            explorer.screenshot(path=str(ARTIFACTS / "routing_explorer.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "routing_explorer_failure.png"))
            print(log.read_text()[-3000:])
            raise
        finally:
            browser.close()
    assert [e for e, *_ in tokens] == after, "the page's first-choice experts differ from the model's router"
    assert [c for _, c, _ in tokens] == [rgb(expert_colour(e, n_experts)) for e in after], "painted colours differ"
    assert all(title.count("expert ") == 2 and f"expert {e}: " in title.splitlines()[1]
               for e, _, title in tokens), "hover text should list the top-2 experts, first choice first"
    assert len(set(after)) > 1, "a text routed to a single expert would not test the colouring"


def test_missing_browser_fails_under_ci_and_skips_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        require_browser()

"""The course website (`make book`): built offline from the committed notebooks, then read in Chromium.

One build per session (tools/build_book.py into a temporary folder, ~20-50 s), served on localhost.
The checks are what a reader meets: every page opens with content and no console error, no link or
image is broken, nothing is fetched from outside the site, each course notebook shows its zh-TW
summary in the first screen, search finds a Chinese and an English term in the right notebook, and
the routing explorer works in the page with no kernel behind it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_browser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import build_book  # noqa: E402 (tools/ is not a package)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.version_info < (3, 11), reason="the website needs Sphinx 9 (Python >= 3.11)"),
]

COURSE = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
EXERCISES = sorted(p.stem for p in (ROOT / "notebooks" / "exercises").glob("ex[0-9][0-9]_*.py"))


def require_mathjax() -> None:
    """Skip without the website's MathJax (npm), or fail under CI."""
    if not (build_book.MATHJAX / "tex-chtml.js").is_file():
        reason = "the website needs MathJax from npm: `npm ci --prefix book` (make test runs it where npm exists)"
        if os.environ.get("CI"):
            pytest.fail(reason + " — CI is set, so this is a failure, not a skip")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built website's HTML folder (the build time is printed for the closing note)."""
    require_mathjax()
    start = time.monotonic()
    html = build_book.build(tmp_path_factory.mktemp("book"), jobs="2", strict=True)  # a Sphinx warning fails
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    print(f"\n[book] built in {time.monotonic() - start:.0f} s; {size / 1e6:.1f} MB")
    return html


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """The site on http://127.0.0.1:<port>/ (a plain static file server, as GitHub Pages is)."""
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


class Links(HTMLParser):
    """Every id in a page, and every local href/src it points to."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if a.get("name") and tag == "a":
            self.ids.add(a["name"])
        for key in ("href", "src"):
            value = a.get(key)
            if value and not urlsplit(value).scheme and not value.startswith("//"):
                self.targets.append(value)


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def test_every_course_notebook_exercise_and_guide_has_its_page(site: Path):
    want = [f"notebooks/{n}.html" for n in COURSE]
    want += [f"notebooks/exercises/{n}.html" for n in EXERCISES]
    want += [f"notebooks/exercises/solutions/{n}.html" for n in EXERCISES]
    want += ["index.html", "glossary.html", "explorer.html", "api/index.html", "search.html"]
    want += ["notebooks/exercises/README.html", "notebooks/exercises/TEACHING.html"]
    assert len(COURSE) == 13 and len(EXERCISES) == 12
    missing = [w for w in want if not (site / w).is_file()]
    assert not missing, missing
    for name in COURSE:  # each notebook can be downloaded as the notebook itself
        nb = json.loads((site / "_sources" / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        assert nb["cells"], name


def test_every_figure_and_widget_twin_of_the_notebooks_is_on_its_page(site: Path):
    """As many images on each notebook's page as the notebook has image outputs; notebook 06's explorer shows its
    static twin; each page has previous/next links; each exercise links its solution and back."""
    wrong = []
    staged = [*(f"{n}" for n in COURSE), *(f"exercises/{n}" for n in EXERCISES)]
    staged += [f"exercises/solutions/{n}" for n in EXERCISES]
    for name in staged:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        figures = sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
        page = (site / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        shown = len(re.findall(r'src="(?:\.\./)+_images/', page))
        if shown != figures:
            wrong.append(f"{name}: {figures} figures in the notebook, {shown} on the page")
        if 'class="left-prev"' not in page and 'class="right-next"' not in page:
            wrong.append(f"{name}: no previous/next links")
    assert not wrong, wrong
    assert 'id="moe-explorer-static"' in (site / "notebooks" / "06_routing_explorer.html").read_text(encoding="utf-8")
    for name in EXERCISES:
        student = (site / "notebooks" / "exercises" / f"{name}.html").read_text(encoding="utf-8")
        solution = (site / "notebooks" / "exercises" / "solutions" / f"{name}.html").read_text(encoding="utf-8")
        assert f'href="solutions/{name}.html">Solutions</a>' in student, name
        assert f'href="../{name}.html">Student version</a>' in solution, name


def test_no_broken_internal_link_or_missing_file(site: Path):
    parsed = {p: parse(p) for p in pages(site)}
    broken = []
    for page, links in parsed.items():
        for target in links.targets:
            url = urlsplit(urljoin(page.as_uri(), target))
            path = Path(unquote(url.path))
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                broken.append(f"{page.relative_to(site)} -> {target}")
            elif url.fragment and path.suffix == ".html":
                ids = parsed[path].ids if path in parsed else parse(path).ids
                if unquote(url.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)} -> {target} (no such anchor)")
    assert not broken, f"{len(broken)} broken: {broken[:20]}"


def test_glossary_page_lists_every_term_with_its_notebook_and_code(site: Path):
    from moe_edu.course.glossary import GLOSSARY

    text = (site / "glossary.html").read_text(encoding="utf-8")
    missing = [t.preferred for t in GLOSSARY if t.preferred not in text or t.english not in text]
    assert not missing, missing
    assert text.count('href="notebooks/') >= len(GLOSSARY)  # every row links the notebook that teaches it
    assert 'href="api/core.html#moe_edu.moe_block.SparseMoeBlock"' in text  # code names link the reference


def test_library_reference_documents_the_stable_api(site: Path):
    import moe_edu

    text = "".join(p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html"))
    undocumented = []
    for name in moe_edu.__all__:
        obj = getattr(moe_edu, name)
        documented = f'id="{getattr(obj, "__module__", "")}.{getattr(obj, "__qualname__", "")}"' in text
        if callable(obj) and getattr(obj, "__module__", "").startswith("moe_edu") and not documented:
            undocumented.append(name)
    assert not undocumented, undocumented


def test_build_refuses_a_folder_it_did_not_make(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not made by build_book"):
        build_book.claim(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.browser
def test_every_page_opens_in_chromium_without_errors(site: Path, server: str):
    require_browser()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
        page.on("response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:")) else None)
        for path in pages(site):
            rel = path.relative_to(site).as_posix()
            before = len(problems)
            page.goto(server + rel, wait_until="load")
            page.wait_for_load_state("networkidle")
            words = page.evaluate("(document.querySelector('main') || document.body).innerText.trim().length")
            if words < (20 if rel in ("search.html", "genindex.html", "py-modindex.html") else 200):
                problems.append(f"{rel}: empty page ({words} characters)")
            broken = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
            )
            problems += [f"{rel}: image not shown {src}" for src in broken]
            problems[before:] = [f"{rel}: {p}" if not p.startswith(rel) else p for p in problems[before:]]
            if rel == "index.html":
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "book-landing.png"))
            elif rel in ("notebooks/01_gating.html", "glossary.html"):
                page.screenshot(path=str(ARTIFACTS / f"book-{path.stem}.png"))
        browser.close()
    assert not problems, problems[:20]
    assert not outside, f"the site fetched from outside itself: {outside[:10]}"


@pytest.mark.browser
def test_each_course_notebook_shows_its_zh_summary_first_its_math_and_copy_buttons(server: str):
    require_browser()
    from playwright.sync_api import sync_playwright

    late = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for name in COURSE:
            page.goto(f"{server}notebooks/{name}.html")
            box = page.locator(".moe-zh-summary")
            if box.count() != 1:
                late.append(f"{name}: {box.count()} summary boxes")
                continue
            top = box.evaluate("e => e.getBoundingClientRect().top")
            lang = box.get_attribute("lang")
            text = box.inner_text()
            if top > 900 or lang != "zh-Hant-TW" or "中文導讀" not in text:
                late.append(f"{name}: top {top:.0f} px, lang {lang}, text {text[:20]!r}")
            # math is typeset (no raw \( left), and every code cell has its copy button
            page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise")
            page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
            raw_math = page.evaluate("() => (document.querySelector('main').innerText.match(/\\\\\\(/g) || []).length")
            cells = page.locator("div.cell_input").count()
            buttons = page.locator("div.cell_input button.copybtn").count()
            if raw_math or buttons != cells or not cells:
                late.append(f"{name}: {raw_math} raw \\( left, {buttons} copy buttons for {cells} code cells")
        browser.close()
    assert not late, late


def search(page, server: str, query: str) -> list[str]:
    """The result links of the site's search page for `query` (Sphinx's client-side index)."""
    page.goto(f"{server}search.html?q={query}")
    page.wait_for_function(  # results arrive page by page: wait for the summary line that ends the search
        "() => /Search finished/.test((document.querySelector('#search-results') || {}).innerText || '')",
        timeout=30_000,
    )
    return page.eval_on_selector_all("#search-results li a", "as => as.map(a => a.getAttribute('href'))")


@pytest.mark.browser
def test_search_finds_chinese_and_english_terms(server: str):
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        zh = search(page, server, "專家")
        summaries = page.inner_text("#search-results")
        assert "Run it locally" not in summaries, "a result's summary quotes the page bar, not the page"
        page.screenshot(path=str(ARTIFACTS / "book-search-zh.png"))
        en = search(page, server, "load balancing")
        browser.close()
    print(f"\n[book] search 專家: {len(zh)} results; 'load balancing': {len(en)} results")
    assert any(h.startswith("glossary.html") for h in zh), zh[:10]
    assert any(h.startswith("notebooks/05_mixtral_smoe_block.html") for h in zh), zh[:10]
    assert any(h.startswith("notebooks/07_load_balancing_and_training.html") for h in en), en[:10]


@pytest.mark.browser
def test_explorer_runs_in_the_page_without_a_kernel(server: str):
    """The book's explorer page: every preset driven (k changes the bands and the card's weights, the card is
    whole, keyboard selection, flow lines), a typed text routed by the model in the page, no kernel, no
    websocket, nothing from outside the site, no console error."""
    require_browser()
    from playwright.sync_api import sync_playwright
    from site_explorer_checks import check_site_explorer, route_typed_text, watch_page

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        watch = watch_page(page)
        page.goto(f"{server}explorer.html")
        summaries = check_site_explorer(page, artifacts=ARTIFACTS, prefix="book-explorer")
        typed = route_typed_text(page, "專家 route tokens 🙂")
        page.locator(".moe-site-explorer").screenshot(path=str(ARTIFACTS / "book-explorer.png"))
        browser.close()
    print(
        f"\n[book] explorer: {len(summaries)} presets driven; typed text routed into {len(typed['token_ids'])} tokens"
    )
    assert len(summaries) == 6 and typed["token_ids"]
    assert not watch.problems(allowed_hosts=("127.0.0.1",)), watch.problems(allowed_hosts=("127.0.0.1",))
    assert not any(u for u in watch.requests if not u.startswith((server, "data:"))), watch.requests


def test_a_class_can_build_the_site_without_the_solutions(tmp_path: Path):
    """`--no-solutions` stages no solution render and says where instructors find them (Sphinx is not run:
    the staged sources are what it would publish)."""
    require_mathjax()
    build_book.stage(tmp_path / "src", solutions=False)
    staged = {p.relative_to(tmp_path / "src").as_posix() for p in (tmp_path / "src").rglob("*.ipynb")}
    assert not any("solutions" in p for p in staged), sorted(staged)
    assert {f"notebooks/exercises/{n}.ipynb" for n in EXERCISES} <= staged
    assert "built without the solution renders" in (tmp_path / "src" / "solutions.md").read_text(encoding="utf-8")

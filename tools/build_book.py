"""Build the course website into _build/book/html (`make book`), offline, without executing a notebook.

    python tools/build_book.py              # stage the sources, then run Sphinx
    python tools/build_book.py --out DIR    # build into DIR/html instead (the stage goes to DIR/src)
    python tools/build_book.py --no-solutions   # a site for a class: the exercises without their solutions

The sources are staged in a git-ignored folder, never written into the tree: book/ (the Sphinx
configuration, the landing page, the site's CSS and extension), the committed notebooks as they are
(course notebooks, exercise student renders and solution renders, the instructors' guides), and the
generated pages (glossary, library reference, the in-page routing explorer and its data).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from book_pages import explorer_page, notebook_names, write_pages  # noqa: E402 (tools/ is not a package)

from moe_edu.course.site_explorer import write_site_explorer  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
# what the site shows of notebooks/: the course, the exercises (student and solution renders), the guides
STAGED = ["[0-9][0-9]_*.ipynb", "exercises/ex[0-9][0-9]_*.ipynb", "exercises/solutions/ex*.ipynb", "exercises/*.md"]
SOLUTIONS = "exercises/solutions/ex*.ipynb"
# the Solutions page of a site built for a class (--no-solutions): the students read this site too
NO_SOLUTIONS = """# Solutions

This copy of the course was built without the solution renders (`make book BOOK_FLAGS=--no-solutions`), so
that a class can read it while the exercises are graded. Instructors find them in the course repository,
`notebooks/exercises/solutions/`.
"""


# MathJax 3 as npm ships it (book/package.json, `npm ci --prefix book`): the combined TeX + CommonHTML
# file, its fonts, and what it loads on demand (TeX extensions, the menu, the accessibility tools)
MATHJAX = ROOT / "book" / "node_modules" / "mathjax" / "es5"
MATHJAX_PARTS = ["tex-chtml.js", "input", "output/chtml", "ui", "a11y", "sre", "adaptors"]


def copy_mathjax(static: Path) -> None:
    """MathJax into the site's _static/mathjax (the site serves it itself)."""
    if not (MATHJAX / "tex-chtml.js").is_file():
        sys.exit(f"build_book: MathJax is missing ({MATHJAX}); run `npm ci --prefix book` (make book does)")
    for part in MATHJAX_PARTS:
        source, target = MATHJAX / part, static / "mathjax" / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)


MARKER = ".moe_edu-book"  # marks a build folder as this script's: only such a folder is ever emptied


def claim(out: Path) -> None:
    """Make `out` this script's build folder; refuse a folder with other content, so nothing else is deleted."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        sys.exit(f"build_book: --out {out} is not empty and was not made by build_book; pick another folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by tools/build_book.py; its src/, html/ and doctrees/ are rebuilt\n")


def stage(src: Path, solutions: bool = True) -> None:
    """Fill `src` with everything Sphinx reads (`solutions`: the exercises' solution renders too)."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "book", src, ignore=shutil.ignore_patterns("node_modules", "package*.json"))
    for pattern in STAGED if solutions else [p for p in STAGED if p != SOLUTIONS]:
        for path in sorted(NOTEBOOKS.glob(pattern)):
            target = src / "notebooks" / path.relative_to(NOTEBOOKS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    write_pages(src, notebook_names(NOTEBOOKS))
    if not solutions:
        (src / "solutions.md").write_text(NO_SOLUTIONS, encoding="utf-8")
    copy_mathjax(src / "_static")
    write_explorer(src)


def write_explorer(src: Path) -> None:
    """The in-page routing explorer: its data, scripts and model file in _static, and its page."""
    write_site_explorer(src / "_static")
    (src / "explorer.md").write_text(explorer_page(), encoding="utf-8")


def build(out: Path, jobs: str = "auto", strict: bool = False, solutions: bool = True) -> Path:
    """Stage into out/src and build HTML into out/html; returns the HTML folder. `strict`: a Sphinx warning
    (a docstring that is not valid reST, a broken cross-reference, a missing file) fails the build."""
    try:
        from sphinx.cmd.build import build_main
    except ImportError:
        sys.exit("build_book: Sphinx is not installed (make install adds it; the website needs Python >= 3.11)")
    src, html = out / "src", out / "html"
    claim(out)
    for stale in (html, out / "doctrees"):  # a clean build: no page or asset of an older build survives
        if stale.exists():
            shutil.rmtree(stale)
    stage(src, solutions)
    options = ["-b", "html", "-q", "-j", jobs, "-d", str(out / "doctrees")] + (["-W", "--keep-going"] if strict else [])
    code = build_main([*options, str(src), str(html)])
    if code:
        sys.exit(f"build_book: sphinx-build failed with exit code {code}")
    return html


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "book", help="build folder (git-ignored)")
    parser.add_argument("--jobs", default="auto", help="Sphinx's -j (processes)")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning (the tests build so)")
    parser.add_argument("--no-solutions", action="store_true", help="leave out the exercises' solution renders")
    args = parser.parse_args(argv)
    if args.out.resolve() in (ROOT, ROOT / "book", NOTEBOOKS) or args.out.resolve() in ROOT.parents:
        parser.error(f"--out {args.out} would overwrite the sources; pick a build folder")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    start = time.monotonic()
    try:
        html = build(args.out.resolve(), args.jobs, args.strict, solutions=not args.no_solutions)
    except OSError as err:
        parser.exit(1, f"build_book: cannot write {err.filename or args.out}: {err.strerror or err}\n")
    size = sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    pages = sum(1 for _ in html.rglob("*.html"))
    print(f"book: {pages} pages, {size / 1e6:.1f} MB in {html} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()

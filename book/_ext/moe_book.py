"""The course website's own Sphinx touches (loaded by book/conf.py).

- Each course notebook's zh-TW summary box (the blockquote that opens with **中文導讀**) is moved
  right under the page title and framed, so a Traditional Chinese reader finds it first.
- Search splits Chinese into words (jieba) and stems English (see `SearchZh`).
- Each notebook page opens with a bar: download this notebook, how to run it locally, and for an
  exercise, the link between its student render and its solution render.
"""

from __future__ import annotations

from html import escape

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.search import languages
from sphinx.search.zh import SearchChinese

ZH_MARK = "中文導讀"
EXERCISES = "notebooks/exercises/"
SOLUTIONS = "notebooks/exercises/solutions/"


def is_zh_summary(node: nodes.Node) -> bool:
    """A blockquote whose first paragraph starts with the bold words 中文導讀."""
    if not isinstance(node, nodes.block_quote) or not node.children:
        return False
    first = node.children[0]
    if not isinstance(first, nodes.paragraph):
        return False
    lead = next((c for c in first.children if not (isinstance(c, nodes.Text) and not c.strip())), None)
    return isinstance(lead, nodes.strong) and lead.astext().strip() == ZH_MARK


def zh_summary_first(app: Sphinx, doctree: nodes.document) -> None:
    """Move the zh-TW summary under the page's title, framed in a box marked lang="zh-Hant-TW"."""
    box = next(iter(doctree.findall(is_zh_summary)), None)
    section = next(iter(doctree.findall(nodes.section)), None)
    if box is None or section is None:
        return
    box.parent.remove(box)
    title_at = next((i for i, c in enumerate(section.children) if isinstance(c, nodes.title)), -1)
    opening = nodes.raw(
        "",
        '<div class="moe-zh-summary" lang="zh-Hant-TW" role="note" aria-label="中文導讀 (zh-TW summary)">',
        format="html",
    )
    closing = nodes.raw("", "</div>", format="html")
    for offset, node in enumerate((opening, box, closing), start=1):
        section.insert(title_at + offset, node)


def drop_empty_outputs(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """A widget's output shows its static twin on the page; the widget's own (empty) text output would be an
    empty box under it: drop it, and the output container it leaves empty."""
    for block in list(doctree.findall(nodes.literal_block)):
        if "output" in block.get("classes", []) and not block.astext().strip():
            parent = block.parent
            parent.remove(block)
            while parent is not None and parent.parent is not None and not parent.children:
                parent, child = parent.parent, parent
                parent.remove(child)


def page_bar(app: Sphinx, pagename: str, context: dict) -> str:
    """HTML of the bar above a notebook page: download, run locally, student <-> solution."""
    pathto = context["pathto"]
    notebook = pagename.removeprefix("notebooks/") + ".ipynb"
    items = [
        f'<a class="moe-download" href="{escape(pathto("_sources/" + pagename + ".ipynb", 1))}" '
        f'download="{escape(notebook.rsplit("/", 1)[-1])}">Download this notebook</a>',
        f"Run it locally: clone the course, <code>make lab</code>, open <code>notebooks/{escape(notebook)}</code>",
    ]
    name = pagename.rsplit("/", 1)[-1]
    if pagename.startswith(SOLUTIONS):
        items.append(f'<a href="{escape(pathto(EXERCISES + name))}">Student version</a>')
    elif pagename.startswith(EXERCISES) and SOLUTIONS + name in app.env.found_docs:
        items.append(f'<a href="{escape(pathto(SOLUTIONS + name))}">Solutions</a>')
    # class "headerlink": Sphinx's search leaves such elements out of its result summaries (searchtools.js), so a
    # summary quotes the page, not this bar; the themes style only `a.headerlink`, so the bar looks as it should
    bar = '<nav class="moe-page-bar headerlink" aria-label="This notebook">' + " · ".join(items) + "</nav>"
    return bar


def add_page_bar(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: nodes.document) -> None:
    """Put the bar at the top of every page built from a notebook."""
    if doctree is None or not pagename.startswith("notebooks/"):
        return
    if app.env.doc2path(pagename).suffix != ".ipynb":
        return
    body = context.get("body", "")
    bar = page_bar(app, pagename, context)
    if "moe-explorer-static" in body:  # the notebook's explorer is a static picture here: point to the live one
        live = f' · <a href="{escape(context["pathto"]("explorer"))}">The explorer, live in this site</a>'
        bar = bar.replace("</nav>", live + "</nav>")
    context["body"] = bar + body


def as_rst(lines: list[str]) -> list[str]:
    """The library's docstrings are plain text written like Markdown; the few constructs they use, made
    reStructuredText: a table or an indented example becomes a literal block, a list gets the blank
    lines around it that reST needs, and an indented continuation line joins its paragraph."""
    out: list[str] = []
    block = in_list = False  # inside a literal block / a "- " list
    for line in lines:
        blank, indented = not line.strip(), line.startswith("  ")
        previous_blank = not out or not out[-1].strip()
        if block and (blank or indented or line.startswith("|")):
            out.append("    " + line if line.startswith("|") else line)
            continue
        block = False
        if line.startswith("|") or (line.startswith("    ") and previous_blank and not in_list):
            announced = any(x.strip() for x in out) and [x for x in out if x.strip()][-1].endswith("::")
            opening = [] if announced else ([] if previous_blank else [""]) + ["::", ""]
            out += [*opening, "    " + line if line.startswith("|") else line]
            block = True
        elif line.startswith("- "):
            out += ([] if previous_blank or in_list else [""]) + [line]
            in_list = True
        elif in_list and indented:
            out.append(line)
        elif indented and not previous_blank:
            out[-1] += " " + line.strip()
        else:
            if in_list and not blank:
                out.append("")
            in_list = False
            out.append(line)
    lines[:] = out
    return out


def docstring_as_rst(app: Sphinx, what: str, name: str, obj: object, options: dict, lines: list[str]) -> None:
    as_rst(lines)


class SearchZh(SearchChinese):
    """Sphinx's Chinese search (jieba for Chinese words, the English stemmer for Latin ones), with its script
    named right: Sphinx 9.0 publishes `window.Stemmer = ChineseStemmer`, a name its english-stemmer.js does
    not define, so every page threw a ReferenceError and search found nothing."""

    language_name = "English"


def setup(app: Sphinx) -> dict:
    languages["zh"] = SearchZh
    app.connect("autodoc-process-docstring", docstring_as_rst)
    app.connect("doctree-resolved", drop_empty_outputs)
    app.connect("doctree-read", zh_summary_first)
    app.connect("html-page-context", add_page_bar)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

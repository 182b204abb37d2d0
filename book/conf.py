"""Sphinx configuration of the course website: `make book` (tools/build_book.py stages this folder
with the committed notebooks and the generated pages, then runs Sphinx on the staged copy).

The site is what Jupyter Book 1.x builds, without its wrapper: Sphinx + MyST-NB + sphinx-book-theme.
It builds offline: the notebooks are not re-executed (nbval checks their committed outputs), MathJax
is served from the site itself, and no widget JavaScript is fetched from a CDN.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the staged source folder
sys.path.insert(0, str(HERE / "_ext"))

project = "moe_edu"
author = "the moe_edu authors"
copyright = "2026, the moe_edu authors"
language = "en"

extensions = [
    "myst_nb",  # notebooks and Markdown pages (MyST)
    "sphinx_copybutton",  # a copy button on every code cell
    "sphinx.ext.autodoc",  # the library reference, from its docstrings
    "sphinx.ext.mathjax",
    "moe_book",  # the zh-TW summary boxes, the per-page download / run-locally bar
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "jieba_dict.txt"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3

# notebooks: shown as committed, never executed here
nb_execution_mode = "off"
nb_ipywidgets_js: dict = {}  # no require.js / widget manager from a CDN: the static twins show instead
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "moe_edu · sparse mixtures of experts"
html_static_path = ["_static"]
html_css_files = ["moe_book.css"]
html_favicon = "_static/favicon.svg"
html_copy_source = True  # the download button serves the notebook itself
html_sourcelink_suffix = ""  # _sources/x.ipynb, not x.ipynb.txt
html_theme_options = {
    "use_download_button": True,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
    "show_toc_level": 2,
}
html_context = {"default_mode": "auto"}  # light or dark as the reader's system says

import jieba  # noqa: E402 (after the path set-up above)

jieba.setLogLevel(30)  # its "Building prefix dict" chatter is not a build message
# full-text search with Chinese words (jieba, plus the glossary's terms as a user dictionary)
html_search_language = "zh"
html_search_options = {"dict": str(HERE / "jieba_dict.txt")}

# MathJax 3 from the site's own _static (npm's mathjax, copied by tools/build_book.py): no CDN
mathjax_path = "mathjax/tex-chtml.js"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# the docstrings are written as Markdown-ish plain text: `name` means code there, as it does here
default_role = "code"
# `Tokenizer` in a signature is both moe_edu.tokenizer.Tokenizer and the widgets' Protocol of that name
suppress_warnings = ["ref.python"]

"""The course website's generated pages: the glossary, the library reference, the search dictionary.

Called by tools/build_book.py into its staged source folder (nothing here writes into the tree).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import moe_edu
from moe_edu.course.glossary import GLOSSARY, SYSTEMS_USAGE, TAIWAN_USAGE
from moe_edu.course.site_explorer import site_explorer_html

HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")  # runs of CJK ideographs
# the library reference: one page per part, in the order DESIGN.md describes them
PARTS = {
    "core": "The layer, the model and what they are made of",
    "variants": "Other routers and MoE layers (notebook 09)",
    "io": "Checkpoints: loading, saving, the shipped files",
    "training": "The training loop, its data and run folders",
    "serving": "Memory, expert caches, offloading, quantisation (notebook 11)",
    "adapting": "Upcycling, fine-tuning, pruning (notebook 12)",
    "experiments": "The commands that regenerate the shipped results",
    "course": "Plots, widgets, exercise checkers and the glossary",
}


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def notebook_links(numbers: str, notebooks: dict[str, str]) -> str:
    """'00, 05' -> links to those course notebooks' pages."""
    out = []
    for n in (s.strip() for s in numbers.split(",")):
        out.append(f"[{n}](notebooks/{notebooks[n]}.ipynb)" if n in notebooks else n)
    return ", ".join(out)


def code_link(code: str) -> str:
    """The code column: a link to the reference page when it starts with a name moe_edu exports."""
    name = re.match(r"[A-Za-z_]\w*", code)
    obj = getattr(moe_edu, name[0], None) if name else None
    module = getattr(obj, "__module__", "") or ""
    if obj is None or not module.startswith("moe_edu") or not hasattr(obj, "__qualname__"):
        return f"`{cell(code)}`"
    target = f"{module}.{obj.__qualname__}"
    return f"{{py:obj}}`{cell(code)} <{target}>`"


def glossary_page(notebooks: dict[str, str]) -> str:
    """Markdown of the glossary page: every term, zh-TW <-> English, the notebook and the code."""
    rows = [
        "| 中文（臺灣用語） | English | meaning | notebook | where in code | also written |",
        "|---|---|---|---|---|---|",
    ]
    for t in GLOSSARY:
        also = "、".join(n for n in t.names if n != t.preferred)
        rows.append(
            f"| {cell(t.preferred)} | {cell(t.english)} | {cell(t.meaning)} | "
            f"{notebook_links(t.notebook, notebooks)} | {code_link(t.code)} | {cell(also)} |"
        )
    usage = ["| 中國大陸用語 | 臺灣用語 | English | example |", "|---|---|---|---|"]
    usage += [
        f"| {cell(u.mainland)} | {cell(u.taiwan)} | {cell(u.english)} | {cell(u.example)} |"
        for u in TAIWAN_USAGE + SYSTEMS_USAGE
    ]
    return "\n".join(
        [
            "---",
            "html_theme.sidebar_secondary.remove: true",  # the table needs the page's whole width
            "---",
            "# Glossary · 術語表",
            "",
            "Every term of the course in Traditional Chinese (Taiwan usage) and English, the notebook that",
            "teaches it and the code that implements it. Generated from `moe_edu.course.glossary`, the table",
            "notebook 00 shows and the later notebooks quote.",
            "",
            "本課程所有術語的中英對照（臺灣用語）、教授該概念的章節，以及實作它的程式碼。",
            "",
            ":::{table} The course's terms",
            ":class: moe-glossary",
            "",
            *rows,
            ":::",
            "",
            "## Taiwan usage · 臺灣用語",
            "",
            "The seed article and other Chinese MoE material sometimes use Mainland forms; the course writes",
            "the Taiwan form.",
            "",
            *usage,
            "",
        ]
    )


def explorer_page() -> str:
    """Markdown of the in-page routing explorer's page (its assets are in _static, beside the page)."""
    return "\n".join(
        [
            "# Routing explorer · 路由探索",
            "",
            "Which experts does each token go to? The shipped tiny Mixtral (4 layers, 8 experts, top-2; notebook",
            "07 shows its training) routed each preset text when this site was built; every layer's 8 router",
            "probabilities per token are in the page, and everything below runs in your browser, with no",
            "Python behind it. Pick a text and a layer, move **k**: each token's colour bands are its top-k",
            "experts, as tall as their renormalised weights. Hover over (or tap, or Tab to) a token for its",
            "card: the router's softmax over the 8 experts, the top-k outlined, the probability mass kept,",
            "and the weights after renormalising. *Route my text* runs the model itself in the page",
            "(a 6 MB download, on first use). [Notebook 06](notebooks/06_routing_explorer.ipynb) builds",
            "the same views in Python, with more of them.",
            "",
            "> **中文導讀**　每個 token 會被送到哪些專家？下方的文字以已訓練的小型 Mixtral 路由：",
            "> 色帶是該 token 的前 k 個專家，高度為重新正規化後的權重。移動 k、切換層，",
            "> 將滑鼠移到 token 上（或點選、用 Tab 鍵）即可看到路由網路的 softmax 機率。全部在瀏覽器中執行。",
            "",
            "```{raw} html",
            site_explorer_html("_static/"),
            "```",
            "",
        ]
    )


def search_dictionary() -> str:
    """A jieba user dictionary: each Chinese run of every glossary name, so search keeps the terms whole."""
    words: dict[str, None] = {}
    for t in GLOSSARY:
        for name in t.names:
            words.update(dict.fromkeys(w for w in HAN.findall(name) if len(w) > 1))
    for u in TAIWAN_USAGE + SYSTEMS_USAGE:
        words.update(dict.fromkeys(w for w in HAN.findall(u.taiwan + " " + u.mainland) if len(w) > 1))
    return "".join(f"{w} 100000\n" for w in words)


def modules(part: str) -> dict[str, bool]:
    """{module: is a package} for the modules documented on a part's reference page."""
    if part == "core":
        core = (m.name for m in pkgutil.iter_modules(moe_edu.__path__) if not m.ispkg and m.name != "train")
        return {f"moe_edu.{name}": False for name in sorted(core)}
    package = importlib.import_module(f"moe_edu.{part}")
    found = {m.name: m.ispkg for m in pkgutil.walk_packages(package.__path__, f"moe_edu.{part}.")}
    return {f"moe_edu.{part}": True} | {n: found[n] for n in sorted(found) if not n.endswith("__main__")}


def api_pages() -> dict[str, str]:
    """{file name: Markdown} of the library reference: an index and one page per part."""
    pages = {}
    index = [
        "# Library reference",
        "",
        "Generated from the docstrings of `moe_edu`. The root package exports the stable API "
        "(`moe_edu.SparseMoeBlock`, `moe_edu.MixtralConfig`, ...); each name is documented where it is defined.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *PARTS,
        "```",
        "",
    ]
    pages["index.md"] = "\n".join(index)
    for part, about in PARTS.items():
        title = "moe_edu (core)" if part == "core" else f"moe_edu.{part}"
        lines = [f"# {title}", "", about + ".", ""]
        for name, is_package in modules(part).items():
            # a package's entry is its docstring: its names are documented in the modules that define them
            members = "   :no-members:" if is_package else ""
            lines += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", members, "```", ""]
        pages[f"{part}.md"] = "\n".join(lines)
    return pages


def write_pages(stage: Path, notebooks: dict[str, str]) -> None:
    """Write the glossary, the reference pages and the search dictionary into the staged sources."""
    (stage / "glossary.md").write_text(glossary_page(notebooks), encoding="utf-8")
    (stage / "jieba_dict.txt").write_text(search_dictionary(), encoding="utf-8")
    (stage / "api").mkdir(exist_ok=True)
    for name, text in api_pages().items():
        (stage / "api" / name).write_text(text, encoding="utf-8")


def notebook_names(folder: Path) -> dict[str, str]:
    """{'01': '01_gating', ...} for the course notebooks in `folder`."""
    return {p.stem[:2]: p.stem for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}

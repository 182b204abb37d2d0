"""Freeze the standard-library part of the training corpus into the package.

    PYENV_VERSION=3.11.7 pyenv exec python tools/freeze_stdlib_corpus.py

The shipped checkpoint was trained on documents extracted from CPython 3.11.7's standard
library: one ``python`` document per top-level function or class (docstrings removed with
`ast.unparse`), one ``english`` document per docstring of at least 80 characters. Reading the
*running* interpreter's library made the corpus change with every Python version, so the
extracted documents are written once, here, to ``moe_edu/data/stdlib_cpython_3.11.7.jsonl``
(one JSON object per line), beside CPython's licence (``moe_edu/data/PSF_LICENSE.txt``).
`moe_edu.data.corpus.build_corpus` reads only those shipped files.

Run it only with CPython 3.11.7 (it refuses another version): any other interpreter would
write a different corpus and the shipped checkpoint would no longer be reproducible.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "moe_edu" / "data" / "stdlib_cpython_3.11.7.jsonl"
LICENSE_OUT = ROOT / "moe_edu" / "data" / "PSF_LICENSE.txt"
VERSION = (3, 11, 7)

# Fixed list of stdlib modules the corpus was built from (all present in 3.10 to 3.13).
STDLIB_FILES = (
    "textwrap.py",
    "string.py",
    "heapq.py",
    "bisect.py",
    "fractions.py",
    "statistics.py",
    "calendar.py",
    "difflib.py",
    "shlex.py",
    "queue.py",
    "functools.py",
    "dataclasses.py",
    "argparse.py",
    "json/decoder.py",
    "json/encoder.py",
    "csv.py",
    "fnmatch.py",
    "glob.py",
    "colorsys.py",
    "random.py",
    "pprint.py",
    "contextlib.py",
    "copy.py",
    "graphlib.py",
    "numbers.py",
    "sched.py",
    "tempfile.py",
    "shutil.py",
    "tokenize.py",
    "gettext.py",
    "cmd.py",
    "html/parser.py",
    "configparser.py",
    "ipaddress.py",
    "base64.py",
    "reprlib.py",
    "timeit.py",
    "traceback.py",
    "weakref.py",
)


def strip_docstrings(tree: ast.AST) -> list[str]:
    """Remove every docstring from `tree` in place; return them, cleaned, in source order."""
    docs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            text = ast.get_docstring(node, clean=True) or ""
            lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith((">>>", "..."))]
            docs.append("\n".join(lines).strip())
            node.body = body[1:] or [ast.Pass()]
    return docs


def extract(root: Path) -> list[dict[str, str]]:
    """python documents first (file by file), then english ones, as the corpus orders them."""
    code, prose = [], []
    for name in STDLIB_FILES:
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        for i, doc in enumerate(strip_docstrings(tree)):
            if len(doc) >= 80:  # short one-liners ("Return x.") teach little prose
                prose.append({"domain": "english", "text": doc, "source": f"stdlib:{name}#doc{i}"})
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                text = ast.unparse(node)
                if len(text) >= 80:
                    code.append({"domain": "python", "text": text, "source": f"stdlib:{name}:{node.name}"})
    return code + prose


def main() -> None:
    if sys.implementation.name != "cpython" or sys.version_info[:3] != VERSION:
        sys.exit(f"run this with CPython {'.'.join(map(str, VERSION))}, not {sys.version.split()[0]}")
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = extract(root)
    with OUT.open("w", encoding="utf-8", newline="\n") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    shutil.copyfile(root / "LICENSE.txt", LICENSE_OUT)
    print(f"wrote {len(docs)} documents to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

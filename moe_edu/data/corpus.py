"""A small multi-domain corpus that needs no network: one domain label per document.

Mixtral's §5 asks whether experts specialise by topic, using the Pile's domains (ArXiv,
GitHub, DM Mathematics, ...). We build a laptop-sized stand-in, deterministically, from
files shipped in this folder only:

- ``python``  code from a fixed list of CPython 3.11.7 standard-library modules, one
  document per top-level function or class, docstrings removed (via `ast.unparse`, so
  comments go too);
- ``english`` the docstrings of those same modules (English prose about code);
- ``math``    synthetic arithmetic questions and answers, like DM Mathematics;
- ``french`` / ``german`` / ``spanish`` / ``italian`` / ``zh-TW``  short pages written for
  this project (`moe_edu/data/*.txt`), one document per paragraph; ``zh-TW`` is Traditional
  Chinese in Taiwan usage (the seed article's readers), so Chinese text gets real BPE tokens.

The first two were extracted once by `tools/freeze_stdlib_corpus.py` and are shipped as
``stdlib_cpython_3.11.7.jsonl``: reading the *running* interpreter's library made the corpus
(and everything trained on it) change with every Python version. Now `build_corpus()` returns
the same documents on every interpreter.

Licences: the Python standard library is © Python Software Foundation under the PSF
License Agreement (``PSF_LICENSE.txt``, shipped beside the extract). The language pages
are original text released with this project under its Apache-2.0 licence. The arithmetic
is generated.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
STDLIB_EXTRACT = DATA_DIR / "stdlib_cpython_3.11.7.jsonl"
DOMAINS = ("python", "english", "math", "french", "german", "spanish", "italian", "zh-TW")
LANGUAGES = ("french", "german", "spanish", "italian", "zh-TW")


@dataclass(frozen=True)
class Document:
    """One piece of text with its domain label and where it came from."""

    domain: str
    text: str
    source: str


def stdlib_documents(files: tuple[str, ...] | None = None) -> tuple[list[Document], list[Document]]:
    """(python, english) documents from the shipped CPython 3.11.7 standard-library extract.

    `files` (e.g. ``("heapq.py", "json/decoder.py")``) keeps only those modules, in that order;
    by default every module of the extract, in the order the checkpoint was trained on.
    """
    code, prose = [], []
    with STDLIB_EXTRACT.open(encoding="utf-8") as f:
        for line in f:
            doc = Document(**json.loads(line))
            (code if doc.domain == "python" else prose).append(doc)
    if files is None:
        return code, prose
    module = lambda doc: doc.source.removeprefix("stdlib:").split(":")[0].split("#")[0]
    known = {module(d) for d in code + prose}
    unknown = [name for name in files if name not in known]
    if unknown:
        raise ValueError(f"files not in the shipped standard-library extract: {unknown}; choose from {sorted(known)}")
    pick = lambda docs: [d for name in files for d in docs if module(d) == name]
    return pick(code), pick(prose)


def _math_problem(rng: random.Random) -> str:
    """One question and answer in the style of DeepMind's Mathematics dataset."""
    kind = rng.randrange(7)
    a, b = rng.randint(-999, 999), rng.randint(-999, 999)
    if kind == 0:
        return f"What is {a} + {b}?\nAnswer: {a + b}"
    if kind == 1:
        return f"Calculate {a} - {b}.\nAnswer: {a - b}"
    if kind == 2:
        a, b = rng.randint(-99, 99), rng.randint(-99, 99)
        return f"What is {a} times {b}?\nAnswer: {a * b}"
    if kind == 3:
        n, d = rng.randint(10, 9999), rng.randint(2, 50)
        return f"What is the remainder when {n} is divided by {d}?\nAnswer: {n % d}"
    if kind == 4:
        x, p, q = rng.randint(-20, 20), rng.randint(2, 12), rng.randint(-50, 50)
        return f"Solve {p}*x + {q} = {p * x + q} for x.\nAnswer: {x}"
    if kind == 5:
        return f"Which is bigger: {a} or {b}?\nAnswer: {max(a, b)}"
    return _gcd_problem(rng)


def _gcd_problem(rng: random.Random) -> str:
    g, x, y = rng.randint(2, 30), rng.randint(2, 40), rng.randint(2, 40)
    return f"Calculate the greatest common divisor of {g * x} and {g * y}.\nAnswer: {math.gcd(g * x, g * y)}"


def math_documents(n: int = 600, per_doc: int = 8, seed: int = 0) -> list[Document]:
    """`n` documents of `per_doc` arithmetic questions each, from a seeded generator."""
    if n <= 0 or per_doc <= 0:
        raise ValueError(f"math_documents needs n > 0 and per_doc > 0, got n={n}, per_doc={per_doc}")
    rng = random.Random(seed)
    return [Document("math", "\n\n".join(_math_problem(rng) for _ in range(per_doc)), f"math:{i}") for i in range(n)]


def language_documents(language: str) -> list[Document]:
    """One document per paragraph of `moe_edu/data/<language>.txt`."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    text = (DATA_DIR / f"{language}.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip() and not p.startswith("#")]
    return [Document(language, p, f"{language}.txt#{i}") for i, p in enumerate(paragraphs)]


def build_corpus(seed: int = 0, math_docs: int = 600) -> list[Document]:
    """Every document of every domain, in a fixed order (domain by domain)."""
    code, prose = stdlib_documents()
    docs = code + prose + math_documents(math_docs, seed=seed)
    for lang in LANGUAGES:
        docs += language_documents(lang)
    return docs


def corpus_sha256(docs: list[Document]) -> str:
    """A fingerprint of `docs` (domain, text and source of each, in order); `train_log.json` records it."""
    rows = json.dumps([[d.domain, d.text, d.source] for d in docs])
    return hashlib.sha256(rows.encode()).hexdigest()


def split_corpus(docs: list[Document], every: int = 6) -> tuple[list[Document], list[Document]]:
    """(train, held_out): every `every`-th document of each domain is held out (index % every == every-1)."""
    if every < 2:
        raise ValueError(f"split_corpus needs every >= 2, got {every}")
    train, held = [], []
    seen: dict[str, int] = {}
    for doc in docs:
        i = seen.get(doc.domain, 0)
        seen[doc.domain] = i + 1
        (held if i % every == every - 1 else train).append(doc)
    return train, held


def by_domain(docs: list[Document]) -> dict[str, list[Document]]:
    """Group documents by domain, in DOMAINS order (domains without documents are left out)."""
    groups: dict[str, list[Document]] = {d: [] for d in DOMAINS}
    for doc in docs:
        if doc.domain not in groups:
            raise ValueError(f"unknown domain {doc.domain!r}; expected one of {DOMAINS}")
        groups[doc.domain].append(doc)
    return {d: g for d, g in groups.items() if g}

"""The offline corpus: deterministic, labelled, split without overlap, correct arithmetic."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import moe_edu.data.corpus as corpus_module
from moe_edu.data.corpus import (
    DOMAINS,
    LANGUAGES,
    Document,
    build_corpus,
    by_domain,
    language_documents,
    math_documents,
    split_corpus,
)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def test_every_domain_present_and_labelled(corpus):
    groups = by_domain(corpus)
    assert list(groups) == list(DOMAINS)
    for domain, docs in groups.items():
        assert len(docs) >= 10, domain
        assert all(d.domain == domain and d.text.strip() for d in docs)


def test_deterministic(corpus):
    assert build_corpus() == corpus


def test_split_is_disjoint_and_covers_every_domain(corpus):
    train, held = split_corpus(corpus)
    assert len(train) + len(held) == len(corpus)
    assert not {d.source for d in train} & {d.source for d in held}
    assert set(by_domain(held)) == set(DOMAINS) == set(by_domain(train))


def test_python_documents_are_code_without_docstrings(corpus):
    code = by_domain(corpus)["python"]
    assert all(re.match(r"(async def|def|class|@)", d.text) for d in code)
    prose = by_domain(corpus)["english"]
    assert not any(d.text in c.text for d in prose[:50] for c in code[:50])


def test_math_answers_are_right():
    docs = math_documents(20, seed=3)
    assert docs == math_documents(20, seed=3) and docs != math_documents(20, seed=4)
    checked = 0
    for doc in docs:
        for problem in doc.text.split("\n\n"):
            m = re.fullmatch(r"What is (-?\d+) \+ (-?\d+)\?\nAnswer: (-?\d+)", problem)
            if m:
                assert int(m[1]) + int(m[2]) == int(m[3])
                checked += 1
            m = re.fullmatch(r"Solve (\d+)\*x \+ (-?\d+) = (-?\d+) for x\.\nAnswer: (-?\d+)", problem)
            if m:
                assert int(m[1]) * int(m[4]) + int(m[2]) == int(m[3])
                checked += 1
    assert checked > 5


def test_language_pages_are_in_their_language():
    markers = {"french": " les ", "german": " und ", "spanish": " los ", "italian": " il ", "zh-TW": "的"}
    for lang in LANGUAGES:
        docs = language_documents(lang)
        assert len(docs) >= 10
        assert sum(markers[lang] in d.text for d in docs) >= len(docs) // 2, lang


def test_zh_tw_page_is_traditional_chinese_and_at_least_as_long_as_every_other_page():
    zh = language_documents("zh-TW")
    chars = {lang: sum(len(d.text) for d in language_documents(lang)) for lang in LANGUAGES}
    assert chars["zh-TW"] >= max(chars.values()), chars  # in characters (and so in UTF-8 bytes: 3 per character)
    text = "".join(d.text for d in zh)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 0.8 * len(text)
    simplified = set("这们说时东车书门网数据后来对为发")  # common simplified forms whose traditional form differs
    assert not simplified & set(text), sorted(simplified & set(text))
    taiwan = (
        "網路",
        "資料",
        "軟體",
        "捷運",
        "機車",
        "便當",
    )  # Taiwan usage, not 网络 / 数据 / 软件 / 地铁 / 摩托车 / 盒饭
    assert all(word in text for word in taiwan)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="language"):
        language_documents("klingon")
    with pytest.raises(ValueError, match="n > 0"):
        math_documents(0)
    with pytest.raises(ValueError, match="every"):
        split_corpus([], every=1)
    with pytest.raises(ValueError, match="unknown domain"):
        by_domain([Document("poetry", "x", "y")])


# The shipped checkpoint was trained on exactly these documents: if this hash changes, `make train`
# no longer reproduces it (retrain and update both together: its train_log.json records the hash).
CORPUS_SHA256 = "0ca5d490c66b403e318b60adb98af2e860f638c0e8b73d803f5f3da158875a1f"
CORPUS_FILE = Path(corpus_module.__file__)
TRAIN_LOG = CORPUS_FILE.parent.parent / "checkpoints" / "tiny" / "train_log.json"
HASH_CORPUS = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("corpus_alone", {str(CORPUS_FILE)!r})
mod = importlib.util.module_from_spec(spec); sys.modules["corpus_alone"] = mod
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
spec.loader.exec_module(mod)
docs = mod.build_corpus()
print(mod.corpus_sha256(docs))
print(json.dumps(opened))
"""


def corpus_hash_under(python: str) -> tuple[str, list[str]]:
    """Build the corpus with `python` (corpus.py alone, no torch); return its hash and the files it opened."""
    out = subprocess.run([python, "-c", HASH_CORPUS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    digest, opened = out.stdout.splitlines()
    return digest, json.loads(opened)


def test_corpus_is_the_one_the_checkpoint_was_trained_on():
    digest, opened = corpus_hash_under(sys.executable)
    assert digest == CORPUS_SHA256 == corpus_module.corpus_sha256(build_corpus())
    assert json.loads(TRAIN_LOG.read_text())["corpus_sha256"] == CORPUS_SHA256, "retrain: make train"
    data_dir = CORPUS_FILE.parent
    read = [p for p in opened if p.endswith((".py", ".txt", ".jsonl")) and Path(p).parent != data_dir]
    assert not read, f"build_corpus read files outside the package's data folder: {read[:5]}"


def pyenv_pythons() -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for minor in ("3.10", "3.11", "3.12", "3.13"):
        found += sorted(str(p / "bin" / "python") for p in root.glob(f"{minor}.*") if (p / "bin" / "python").exists())[
            -1:
        ]
    return found


@pytest.mark.parametrize("python", pyenv_pythons() or [pytest.param("none", marks=pytest.mark.skip("no pyenv"))])
def test_corpus_identical_under_every_supported_cpython(python):
    assert corpus_hash_under(python)[0] == CORPUS_SHA256

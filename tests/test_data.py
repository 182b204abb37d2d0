"""The offline corpus: deterministic, labelled, split without overlap, correct arithmetic."""

import re

import pytest

from moe_edu.data.corpus import (DOMAINS, LANGUAGES, Document, build_corpus, by_domain, language_documents,
                                 math_documents, split_corpus)


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
    markers = {"french": " les ", "german": " und ", "spanish": " los ", "italian": " il "}
    for lang in LANGUAGES:
        docs = language_documents(lang)
        assert len(docs) >= 10
        assert sum(markers[lang] in d.text for d in docs) >= len(docs) // 2, lang


def test_bad_input_raises():
    with pytest.raises(ValueError, match="language"):
        language_documents("klingon")
    with pytest.raises(ValueError, match="n > 0"):
        math_documents(0)
    with pytest.raises(ValueError, match="every"):
        split_corpus([], every=1)
    with pytest.raises(ValueError, match="unknown domain"):
        by_domain([Document("poetry", "x", "y")])

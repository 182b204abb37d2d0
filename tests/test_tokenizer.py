"""The byte-level BPE tokenizer: exact round trips, word-like pieces, clear errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_edu.data.corpus import build_corpus, by_domain, split_corpus
from moe_edu.io.shipped import checkpoint_dir
from moe_edu.tokenizer import Tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog.",
    "Le petit village se réveille lentement.",
    "What is 12 + 30?\nAnswer: 42",
] * 20


@pytest.fixture(scope="module")
def small():
    return Tokenizer.train(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def shipped():
    return Tokenizer.from_file(checkpoint_dir("tiny"))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_text(small, text):
    ids = small.encode(text)
    assert all(0 <= i < small.vocab_size for i in ids)
    assert small.decode(ids) == text


def test_training_is_deterministic(small):
    again = Tokenizer.train(TEXTS, vocab_size=300)
    assert again.backend.get_vocab() == small.backend.get_vocab()
    assert small.vocab_size == 300


def test_special_tokens_and_digits(small):
    assert (small.backend.token_to_id("<unk>"), small.bos_id, small.eos_id) == (0, 1, 2)
    assert small.tokens(small.encode("2024")) == ["2", "0", "2", "4"]
    assert small.decode([small.bos_id, *small.encode("hi"), small.eos_id]) == "hi"


def test_shipped_tokenizer_round_trips_held_out_text(shipped):
    _, held = split_corpus(build_corpus())
    for domain, docs in by_domain(held).items():
        text = docs[0].text
        ids = shipped.encode(text)
        assert shipped.decode(ids) == text, domain
        assert len(ids) < len(text.encode()), domain  # merges compress every domain


def test_shipped_tokenizer_has_word_like_tokens(shipped):
    pieces = shipped.tokens(shipped.encode("def __init__(self):\n    return the value"))
    assert "def" in pieces and " return" in pieces and " the" in pieces


def test_errors(small, tmp_path):
    with pytest.raises(TypeError, match="str"):
        small.encode(b"bytes")
    with pytest.raises(ValueError, match="vocab_size"):
        small.decode([small.vocab_size])
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(TEXTS, vocab_size=100)
    with pytest.raises(ValueError, match="no tokenizer"):
        Tokenizer.from_file(tmp_path)
    small.save(tmp_path / "tokenizer.json")
    assert Tokenizer.from_file(tmp_path).encode("fox") == small.encode("fox")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_token_bytes_join_to_the_utf8_text(shipped, text):
    ids = shipped.encode(text)
    assert b"".join(shipped.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert "\ufffd" not in "".join(shipped.piece(i) for i in ids) or "\ufffd" in text


def test_shipped_tokenizer_has_traditional_chinese_pieces(shipped):
    text = "清晨的捷運很擠，大家都在滑手機看網路新聞。"
    ids = shipped.encode(text)
    whole = [shipped.piece(i) for i in ids if not shipped.piece(i).startswith("‹")]
    assert len(ids) < 2 * len(text)  # byte by byte would be 3 tokens per character
    assert {"運", "大家", "，", "路", "。"} <= set(whole), whole
    assert shipped.piece(ids[0]) == "‹e6›"  # 清 = e6 b8 85, split here: shown as bytes, never as U+FFFD
    with pytest.raises(ValueError, match="vocab_size"):
        shipped.token_bytes(10**6)

"""Text as typed: group byte-level tokens into whole characters, and show the invisible ones safely.

A byte-level BPE token can hold part of a character (one of the 3 UTF-8 bytes of "中", one of the 4 of
"🙂"): decoded on its own it is U+FFFD. `text_spans` groups consecutive tokens into the shortest runs that
decode to exactly the text they cover, so every displayed span is valid text, and remembers which tokens
each span holds (their routing stays available). `visible` turns a span into HTML-safe text in which
control, bidi and unassigned characters show as labelled markers instead of acting on the page.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from html import escape
from typing import NamedTuple, Protocol

MAX_PIECES = 8  # a character has at most 4 UTF-8 bytes; a BPE piece can straddle two characters


class Decoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...


class TextSpan(NamedTuple):
    """One displayed piece of text and the tokens `start:stop` that make it."""

    text: str
    start: int
    stop: int


def _joins_previous(prev: str, nxt: str) -> bool:
    """True when `nxt` continues the character cluster that `prev` ends (accents, emoji sequences)."""
    if not prev or not nxt:
        return False
    c = nxt[0]
    if prev[-1] == "\u200d" or c == "\u200d":  # zero-width joiner: 👩‍💻
        return True
    if unicodedata.category(c) in ("Mn", "Me", "Mc") or "\ufe00" <= c <= "\ufe0f":  # é as e + U+0301, VS16
        return True
    if "\U0001f3fb" <= c <= "\U0001f3ff" or "\U000e0020" <= c <= "\U000e007f":  # skin tones, flag tags
        return True
    flags = [ch for ch in prev if "\U0001f1e6" <= ch <= "\U0001f1ff"]  # regional indicators pair up: 🇹🇼
    return "\U0001f1e6" <= c <= "\U0001f1ff" and len(flags) % 2 == 1 and prev[-1] == flags[-1]


def text_spans(tokenizer: Decoder, ids: Sequence[int]) -> list[TextSpan]:
    """Split `ids` into spans of whole characters (see module doc); one span per token when the
    tokenizer's pieces do not concatenate to its full decoding (then no grouping is possible)."""
    ids = [int(i) for i in ids]
    full = tokenizer.decode(ids)
    spans: list[TextSpan] = []
    pos = i = 0
    while i < len(ids):
        for j in range(i + 1, min(i + MAX_PIECES, len(ids)) + 1):
            piece = tokenizer.decode(ids[i:j])
            if piece and full.startswith(piece, pos):
                break
        else:
            if tokenizer.decode(ids[i : i + 1]) == "":  # a token with no text (a special token)
                spans.append(TextSpan("", i, i + 1))
                i += 1
                continue
            return [TextSpan(tokenizer.decode([t]), n, n + 1) for n, t in enumerate(ids)]
        if spans and _joins_previous(spans[-1].text, piece):
            spans[-1] = TextSpan(spans[-1].text + piece, spans[-1].start, j)
        else:
            spans.append(TextSpan(piece, i, j))
        pos, i = pos + len(piece), j
    return spans


# Characters that would act on the page (reorder text, hide, join) rather than show: a short label each.
_NAMED = {
    "\u202a": "LRE",
    "\u202b": "RLE",
    "\u202c": "PDF",
    "\u202d": "LRO",
    "\u202e": "RLO",
    "\u2066": "LRI",
    "\u2067": "RLI",
    "\u2068": "FSI",
    "\u2069": "PDI",
    "\u200e": "LRM",
    "\u200f": "RLM",
    "\u061c": "ALM",
    "\u200b": "ZWSP",
    "\u2060": "WJ",
    "\ufeff": "BOM",
    "\u00ad": "SHY",
    "\u2028": "LS",
    "\u2029": "PS",
    "\ufffd": "?",
    "\u200c": "ZWNJ",
    "\u200d": "ZWJ",
}
_KEPT_IN_CLUSTER = {"\u200c", "\u200d"}  # joiners stay raw inside a span with other characters
_SIMPLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def _marker(ch: str) -> str | None:
    """The label shown for `ch` when it must not be rendered raw, else None."""
    if ch in _SIMPLE:
        return None
    if ch in _NAMED:
        return _NAMED[ch]
    cat = unicodedata.category(ch)
    if cat == "Cc" or cat in ("Cs", "Co", "Cn") or (cat == "Cf" and not "\U000e0020" <= ch <= "\U000e007f"):
        return f"U+{ord(ch):04X}"
    return None


def visible(text: str, *, html: bool = True, visible_space: bool = False) -> str:
    """`text` escaped for HTML, with newlines / tabs as arrows and every control, bidi, zero-width,
    unassigned or replacement character as a `‹LABEL›` marker (a styled `<span class="moe-ctl">` when
    `html`, plain text otherwise, e.g. for SVG). Empty text shows as ∅; `visible_space` shows spaces as ␣."""
    if text == "":
        return "∅"
    alone = all(ch in _KEPT_IN_CLUSTER for ch in text)
    out = []
    for ch in text:
        label = None if (ch in _KEPT_IN_CLUSTER and not alone) else _marker(ch)
        if label is not None:
            mark = f"‹{label}›"
            out.append(
                f'<span class="moe-ctl" style="color:#555;font-size:11px;border:1px dotted #777;border-radius:2px">'
                f"{mark}</span>"
                if html
                else mark
            )
        elif ch in _SIMPLE:
            out.append(_SIMPLE[ch])
        elif ch == " " and visible_space:
            out.append("␣")
        else:
            out.append(escape(ch))
    return "".join(out)

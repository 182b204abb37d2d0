"""A small byte-level BPE tokenizer, trained offline with Hugging Face `tokenizers`.

Byte-level means every string round-trips exactly (`decode(encode(s)) == s`) and no
token is ever unknown; BPE merges frequent byte pairs into word-like pieces
(`" the"`, `"def"`, `"self"`), which makes routing views readable: notebook 08
colours each token by the expert it was sent to.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: Mixtral's unk / bos / eos convention


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: the printable character that stands for each byte in the vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:  # the other bytes are moved to 256, 257, ... so every byte has a visible character
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


BYTE_OF_CHAR = _byte_of_char()


class Tokenizer:
    """`encode(str) -> list[int]`, `decode(list[int]) -> str`, plus `tokens` for display."""

    def __init__(self, backend: _Backend) -> None:
        if not isinstance(backend, _Backend):
            raise TypeError(f"Tokenizer wraps a tokenizers.Tokenizer, got {type(backend).__name__}")
        self.backend = backend
        self.bos_id = backend.token_to_id("<s>")
        self.eos_id = backend.token_to_id("</s>")

    # ------------------------------------------------------------ construction
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> Tokenizer:
        """Learn BPE merges on `texts` (deterministic for the same texts and settings)."""
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size must be >= {len(alphabet) + len(SPECIAL_TOKENS)} "
                f"(256 bytes + special tokens), got {vocab_size}"
            )
        backend = _Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [  # digits one by one, as Mixtral's tokenizer does
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=alphabet,
            show_progress=False,
        )
        backend.train_from_iterator(list(texts), trainer=trainer)
        return cls(backend)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a `tokenizer.json` (a file, or a directory that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"no tokenizer file at {path}")
        try:
            return cls(_Backend.from_file(str(path)))
        except Exception as err:  # the tokenizers library raises a bare Exception on a garbled file
            raise ValueError(f"cannot read the tokenizer {path}: {err}") from None

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    # ------------------------------------------------------------------- use
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids` (special tokens are dropped)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids must lie in [0, vocab_size={self.vocab_size}), got {bad[:5]}")
        return self.backend.decode(ids, skip_special_tokens=True)

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Each id's own text, for display (a byte that is half of a character shows as '\ufffd')."""
        return [self.decode([i]) for i in ids]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (special tokens: their name in UTF-8)."""
        piece = self.backend.id_to_token(int(token_id))
        if piece is None:
            raise ValueError(f"token id must lie in [0, vocab_size={self.vocab_size}), got {token_id}")
        if piece in SPECIAL_TOKENS:
            return piece.encode()
        return bytes(BYTE_OF_CHAR[ch] for ch in piece)

    def piece(self, token_id: int) -> str:
        """One token for display: its text, or its bytes in hex (`‹e7 9a›`) when it holds part of a character.

        A byte-level token can end in the middle of a multi-byte UTF-8 character (a Chinese character
        is 3 bytes, an emoji 4); decoding it alone would give U+FFFD, so its bytes are shown instead.
        """
        raw = self.token_bytes(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "‹" + raw.hex(" ") + "›"

    def __repr__(self) -> str:
        return f"Tokenizer(byte-level BPE, vocab_size={self.vocab_size})"

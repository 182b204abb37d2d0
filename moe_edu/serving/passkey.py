"""Passkey retrieval (the Mixtral paper's §3.2, Fig. 4): hide a key in filler text, ask for it back.

    prompt = make_prompt(encode, length=1024, depth=0.5, key="72915")
    grid = passkey_grid(model, encode, lengths=[256, 512, 1024], depths=[0, 0.25, 0.5, 0.75, 1.0])
    moe_edu.course.plots_passkey.plot_passkey_grid(grid)   # notebook 11's picture

A prompt is an instruction, filler sentences, the key sentence at a chosen *depth* (0 = right after
the instruction, 1 = right before the question), then the question; the model must continue with
the key's digits. Everything is built from text through any `encode(str) -> list[int]`, so the
same harness scores moe_edu's models (a word-level vocabulary, `moe_edu.experiments.passkey`) and a
`transformers` model with its tokenizer. A prompt counts as retrieved when the model's greedy
choice is right at every digit (teacher-forced: one forward pass per batch, the same verdict as
greedy decoding, which would only continue from correct digits).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..validation import finite_float, positive_int

INTRO = "there is a pass key hidden in this text . find it and remember it ."
FILLER = ("the grass is green .", "the sky is blue .", "the sun is yellow .", "here we go .", "there and back again .")
KEY_SENTENCE = "the pass key is {key} . remember it . {key} is the pass key ."
QUESTION = "what is the pass key ? the pass key is"

Encode = Callable[[str], list]


def spaced(key: str) -> str:
    """'72915' -> '7 2 9 1 5': one token per digit in a word-level vocabulary, and in most BPEs."""
    if not isinstance(key, str) or not key.isdigit():
        raise ValueError(f"key must be a string of digits, got {key!r}")
    return " ".join(key)


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]  # the prompt, exactly `length` tokens, ending with the question
    answer: list[int]  # the key's tokens the model must produce next
    key: str
    depth: float  # where the key sentence sits in the filler, 0..1
    key_position: int  # index of the key sentence's first token in `ids`


def make_prompt(encode: Encode, *, length: int, depth: float, key: str) -> PasskeyPrompt:
    """A prompt of exactly `length` tokens with the key sentence at relative `depth` of the filler.

    The filler cycles through `FILLER`; the key goes at the sentence boundary nearest to
    depth x (filler tokens), so no sentence is cut around it (the last one may be cut short).
    """
    finite_float("depth", depth, ge=0.0, le=1.0)
    positive_int("length", length)
    intro, question = encode(INTRO), encode(" " + QUESTION)
    key_ids = encode(" " + KEY_SENTENCE.format(key=spaced(key)))
    n_filler = length - len(intro) - len(key_ids) - len(question)
    if n_filler < 0:
        raise ValueError(
            f"length={length} is too short: instruction, key sentence and question take {length - n_filler} tokens"
        )
    sentences = [encode(" " + s) for s in FILLER]
    filler, bounds, i = [], [0], 0
    while len(filler) < n_filler:
        filler += sentences[i % len(sentences)]
        bounds.append(min(len(filler), n_filler))
        i += 1
    filler = filler[:n_filler]
    cut = min(bounds, key=lambda b: (abs(b - depth * n_filler), b))
    ids = intro + filler[:cut] + key_ids + filler[cut:] + question
    return PasskeyPrompt(ids, encode(" " + spaced(key)), key, depth, len(intro) + cut)


def random_key(rng: random.Random, digits: int = 5, distinct: bool = False) -> str:
    """A random key of `digits` digits (leading zeros allowed); `distinct`: no digit twice."""
    if distinct:
        if not 0 < digits <= 10:
            raise ValueError(f"a key of distinct digits has 1 to 10 digits, got {digits}")
        return "".join(str(d) for d in rng.sample(range(10), digits))
    return "".join(str(rng.randrange(10)) for _ in range(digits))


def logits_of(output) -> torch.Tensor:
    """(B, T, V) logits from a model's output: a tensor, or anything with `.logits` (moe_edu, transformers)."""
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(
            f"the model must return (B, T, V) logits or an object with .logits, got {type(output).__name__}"
        )
    return logits


@torch.no_grad()
def retrieved(model, prompts: Sequence[PasskeyPrompt], batch_size: int = 16) -> list[bool]:
    """For each prompt: is the greedy next token right at every digit of the key (teacher-forced)?"""
    positive_int("batch_size", batch_size)
    empty = [i for i, p in enumerate(prompts) if not p.answer or not p.ids]
    if empty:
        raise ValueError(f"retrieved: prompts {empty[:5]} have an empty prompt or answer")
    device = next(iter(model.parameters())).device
    result: dict[int, bool] = {}
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p.ids) + len(p.answer), []).append(i)
    for members in by_len.values():
        for s in range(0, len(members), batch_size):
            chunk = members[s : s + batch_size]
            seqs = torch.tensor([prompts[i].ids + prompts[i].answer for i in chunk], device=device)  # (b, total)
            logits = logits_of(model(seqs[:, :-1]))  # (b, total-1, V)
            for row, i in enumerate(chunk):
                n = len(prompts[i].answer)
                guess = logits[row, -n:].argmax(-1)  # (n,) predictions for the n answer tokens
                result[i] = bool((guess == seqs[row, -n:]).all())
    return [result[i] for i in range(len(prompts))]


@dataclass(frozen=True)
class PasskeyGrid:
    lengths: list[int]  # prompt lengths in tokens (rows)
    depths: list[float]  # key depths (columns)
    accuracy: torch.Tensor  # (len(lengths), len(depths)) share of keys retrieved
    trials: int  # keys per cell

    def rows(self) -> list[str]:
        """The grid as text: one line per length, accuracies in percent."""
        head = "length \\ depth " + " ".join(f"{d:>5.2f}" for d in self.depths)
        return [head] + [
            f"{n:>14d} " + " ".join(f"{100 * a:>5.0f}" for a in row)
            for n, row in zip(self.lengths, self.accuracy.tolist(), strict=True)
        ]


def passkey_grid(
    model,
    encode: Encode,
    *,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int = 10,
    digits: int = 5,
    distinct: bool = False,
    seed: int = 0,
    batch_size: int = 16,
) -> PasskeyGrid:
    """Accuracy of passkey retrieval over lengths x depths, `trials` random keys per cell (seeded)."""
    positive_int("trials", trials)
    positive_int("batch_size", batch_size)
    rng = random.Random(seed)
    prompts = [
        make_prompt(encode, length=n, depth=d, key=random_key(rng, digits, distinct))
        for n in lengths
        for d in depths
        for _ in range(trials)
    ]
    hits = torch.tensor(retrieved(model, prompts, batch_size), dtype=torch.float64)  # (cells * trials,)
    acc = hits.reshape(len(lengths), len(depths), trials).mean(-1)  # (lengths, depths)
    return PasskeyGrid(list(lengths), list(depths), acc, trials)

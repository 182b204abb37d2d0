"""Train a tiny Mixtral to retrieve a passkey, on CPU, in a few minutes (reproducible, seeded).

    python -m moe_edu.experiments.passkey --out moe_edu/checkpoints/passkey --overwrite

The prompts are `moe_edu.serving.passkey`'s (instruction, filler, key sentence at a random depth,
question) in a word-level vocabulary of 38 tokens (`WordVocab`: the prompt's words and the ten
digits), not the course's BPE tokenizer: every token is a word, every digit one token. Lengths
vary per batch up to `--max-len`, so the model sees the question at many positions — but never
beyond `--max-len`; notebook 11 measures what happens there (RoPE positions it never trained on).
The loss is on the key's digits only, and keys have 5 *distinct* digits: then "copy the digit
that followed this one" is never ambiguous. With repeated digits a 2-layer model must also
track its place inside the key, which it did not learn within the budget (`--repeated-digits`;
the checkpoint README and notebook 11's last question give the numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from ..config import MixtralConfig
from ..io.atomic import check_swappable
from ..io.checkpoint import from_pretrained, write_checkpoint
from ..io.lock import LockedError, out_lock
from ..model import MixtralForCausalLM
from ..serving.passkey import FILLER, INTRO, KEY_SENTENCE, QUESTION, make_prompt, random_key
from ..training.loop import NonFiniteError
from ..validation import finite_float, int_in_range, nonnegative_int, positive_int
from .args import arg_type

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "passkey"
CONTEXT = 1024  # the model's max_position_embeddings: every training prompt, answer included, fits


class WordVocab:
    """Whitespace-separated words -> ids; the ten digits and every word of the passkey prompts."""

    def __init__(self, words: list[str]) -> None:
        if len(set(words)) != len(words):
            raise ValueError("WordVocab: words must be unique")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def passkey(cls) -> WordVocab:
        text = " ".join((INTRO, *FILLER, KEY_SENTENCE.format(key=""), QUESTION))
        words = sorted(set(text.split()))
        return cls([str(d) for d in range(10)] + words)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[w] for w in text.split()]
        except KeyError as err:
            raise ValueError(f"word {err.args[0]!r} is not in the passkey vocabulary") from None

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)


def passkey_config(vocab_size: int, max_len: int = CONTEXT) -> MixtralConfig:
    """Mixtral's shape, tiny: 2 layers, width 64, 4 query / 2 K/V heads of 16, 8 experts (width 128), top-2."""
    return MixtralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        router_aux_loss_coef=0.01,
        name="passkey",
    )


def make_batch(
    vocab: WordVocab,
    rng: random.Random,
    batch_size: int,
    length: int,
    digits: int,
    answer_only: bool = True,
    distinct: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, labels), both (B, length + digits); with `answer_only` labels are -100 except on the answer."""
    rows, labels = [], []
    for _ in range(batch_size):
        p = make_prompt(vocab.encode, length=length, depth=rng.random(), key=random_key(rng, digits, distinct))
        rows.append(p.ids + p.answer)
        labels.append(([-100] * len(p.ids) if answer_only else p.ids) + p.answer)
    return torch.tensor(rows), torch.tensor(labels)


def train(
    out: Path | None,
    *,
    steps: int,
    batch_size: int,
    min_len: int,
    max_len: int,
    digits: int,
    lr: float,
    seed: int,
    answer_only: bool = True,
    distinct: bool = True,
    progress: bool = True,
) -> dict:
    """Train the passkey model; with `out`, save it there (`write_checkpoint`: atomic, only its own files).

    Arguments are checked before anything runs. A non-finite loss or gradient raises
    `NonFiniteError` and saves nothing. Threads are the caller's (`main` sets `--threads`).
    """
    check_settings(steps, batch_size, min_len, max_len, digits, lr, seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = WordVocab.passkey()
    config = passkey_config(len(vocab))
    model = MixtralForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    log, start = [], time.time()
    for step in range(steps):
        length = rng.randrange(min_len, max_len + 1, 8)
        ids, labels = make_batch(vocab, rng, batch_size, length, digits, answer_only, distinct)
        res = model(ids, labels=labels)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not (bool(torch.isfinite(res.loss)) and bool(torch.isfinite(norm))):
            raise NonFiniteError(
                f"step {step}: loss {float(res.loss.detach())}, gradient norm {float(norm)} (lr {lr:g}): training "
                "diverged and was stopped; nothing was saved (try a smaller --lr)"
            )
        opt.step()
        sched.step()
        with torch.no_grad():
            n = digits
            ok = (res.logits[:, -n - 1 : -1].argmax(-1) == ids[:, -n:]).all(-1).float().mean().item()  # (B,) -> share
        log.append({"step": step, "length": length, "loss": round(res.loss.item(), 5), "retrieved": ok})
        if progress and (step % 50 == 0 or step == steps - 1):
            print(
                f"step {step:5d}  len {length:4d}  loss {res.loss.item():.4f}  retrieved {ok:.2f}  "
                f"{time.time() - start:.0f}s",
                file=sys.stderr,
            )
    wall = time.time() - start
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "min_len": min_len,
        "max_len": max_len,
        "digits": digits,
        "lr": lr,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "answer_only": answer_only,
        "distinct": distinct,
    }
    result = {"settings": settings, "wall_seconds": round(wall, 1), "torch": torch.__version__, "log": log}
    if out is not None:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        files = {"vocab.json": json.dumps(vocab.words) + "\n", "train_log.json": json.dumps(result) + "\n"}
        write_checkpoint(out, tensors, config, metadata={}, files=files)  # metadata {}: the old bytes
    return result


def check_settings(steps: int, batch_size: int, min_len: int, max_len: int, digits: int, lr: float, seed: int) -> None:
    """Every training argument, checked before any work (a `ValueError` naming the argument)."""
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    int_in_range("digits", digits, 1, 10)
    context = CONTEXT
    int_in_range("min_len", min_len, 8, context - digits)
    int_in_range(
        f"max_len (min_len={min_len}; the context is {context} tokens with the answer)",
        max_len,
        min_len,
        context - digits,
    )
    finite_float("lr", lr, gt=0)
    nonnegative_int("seed", seed)


def load_passkey_model(path: str | Path = CHECKPOINT) -> tuple[MixtralForCausalLM, WordVocab]:
    """The trained passkey model (eval mode) and its vocabulary, through the one strict loader.

    `from_pretrained` bounds every size by the bytes present before anything is built, so a
    `config.json` claiming a huge vocabulary fails at once, naming the field.
    """
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise ValueError(
            f"no passkey checkpoint in {path}; train one with `python -m moe_edu.experiments.passkey --out {path}`"
        )
    model = from_pretrained(path)
    model.config = model.config.replace(name="passkey")
    try:
        words = json.loads((path / "vocab.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the passkey vocabulary {path / 'vocab.json'}: {err}") from None
    if not (isinstance(words, list) and all(isinstance(w, str) for w in words) and len(words) == len(set(words))):
        raise ValueError(f"{path / 'vocab.json'} must be a list of distinct words")
    if len(words) > model.config.vocab_size:
        raise ValueError(
            f"{path / 'vocab.json'} has {len(words)} words, the model's vocab_size is {model.config.vocab_size}"
        )
    return model, WordVocab(words)


def load_passkey_log(path: str | Path = CHECKPOINT) -> dict:
    return json.loads((Path(path) / "train_log.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moe_edu.experiments.passkey", description=__doc__.split("\n")[0])
    pos_int = arg_type(positive_int, int)
    ap.add_argument("--out", type=Path, default=Path("runs/passkey"))
    ap.add_argument("--overwrite", action="store_true", help="replace the model in a non-empty --out (at the end)")
    ap.add_argument("--steps", type=pos_int, default=1500)
    ap.add_argument("--batch-size", type=pos_int, default=16)
    ap.add_argument("--min-len", type=pos_int, default=64)
    ap.add_argument("--max-len", type=pos_int, default=128, help="longest training prompt, in tokens")
    ap.add_argument("--digits", type=arg_type(lambda n, v: int_in_range(n, v, 1, 10), int), default=5)
    ap.add_argument("--lr", type=arg_type(lambda n, v: finite_float(n, v, gt=0), float), default=3e-3)
    ap.add_argument("--seed", type=arg_type(nonnegative_int, int), default=0)
    ap.add_argument("--threads", type=pos_int, default=1)
    ap.add_argument("--loss-on-all", action="store_true", help="loss on every token (default: the key's digits only)")
    ap.add_argument("--repeated-digits", action="store_true", help="keys may repeat a digit (default: 5 distinct)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:  # everything is checked before training
        check_settings(a.steps, a.batch_size, a.min_len, a.max_len, a.digits, a.lr, a.seed)
        check_swappable(a.out)
        if not a.overwrite and a.out.is_dir() and any(a.out.iterdir()):
            raise ValueError(f"--out {a.out} exists and is not empty: pass --overwrite to replace the model in it")
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(a.threads)
    try:
        with out_lock(a.out):
            r = train(
                a.out,
                steps=a.steps,
                batch_size=a.batch_size,
                min_len=a.min_len,
                max_len=a.max_len,
                digits=a.digits,
                lr=a.lr,
                seed=a.seed,
                answer_only=not a.loss_on_all,
                distinct=not a.repeated_digits,
                progress=not a.no_progress,
            )
    except (NonFiniteError, LockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tail = r["log"][-50:]
    print(
        f"wrote {a.out}: {a.steps} steps in {r['wall_seconds']} s, last-50-step retrieval "
        f"{sum(x['retrieved'] for x in tail) / len(tail):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

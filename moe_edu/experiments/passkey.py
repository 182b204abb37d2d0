"""Train a tiny Mixtral to retrieve a passkey, on CPU, in a few minutes (reproducible, seeded).

    python -m moe_edu.experiments.passkey --out moe_edu/checkpoints/passkey

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
from safetensors.torch import load_file, save_file

from ..config import MixtralConfig
from ..model import MixtralForCausalLM
from ..serving.passkey import FILLER, INTRO, KEY_SENTENCE, QUESTION, make_prompt, random_key

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "passkey"


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


def passkey_config(vocab_size: int, max_len: int = 1024) -> MixtralConfig:
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
    out: Path,
    *,
    steps: int,
    batch_size: int,
    min_len: int,
    max_len: int,
    digits: int,
    lr: float,
    seed: int,
    threads: int,
    answer_only: bool = True,
    distinct: bool = True,
    progress: bool = True,
) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
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
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
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
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    cfg = config.to_dict()
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "vocab.json").write_text(json.dumps(vocab.words) + "\n")
    settings = dict(
        steps=steps,
        batch_size=batch_size,
        min_len=min_len,
        max_len=max_len,
        digits=digits,
        lr=lr,
        seed=seed,
        threads=threads,
        answer_only=answer_only,
        distinct=distinct,
    )
    result = {"settings": settings, "wall_seconds": round(wall, 1), "torch": torch.__version__, "log": log}
    (out / "train_log.json").write_text(json.dumps(result) + "\n")
    return result


def load_passkey_model(path: str | Path = CHECKPOINT) -> tuple[MixtralForCausalLM, WordVocab]:
    """The trained passkey model (eval mode) and its vocabulary."""
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise ValueError(
            f"no passkey checkpoint in {path}; train one with `python -m moe_edu.experiments.passkey --out {path}`"
        )
    config = MixtralConfig.from_json(path / "config.json").replace(name="passkey")
    model = MixtralForCausalLM(config)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval(), WordVocab(json.loads((path / "vocab.json").read_text()))


def load_passkey_log(path: str | Path = CHECKPOINT) -> dict:
    return json.loads((Path(path) / "train_log.json").read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/passkey"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=128, help="longest training prompt, in tokens")
    ap.add_argument("--digits", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loss-on-all", action="store_true", help="loss on every token (default: the key's digits only)")
    ap.add_argument("--repeated-digits", action="store_true", help="keys may repeat a digit (default: 5 distinct)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    r = train(
        a.out,
        steps=a.steps,
        batch_size=a.batch_size,
        min_len=a.min_len,
        max_len=a.max_len,
        digits=a.digits,
        lr=a.lr,
        seed=a.seed,
        threads=a.threads,
        answer_only=not a.loss_on_all,
        distinct=not a.repeated_digits,
        progress=not a.no_progress,
    )
    tail = r["log"][-50:]
    print(
        f"wrote {a.out}: {a.steps} steps in {r['wall_seconds']} s, last-50-step retrieval "
        f"{sum(x['retrieved'] for x in tail) / len(tail):.3f}"
    )


if __name__ == "__main__":
    main()

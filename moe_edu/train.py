"""Train a small Mixtral on the offline corpus: AdamW, warmup + cosine, tqdm, periodic eval.

    python -m moe_edu.train --preset tiny --steps 300 --threads 1 --out runs/tiny

writes `model.safetensors`, `config.json`, `tokenizer.json` and `train_log.json` into
`--out`. Seeded: the same command, interpreter, torch version and thread count give the
same weights. The defaults are the shipped checkpoint's settings. CUDA when present
(`--device auto`), else the CPU. Notebook 07 calls
`train_steps` directly for its live runs; the shipped checkpoint came from `main`
(its command is in `moe_edu/checkpoints/tiny/README.md`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .analysis import load_imbalance, routing_load
from .config import MixtralConfig
from .data.corpus import DOMAINS, Document, build_corpus, by_domain, split_corpus
from .presets import get_config
from .run_dir import save_run
from .tokenizer import Tokenizer

DEFAULT_WEIGHTS = {"python": 0.3, "english": 0.3, "math": 0.2,
                   "french": 0.05, "german": 0.05, "spanish": 0.05, "italian": 0.05}


@dataclass
class TrainConfig:
    """Every setting of a run; stored in `train_log.json` so a run can be repeated."""

    preset: str = "tiny"
    vocab_size: int = 1024
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 300
    lr: float = 5e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    aux_loss_coef: float = 1.0  # router_aux_loss_coef; small values leave the hard load skewed (see the README)
    z_loss_coef: float = 0.001  # router_z_loss_coef of the model's config
    eval_every: int = 50
    eval_batches: int = 4
    seed: int = 0
    device: str = "auto"
    domain_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "batch_size", "steps", "eval_every", "eval_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        unknown = sorted(set(self.domain_weights) - set(DOMAINS))
        if unknown:
            raise ValueError(f"TrainConfig.domain_weights has unknown domains {unknown}; expected {DOMAINS}")

    def model_config(self) -> MixtralConfig:
        return get_config(self.preset).replace(
            vocab_size=self.vocab_size, max_position_embeddings=max(self.seq_len, 256),
            router_aux_loss_coef=self.aux_loss_coef, router_z_loss_coef=self.z_loss_coef)


# ------------------------------------------------------------------------- data
def train_tokenizer(docs: list[Document], vocab_size: int, chars_per_domain: int = 60_000) -> Tokenizer:
    """BPE on a domain-balanced sample: up to `chars_per_domain` per domain, small domains repeated."""
    texts: list[str] = []
    for domain_docs in by_domain(docs).values():
        n = 0
        for doc in domain_docs:
            if n >= chars_per_domain:
                break
            texts.append(doc.text)
            n += len(doc.text)
        while n < chars_per_domain // 2:  # repeat the small language pages so they get merges too
            for doc in domain_docs:
                texts.append(doc.text)
                n += len(doc.text)
    return Tokenizer.train(texts, vocab_size)


class TokenStreams:
    """Per-domain token streams (documents joined by `</s>`) and seeded random windows over them."""

    def __init__(self, docs: list[Document], tokenizer: Tokenizer, weights: dict[str, float]) -> None:
        groups = by_domain(docs)
        self.domains = [d for d in groups if weights.get(d, 0) > 0]
        if not self.domains:
            raise ValueError("no domain with a positive weight has documents")
        self.streams = {}
        for d in self.domains:
            ids: list[int] = []
            for doc in groups[d]:
                ids += tokenizer.encode(doc.text) + [tokenizer.eos_id]
            self.streams[d] = torch.tensor(ids, dtype=torch.long)
        self.weights = torch.tensor([float(weights[d]) for d in self.domains])

    def sample(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, seq_len) windows; each row's domain drawn with the domain weights."""
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)  # (B,)
        rows = []
        for p in picks.tolist():
            stream = self.streams[self.domains[p]]
            if len(stream) <= seq_len:
                stream = stream.repeat(seq_len // len(stream) + 2)
            start = int(torch.randint(len(stream) - seq_len, (1,), generator=generator))
            rows.append(stream[start : start + seq_len])
        return torch.stack(rows)  # (B, T)


# ---------------------------------------------------------------------- training
def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup for `warmup` steps, then cosine from lr down to lr * min_ratio."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_steps(model, next_batch: Callable[[int], torch.Tensor], steps: int, *, lr: float = 3e-3,
                weight_decay: float = 0.1, warmup: int = 0, min_lr_ratio: float = 0.1, grad_clip: float = 1.0,
                log_every: int = 1, evaluate: Callable[[], float] | None = None, eval_every: int = 0,
                progress: bool = True) -> list[dict]:
    """The loop: AdamW + warmup/cosine on `next_batch(step) -> (B, T) ids`; returns the log.

    Each log entry: step, lr, loss (total), ce, aux, z, router logit RMS, imbalance
    (max/mean expert load, 1 = balanced) and the (L, E) expert load of that step's batch.
    """
    from tqdm.auto import tqdm

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    cfg, log = model.config, []
    bar = tqdm(range(steps), disable=not progress, dynamic_ncols=True)
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        ids = next_batch(step).to(model.device)  # (B, T)
        out = model(ids, labels=ids)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            load = routing_load(out.router_logits, cfg.num_experts_per_tok)  # (L, E)
            aux, z = float(out.aux_loss.detach()), float(out.z_loss.detach())
            ce = float(out.loss.detach()) - cfg.router_aux_loss_coef * aux - cfg.router_z_loss_coef * z
            rms = float(torch.stack([t.detach().float().pow(2).mean() for t in out.router_logits]).mean().sqrt())
            entry = {"step": step, "lr": opt.param_groups[0]["lr"], "loss": float(out.loss.detach()), "ce": ce,
                     "aux": aux, "z": z, "logit_rms": rms, "imbalance": load_imbalance(load),
                     "load": [[round(float(v), 5) for v in row] for row in load]}
            if evaluate is not None and eval_every and (step % eval_every == 0 or step == steps - 1):
                entry["eval_ce"] = evaluate()
                model.train()
            log.append(entry)
            bar.set_postfix(loss=f"{entry['ce']:.3f}", imb=f"{entry['imbalance']:.2f}")
    model.eval()
    return log


@torch.no_grad()
def eval_loss(model, batches: list[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (no router losses) over fixed batches."""
    import torch.nn.functional as F

    model.eval()
    total = 0.0
    for ids in batches:
        ids = ids.to(model.device)
        logits = model(ids).logits  # (B, T, V)
        total += float(F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))
    return total / len(batches)


def train(tc: TrainConfig, out_dir: str | Path | None = None, *, progress: bool = True,
          command: str | None = None) -> tuple[torch.nn.Module, Tokenizer, dict]:
    """The whole run: corpus -> tokenizer -> model -> training; saves into `out_dir` if given.

    Returns `(model, tokenizer, log)`; `log` is what `train_log.json` holds.
    """
    from .model import MixtralForCausalLM

    start = time.perf_counter()
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    train_docs, held_docs = split_corpus(build_corpus(seed=tc.seed))
    tokenizer = train_tokenizer(train_docs, tc.vocab_size)
    train_data = TokenStreams(train_docs, tokenizer, tc.domain_weights)
    held_data = TokenStreams(held_docs, tokenizer, tc.domain_weights)
    gen = torch.Generator().manual_seed(tc.seed)
    eval_gen = torch.Generator().manual_seed(tc.seed + 1)
    eval_batches = [held_data.sample(tc.batch_size, tc.seq_len, eval_gen) for _ in range(tc.eval_batches)]
    config = tc.model_config()
    model = MixtralForCausalLM(config).to(device)
    steps_log = train_steps(
        model, lambda step: train_data.sample(tc.batch_size, tc.seq_len, gen), tc.steps, lr=tc.lr,
        weight_decay=tc.weight_decay, warmup=max(1, round(tc.warmup_frac * tc.steps)), min_lr_ratio=tc.min_lr_ratio,
        grad_clip=tc.grad_clip, evaluate=lambda: eval_loss(model, eval_batches), eval_every=tc.eval_every,
        progress=progress)
    log = {
        "command": command, "train_config": dataclasses.asdict(tc), "model_config": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": {d: len(s) for d, s in train_data.streams.items()},
        "wall_seconds": round(time.perf_counter() - start, 1), "device": str(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "final": {k: steps_log[-1][k] for k in ("step", "ce", "eval_ce", "aux", "z", "imbalance") if k in steps_log[-1]},
        "steps": steps_log,
    }
    if out_dir is not None:
        save_run(model, tokenizer, log, out_dir)
    return model, tokenizer, log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moe_edu.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    p.add_argument("--preset", default=defaults.preset)
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--out", default="runs/tiny", help="output directory (default: runs/tiny)")
    p.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    p.add_argument("--seq-len", type=int, default=defaults.seq_len)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--aux-loss-coef", type=float, default=defaults.aux_loss_coef)
    p.add_argument("--z-loss-coef", type=float, default=defaults.z_loss_coef)
    p.add_argument("--eval-every", type=int, default=defaults.eval_every)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device, help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (results depend on it)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    tc = TrainConfig(preset=a.preset, steps=a.steps, vocab_size=a.vocab_size, seq_len=a.seq_len,
                     batch_size=a.batch_size, lr=a.lr, aux_loss_coef=a.aux_loss_coef, z_loss_coef=a.z_loss_coef,
                     eval_every=a.eval_every, seed=a.seed, device=a.device)
    command = "python -m moe_edu.train " + " ".join(sys.argv[1:] if argv is None else argv)
    _, _, log = train(tc, a.out, progress=not a.no_progress, command=command)
    f = log["final"]
    print(f"done in {log['wall_seconds']} s: train ce {f['ce']:.3f}, eval ce {f.get('eval_ce', float('nan')):.3f}, "
          f"imbalance {f['imbalance']:.2f} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

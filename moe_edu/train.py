"""Train a small Mixtral on the offline corpus: AdamW, warmup + cosine, tqdm, periodic eval.

    python -m moe_edu.train --preset tiny --steps 300 --threads 1 --out runs/tiny

writes `model.safetensors`, `config.json`, `tokenizer.json`, `train_log.json` and a README
into `--out`, all at once at the end (an existing non-empty `--out` is refused unless
`--overwrite`). Every `--checkpoint-every` steps the training state goes to `<out>/checkpoint/`;
`--resume` continues from it to the same final weights as an uninterrupted run. A non-finite
loss or gradient stops the run (exit code 1) and saves nothing as a result.
Seeded: the same command, torch version, thread count and CPU family give the same weights.
The defaults are the shipped checkpoint's settings. CUDA when present (`--device auto`), else
the CPU. Notebook 07 calls `train_steps` directly for its live runs; the shipped checkpoint
came from `main` (its command is in `moe_edu/checkpoints/tiny/README.md`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .data.corpus import build_corpus, corpus_sha256, split_corpus
from .model import MixtralForCausalLM
from .presets import PRESETS
from .run_dir import STATE_DIR, load_training_state, save_run, save_training_state
from .token_streams import TokenStreams, train_tokenizer
from .tokenizer import Tokenizer
from .train_config import DEFAULT_WEIGHTS, TrainConfig
from .training_loop import NonFiniteError, eval_loss, lr_at, make_optimizer, train_steps
from .validation import (
    int_in_range,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "NonFiniteError",
    "TokenStreams",
    "TrainConfig",
    "check_out_dir",
    "eval_loss",
    "lr_at",
    "main",
    "make_optimizer",
    "pick_device",
    "train",
    "train_steps",
    "train_tokenizer",
]


# ---------------------------------------------------------------------- training
def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse, before any work, an `--out` that would clobber a run or that cannot be written."""
    out = Path(out)
    state = out / STATE_DIR / "training_state.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if resume and not state.is_file():
        raise ValueError(f"--resume: no training state in {out / STATE_DIR} (is --out the interrupted run's?)")
    if not resume and not overwrite and out.is_dir() and any(out.iterdir()):
        raise ValueError(
            f"--out {out} exists and is not empty: pass --overwrite to replace it (it is replaced "
            f"whole, only at the end of a successful run), --resume to continue it, or another --out"
        )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # the run directory is written as a temporary sibling, then swapped in: the parent must take it
        Path(tempfile.mkdtemp(prefix=".moe_edu-write-check-", dir=parent)).rmdir()
    except OSError as err:
        raise ValueError(f"--out {out} cannot be written ({parent}: {err.strerror or err})") from None
    return out


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    rng = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def train(
    tc: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    command: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int = 0,
) -> tuple[MixtralForCausalLM, Tokenizer, dict]:
    """The whole run: corpus -> tokenizer -> model -> training; saves into `out_dir` if given.

    Returns `(model, tokenizer, log)`; `log` is what `train_log.json` holds. `out_dir` is checked
    first (see `check_out_dir`); every `checkpoint_every` steps the training state is saved in
    `out_dir/checkpoint/`, and `resume=True` continues from it.
    """
    start = time.perf_counter()
    nonnegative_int("checkpoint_every", checkpoint_every)
    if out_dir is None and (resume or checkpoint_every):
        raise ValueError("resume and checkpoint_every need an out_dir")
    state_dir, saved = None, {}
    if out_dir is not None:
        state_dir = check_out_dir(out_dir, overwrite=overwrite, resume=resume) / STATE_DIR
    if resume:
        saved = json.loads((state_dir / "training_state.json").read_text())
        if saved.get("train_config") != json.loads(json.dumps(dataclasses.asdict(tc))):
            diff = sorted(k for k, v in dataclasses.asdict(tc).items() if saved.get("train_config", {}).get(k) != v)
            raise ValueError(f"--resume: the saved run in {state_dir} has other settings ({', '.join(diff)})")
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    docs = build_corpus(seed=tc.seed)
    train_docs, held_docs = split_corpus(docs)
    tokenizer = train_tokenizer(train_docs, tc.vocab_size)
    train_data = TokenStreams(train_docs, tokenizer, tc.domain_weights)
    held_data = TokenStreams(held_docs, tokenizer, tc.domain_weights)
    gen = torch.Generator().manual_seed(tc.seed)
    eval_gen = torch.Generator().manual_seed(tc.seed + 1)
    eval_batches = [held_data.sample(tc.batch_size, tc.seq_len, eval_gen) for _ in range(tc.eval_batches)]
    config = tc.model_config()
    model = MixtralForCausalLM(config).to(device)
    opt = make_optimizer(model, tc.lr, tc.weight_decay)
    start_step, log_so_far, earlier_seconds = 0, [], 0.0
    if resume:
        rng, meta = load_training_state(state_dir, model, opt)
        gen.set_state(rng["gen"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
        start_step, log_so_far, earlier_seconds = meta["step"] + 1, meta["log"], meta["wall_seconds"]

    def checkpoint(step: int, opt: torch.optim.Optimizer, log: list[dict]) -> None:
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < tc.steps:
            meta = {
                "step": step,
                "train_config": dataclasses.asdict(tc),
                "log": log,
                "wall_seconds": earlier_seconds + time.perf_counter() - start,
            }
            save_training_state(state_dir, model, opt, _rng_state(gen, device), meta)

    steps_log = train_steps(
        model,
        lambda step: train_data.sample(tc.batch_size, tc.seq_len, gen),
        tc.steps,
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        warmup=max(1, round(tc.warmup_frac * tc.steps)),
        min_lr_ratio=tc.min_lr_ratio,
        grad_clip=tc.grad_clip,
        evaluate=lambda: eval_loss(model, eval_batches),
        eval_every=tc.eval_every,
        progress=progress,
        optimizer=opt,
        start_step=start_step,
        log=log_so_far,
        on_step=checkpoint,
    )
    log = {
        "command": command,
        "train_config": dataclasses.asdict(tc),
        "model_config": config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_sha256": corpus_sha256(docs),
        "train_tokens": {d: len(s) for d, s in train_data.streams.items()},
        "wall_seconds": round(earlier_seconds + time.perf_counter() - start, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "final": {
            k: steps_log[-1][k] for k in ("step", "ce", "eval_ce", "aux", "z", "imbalance") if k in steps_log[-1]
        },
        "steps": steps_log,
    }
    if out_dir is not None:
        save_run(model, tokenizer, log, out_dir)  # replaces out_dir whole (the training state goes with it)
    return model, tokenizer, log


def _arg(check: Callable, kind: type) -> Callable[[str], object]:
    """An argparse `type=` that parses `kind` and validates it, so bad values are usage errors."""

    def parse(text: str):
        try:
            return check("value", kind(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).replace("value ", "", 1)) from None

    parse.__name__ = kind.__name__
    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m moe_edu.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = TrainConfig()
    pos_int, pos_float = _arg(positive_int, int), _arg(positive_float, float)
    nonneg_float = _arg(nonnegative_float, float)
    p.add_argument("--preset", default=d.preset, choices=sorted(PRESETS))
    p.add_argument("--steps", type=pos_int, default=d.steps)
    p.add_argument("--out", default="runs/tiny", help="output directory (default: runs/tiny)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (at the end of the run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--checkpoint-every",
        type=_arg(nonnegative_int, int),
        default=50,
        help="save the training state to <out>/checkpoint every N steps (0: never; default 50)",
    )
    p.add_argument("--vocab-size", type=_arg(lambda n, v: int_in_range(n, v, 259), int), default=d.vocab_size)
    p.add_argument("--seq-len", type=_arg(lambda n, v: int_in_range(n, v, 2), int), default=d.seq_len)
    p.add_argument("--batch-size", type=pos_int, default=d.batch_size)
    p.add_argument("--lr", type=pos_float, default=d.lr)
    p.add_argument("--aux-loss-coef", type=nonneg_float, default=d.aux_loss_coef)
    p.add_argument("--z-loss-coef", type=nonneg_float, default=d.z_loss_coef)
    p.add_argument("--eval-every", type=pos_int, default=d.eval_every)
    p.add_argument("--seed", type=_arg(nonnegative_int, int), default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--threads", type=pos_int, default=None, help="torch CPU threads (results depend on it)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:  # everything is checked before the corpus is built
        tc = TrainConfig(
            preset=a.preset,
            steps=a.steps,
            vocab_size=a.vocab_size,
            seq_len=a.seq_len,
            batch_size=a.batch_size,
            lr=a.lr,
            aux_loss_coef=a.aux_loss_coef,
            z_loss_coef=a.z_loss_coef,
            eval_every=a.eval_every,
            seed=a.seed,
            device=a.device,
        )
        device = pick_device(a.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {a.device}: CUDA is not available here")
        check_out_dir(a.out, overwrite=a.overwrite, resume=a.resume)
    except (ValueError, RuntimeError) as err:
        p.error(str(err))
    if a.threads:
        torch.set_num_threads(a.threads)
    args = sys.argv[1:] if argv is None else list(argv)
    for flag in ("--overwrite", "--resume"):  # how the directory is written, not what is trained
        while flag in args:
            args.remove(flag)
    command = "python -m moe_edu.train " + " ".join(args)
    try:
        _, _, log = train(
            tc,
            a.out,
            progress=not a.no_progress,
            command=command,
            overwrite=a.overwrite,
            resume=a.resume,
            checkpoint_every=a.checkpoint_every,
        )
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    f = log["final"]
    eval_ce = f.get("eval_ce")
    print(
        f"done in {log['wall_seconds']} s: train ce {f['ce']:.3f}, eval ce "
        f"{float('nan') if eval_ce is None else eval_ce:.3f}, imbalance {f['imbalance']:.2f} -> {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

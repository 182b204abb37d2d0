"""Train a small Mixtral on the offline corpus: AdamW, warmup + cosine, tqdm, periodic eval.

`train(config, out_dir)` writes `model.safetensors`, `config.json`, `tokenizer.json`,
`train_log.json` and a README into `out_dir`, all at once at the end. Every `checkpoint_every`
steps the training state goes to `<out>/checkpoint/`; `resume=True` continues from it to the same
final weights as an uninterrupted run. A non-finite loss or gradient raises `NonFiniteError` and
saves nothing. The command line is `python -m moe_edu.train` (`moe_edu.experiments.train`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path

import torch

from ..data.corpus import build_corpus, corpus_sha256, split_corpus
from ..io.atomic import check_swappable
from ..model import MixtralForCausalLM
from ..tokenizer import Tokenizer
from ..validation import nonnegative_int
from .config import TrainConfig
from .data import TokenStreams, train_tokenizer
from .loop import eval_loss, make_optimizer, train_steps
from .run_dir import STATE_DIR, load_training_state, read_state_meta, save_run, save_training_state


# ---------------------------------------------------------------------- training
class ResumeError(ValueError):
    """`--resume` with other settings, corpus, tokenizer, thread count or torch than the saved run (a usage error)."""


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse, before any work, an `--out` that would clobber a run or that cannot be written.

    A trial in the real parent (`atomic.check_swappable`) refuses what the final swap could not
    do: the working directory, a mount point, a dangling link, a read-only or immutable folder.
    """
    out = Path(out)
    try:
        check_swappable(out)
    except ValueError as err:
        raise ValueError(f"--out {err}") from None
    state = out / STATE_DIR / "training_state.json"
    if resume and not state.is_file():
        raise ValueError(f"--resume: no training state in {out / STATE_DIR} (is --out the interrupted run's?)")
    if not resume and not overwrite and out.is_dir() and any(out.iterdir()):
        raise ValueError(
            f"--out {out} exists and is not empty: pass --overwrite to replace the run in it (only the "
            f"files a run writes are replaced, at the end of a successful run), --resume to continue "
            f"it, or another --out"
        )
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
        saved = read_state_meta(state_dir)
        if saved["train_config"] != json.loads(json.dumps(dataclasses.asdict(tc))):
            diff = sorted(k for k, v in dataclasses.asdict(tc).items() if saved["train_config"].get(k) != v)
            raise ResumeError(f"--resume: the saved run in {state_dir} has other settings ({', '.join(diff)})")
        if saved["step"] + 1 >= tc.steps:
            raise ResumeError(f"--resume: the saved run in {state_dir} is at step {saved['step']} of {tc.steps}")
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    docs = build_corpus(seed=tc.seed)
    train_docs, held_docs = split_corpus(docs)
    tokenizer = train_tokenizer(train_docs, tc.vocab_size)
    fingerprint = {
        "corpus_sha256": corpus_sha256(docs),
        "tokenizer_sha256": hashlib.sha256(tokenizer.backend.to_str().encode()).hexdigest(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if resume:  # the same data, token ids and kernels, or the weights would silently differ
        changed = [k for k, v in fingerprint.items() if k in saved and saved[k] != v]
        if changed:
            what = ", ".join(f"{k} {saved[k]} -> {fingerprint[k]}" for k in changed)
            raise ResumeError(f"--resume: the run in {state_dir} was trained with another {what}")
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
                **fingerprint,
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
        "corpus_sha256": fingerprint["corpus_sha256"],
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

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
import os
import sys

import torch

from ..accounting import count_parameters
from ..io.lock import LockedError, out_lock
from ..presets import PRESETS
from ..training.config import TrainConfig
from ..training.loop import NonFiniteError
from ..training.run import ResumeError, check_out_dir, pick_device, train
from ..training.run_dir import TrainingStateError
from ..validation import int_in_range, nonnegative_float, nonnegative_int, positive_float, positive_int
from .args import arg_type


def check_memory(tc: TrainConfig) -> None:
    """Refuse sizes that cannot fit this machine's memory (a usage error now, not an allocator error later).

    An estimate, on the low side: fp32 weights, gradients and two AdamW moments (16 bytes per
    parameter), the logits of one batch with their gradient (8 bytes per token and vocabulary entry),
    the activations kept for the backward pass (about 12 H + 3 k I floats per token and layer) and
    one layer's attention scores (heads x T x T floats per sequence).
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows: no sysconf; the allocator will tell
        return
    c, tokens = tc.model_config(), tc.batch_size * tc.seq_len
    need = 16 * count_parameters(c).total + 8 * tokens * tc.vocab_size
    need += 4 * tokens * c.num_hidden_layers * (12 * c.hidden_size + 3 * c.num_experts_per_tok * c.intermediate_size)
    need += 4 * tokens * c.num_attention_heads * tc.seq_len
    if need > total:
        raise ValueError(
            f"--preset {tc.preset} with --vocab-size {tc.vocab_size}, --batch-size {tc.batch_size} and --seq-len "
            f"{tc.seq_len} needs about {need / 2**30:.1f} GiB or more, this machine has {total / 2**30:.1f} GiB"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m moe_edu.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = TrainConfig()
    pos_int, pos_float = arg_type(positive_int, int), arg_type(positive_float, float)
    nonneg_float = arg_type(nonnegative_float, float)
    p.add_argument("--preset", default=d.preset, choices=sorted(PRESETS))
    p.add_argument("--steps", type=pos_int, default=d.steps)
    p.add_argument("--out", default="runs/tiny", help="output directory (default: runs/tiny)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (at the end of the run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--checkpoint-every",
        type=arg_type(nonnegative_int, int),
        default=50,
        help="save the training state to <out>/checkpoint every N steps (0: never; default 50)",
    )
    p.add_argument("--vocab-size", type=arg_type(lambda n, v: int_in_range(n, v, 259), int), default=d.vocab_size)
    p.add_argument("--seq-len", type=arg_type(lambda n, v: int_in_range(n, v, 2), int), default=d.seq_len)
    p.add_argument("--batch-size", type=pos_int, default=d.batch_size)
    p.add_argument("--lr", type=pos_float, default=d.lr)
    p.add_argument("--aux-loss-coef", type=nonneg_float, default=d.aux_loss_coef)
    p.add_argument("--z-loss-coef", type=nonneg_float, default=d.z_loss_coef)
    p.add_argument("--eval-every", type=pos_int, default=d.eval_every)
    p.add_argument("--seed", type=arg_type(lambda n, v: int_in_range(n, v, 0, 2**63 - 1), int), default=d.seed)
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
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"--device {a.device}: training runs on cpu, cuda or mps")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {a.device}: CUDA is not available here")
        check_memory(tc)
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
        with out_lock(a.out):
            _, _, log = train(
                tc,
                a.out,
                progress=not a.no_progress,
                command=command,
                overwrite=a.overwrite,
                resume=a.resume,
                checkpoint_every=a.checkpoint_every,
            )
    except ResumeError as err:  # settings, corpus, tokenizer or threads changed since the interruption
        p.error(str(err))
    except (NonFiniteError, TrainingStateError, LockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk or a vanished folder while saving: the last saved state is intact
        print(
            f"error: cannot write the run into {a.out}: {err}; its last training state (if any) is intact, "
            f"--resume continues from it once there is room",
            file=sys.stderr,
        )
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

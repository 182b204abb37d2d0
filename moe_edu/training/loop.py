"""The training loop: AdamW with warmup + cosine, a log per step, and a stop on divergence.

`train.train` runs it over the corpus for a whole run; notebook 07 and `finetune` call
`train_steps` directly. Nothing here touches files: periodic checkpoints are an `on_step`
callback (see `train.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..analysis import load_imbalance, routing_load
from ..validation import int_in_range, positive_int


def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup for `warmup` steps, then cosine from lr down to lr * min_ratio."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class NonFiniteError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite: the run diverged."""


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on embeddings, norms)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def _check_finite(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> None:
    if not (bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))):
        raise NonFiniteError(
            f"step {step}: loss {float(loss)}, gradient norm {float(grad_norm)} (lr {lr:g}): training diverged "
            "and was stopped before the optimizer step; nothing was saved as a result (try a smaller --lr)"
        )


def train_steps(
    model,
    next_batch: Callable[[int], torch.Tensor],
    steps: int,
    *,
    lr: float = 3e-3,
    weight_decay: float = 0.1,
    warmup: int = 0,
    min_lr_ratio: float = 0.1,
    grad_clip: float = 1.0,
    log_every: int = 1,
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    log: list[dict] | None = None,
    on_step: Callable[[int, torch.optim.Optimizer, list[dict]], None] | None = None,
) -> list[dict]:
    """The loop: AdamW + warmup/cosine on `next_batch(step) -> (B, T) ids`; returns the log.

    Each log entry: step, lr, loss (total), ce, aux, z, router logit RMS, imbalance
    (max/mean expert load, 1 = balanced) and the (L, E) expert load of that step's batch.
    A resumed run passes its restored `optimizer`, `start_step` and `log` so far; `on_step`
    runs after every step (periodic checkpoints). A non-finite loss or gradient norm raises
    `NonFiniteError` before the optimizer step.
    """
    positive_int("steps", steps)
    int_in_range("start_step", start_step, 0, steps)
    opt = optimizer or make_optimizer(model, lr, weight_decay)
    cfg, log = model.config, list(log or [])
    bar = tqdm(range(start_step, steps), disable=not progress, dynamic_ncols=True, initial=start_step, total=steps)
    model.train()
    params = list(model.parameters())
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        ids = next_batch(step).to(model.device)  # (B, T)
        out = model(ids, labels=ids)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        _check_finite(step, out.loss.detach(), norm, opt.param_groups[0]["lr"])
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            load = routing_load(out.router_logits, cfg.num_experts_per_tok)  # (L, E)
            aux, z = float(out.aux_loss.detach()), float(out.z_loss.detach())
            ce = float(out.loss.detach()) - cfg.router_aux_loss_coef * aux - cfg.router_z_loss_coef * z
            rms = float(torch.stack([t.detach().float().pow(2).mean() for t in out.router_logits]).mean().sqrt())
            entry = {
                "step": step,
                "lr": opt.param_groups[0]["lr"],
                "loss": float(out.loss.detach()),
                "ce": ce,
                "aux": aux,
                "z": z,
                "logit_rms": rms,
                "imbalance": load_imbalance(load),
                "load": [[round(float(v), 5) for v in row] for row in load],
            }
            if evaluate is not None and eval_every and (step % eval_every == 0 or step == steps - 1):
                entry["eval_ce"] = evaluate()
                model.train()
            log.append(entry)
            bar.set_postfix(loss=f"{entry['ce']:.3f}", imb=f"{entry['imbalance']:.2f}")
        if on_step is not None:
            on_step(step, opt, log)
    model.eval()
    return log


@torch.no_grad()
def eval_loss(model, batches: list[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (no router losses) over fixed batches."""
    model.eval()
    total = 0.0
    for ids in batches:
        ids = ids.to(model.device)
        logits = model(ids).logits  # (B, T, V)
        total += float(F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))
    return total / len(batches)

"""Fine-tuning an MoE: which parameters train (the regime) and whether the aux loss stays on.

Regimes (`REGIMES`):

- "everything"      every parameter trains;
- "router_frozen"   the routers (`mlp.gate.weight` of every layer) are fixed, so routing can
                    change only through the hidden states feeding them;
- "experts_frozen"  the experts are fixed; attention, norms, embeddings and routers train.
                    (ST-MoE, Zoph et al. 2022, report that freezing the MoE parameters worked
                    almost as well as updating everything, while updating only them hurt.)

`finetune` runs `moe_edu.train.train_steps` on a copy of the model, with the aux-loss
coefficient set in the copy's config (0 turns it off).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from ..model import MixtralForCausalLM
from ..training.loop import train_steps

REGIMES = ("everything", "router_frozen", "experts_frozen")


def is_router(name: str) -> bool:
    """A router weight: `model.layers.{i}.mlp.gate.weight`."""
    return ".mlp.gate." in name


def is_expert(name: str) -> bool:
    """An expert weight: `model.layers.{i}.mlp.experts.*`."""
    return ".mlp.experts." in name


def apply_regime(model: torch.nn.Module, regime: str) -> dict[str, int]:
    """Set requires_grad by regime; returns {"trainable": n, "frozen": m} parameter counts."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    frozen_if = {"everything": lambda n: False, "router_frozen": is_router, "experts_frozen": is_expert}[regime]
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen_if(name))
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


def finetune(
    model: MixtralForCausalLM,
    next_batch: Callable[[int], torch.Tensor],
    steps: int,
    *,
    regime: str = "everything",
    aux_loss_coef: float | None = None,
    lr: float = 1e-3,
    **train_options,
) -> tuple[MixtralForCausalLM, list[dict]]:
    """Fine-tune a deep copy of `model` (the original is untouched); returns (tuned model, log).

    aux_loss_coef: the router_aux_loss_coef during fine-tuning (None keeps the model's; 0 = off).
    train_options go to `train_steps` (warmup, weight_decay, progress, ...).
    """
    tuned = copy.deepcopy(model)
    if aux_loss_coef is not None:
        tuned.config = tuned.config.replace(router_aux_loss_coef=float(aux_loss_coef))
    apply_regime(tuned, regime)
    train_options.setdefault("progress", False)
    train_options.setdefault("weight_decay", 0.0)
    log = train_steps(tuned, next_batch, steps, lr=lr, **train_options)
    for p in tuned.parameters():
        p.requires_grad_(True)
    return tuned, log

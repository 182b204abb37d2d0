"""Fine-tuning an MoE: which parameters train (the regime) and whether the aux loss stays on.

Regimes (`REGIMES`):

- "everything"      every parameter trains;
- "router_frozen"   the routers (`mlp.gate.weight` of every layer) are fixed, so routing can
                    change only through the hidden states feeding them;
- "experts_frozen"  the experts are fixed; attention, norms, embeddings and routers train.
                    (ST-MoE, Zoph et al. 2022, report that freezing the MoE parameters worked
                    almost as well as updating everything, while updating only them hurt.)
- "esft"            Expert-Specialized Fine-Tuning (Wang et al. 2024, arXiv 2407.01906): only
                    the experts the target domain uses most train (`esft_experts`); routers,
                    attention, norms, embeddings and every other expert stay fixed.

The experts of a layer live in one fused tensor (E, ., .), so ESFT cannot freeze an expert by
`requires_grad`: `finetune` masks the gradient rows of the unselected experts instead (with
AdamW and no weight decay a row whose gradient is always zero never moves).

`finetune` runs `moe_edu.training.loop.train_steps` on a copy of the model, with the aux-loss
coefficient set in the copy's config (0 turns it off).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from ..analysis import routing_load
from ..model import MixtralForCausalLM
from ..routing import softmax_topk
from ..training.loop import train_steps
from ..validation import one_of, probability

REGIMES = ("everything", "router_frozen", "experts_frozen", "esft")
SCORES = ("token", "gate")


def is_router(name: str) -> bool:
    """A router weight: `model.layers.{i}.mlp.gate.weight`."""
    return ".mlp.gate." in name


def is_expert(name: str) -> bool:
    """An expert weight: `model.layers.{i}.mlp.experts.*`."""
    return ".mlp.experts." in name


def _layer_of(name: str) -> int:
    """`model.layers.{i}.…` -> i."""
    return int(name.split("model.layers.")[1].split(".")[0])


def _check_experts(model: torch.nn.Module, experts: Sequence[Sequence[int]] | None) -> list[list[int]]:
    L, E = model.config.num_hidden_layers, model.config.num_local_experts
    if experts is None or len(experts) != L or not all(all(0 <= int(e) < E for e in row) for row in experts):
        raise ValueError(f"experts must list, for each of the {L} layers, expert ids in [0, {E}) (got {experts!r})")
    return [sorted({int(e) for e in row}) for row in experts]


def apply_regime(model: torch.nn.Module, regime: str, experts: Sequence[Sequence[int]] | None = None) -> dict[str, int]:
    """Set requires_grad by regime; returns {"trainable": n, "frozen": m} parameter counts.

    experts: for "esft" only, the trainable experts of each layer (`esft_experts`). Their fused
    tensors keep requires_grad (the other rows are frozen by `finetune`'s gradient mask) and the
    counts are per expert row.
    """
    one_of("regime", regime, REGIMES)
    if regime == "esft":
        experts = _check_experts(model, experts)
    frozen_if = {
        "everything": lambda n: False,
        "router_frozen": is_router,
        "experts_frozen": is_expert,
        "esft": lambda n: not is_expert(n),
    }[regime]
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen_if(name))
        if regime == "esft" and p.requires_grad:
            share = len(experts[_layer_of(name)]) / p.shape[0]  # rows (experts) that train
            counts["trainable"] += round(p.numel() * share)
            counts["frozen"] += p.numel() - round(p.numel() * share)
        else:
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


@torch.no_grad()
def expert_scores(model: MixtralForCausalLM, batches: Sequence[torch.Tensor], kind: str = "token") -> torch.Tensor:
    """(L, E) how much a domain's text (`batches` of ids (B, T)) uses each expert; each row sums to 1.

    ESFT's two scores: "token" = the token-selection ratio (share of the top-k assignments),
    "gate" = the average gate score (the renormalised top-k weight an expert receives, averaged
    over tokens; 0 for a token that did not pick it).
    """
    one_of("kind", kind, SCORES)
    model.eval()
    k, rows = model.config.num_experts_per_tok, []
    for ids in batches:
        logits = model(ids.to(model.device), output_router_logits=True).router_logits  # L x (T, E)
        if kind == "token":
            rows.append(routing_load(logits, k).float())  # (L, E)
            continue
        per_layer = []
        for t in logits:
            weights, chosen = softmax_topk(t.float(), k)  # (T, k), (T, k): weights sum to 1 per token
            gate = torch.zeros_like(t, dtype=torch.float32).scatter_(-1, chosen, weights)  # (T, E)
            per_layer.append(gate.mean(0))  # (E,)
        rows.append(torch.stack(per_layer))  # (L, E)
    return torch.stack(rows).mean(0)  # (L, E)


def esft_experts(scores: torch.Tensor, p: float) -> list[list[int]]:
    """ESFT's selection: per layer, the highest-scoring experts until their scores add up to >= p.

    scores (L, E), rows summing to 1 (`expert_scores`). p in (0, 1]: the share of the domain's
    routing that the tuned experts must cover (the paper's threshold; DeepSeek's script uses 0.2
    with 64 fine-grained experts, top-6).
    """
    probability("p", p)
    if p <= 0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    chosen = []
    for row in scores.float():
        order = torch.argsort(row, descending=True, stable=True).tolist()
        picked, total = [], 0.0
        for e in order:
            if total >= p:
                break
            picked.append(e)
            total += float(row[e])
        chosen.append(sorted(picked))
    return chosen


def _mask_unselected_experts(model: torch.nn.Module, experts: list[list[int]]) -> list:
    """Zero the gradient rows of every expert not in experts[layer]; returns the hook handles."""
    handles = []
    for name, p in model.named_parameters():
        if is_expert(name):
            keep = torch.zeros(p.shape[0], *([1] * (p.dim() - 1)), dtype=p.dtype, device=p.device)  # (E, 1, 1)
            keep[experts[_layer_of(name)]] = 1.0
            handles.append(p.register_hook(lambda g, keep=keep: g * keep))
    return handles


def finetune(
    model: MixtralForCausalLM,
    next_batch: Callable[[int], torch.Tensor],
    steps: int,
    *,
    regime: str = "everything",
    experts: Sequence[Sequence[int]] | None = None,
    aux_loss_coef: float | None = None,
    lr: float = 1e-3,
    **train_options,
) -> tuple[MixtralForCausalLM, list[dict]]:
    """Fine-tune a deep copy of `model` (the original is untouched); returns (tuned model, log).

    experts: the trainable experts per layer, for regime "esft" (`esft_experts`).
    aux_loss_coef: the router_aux_loss_coef during fine-tuning (None keeps the model's; 0 = off).
    train_options go to `train_steps` (warmup, weight_decay, progress, ...).
    """
    tuned = copy.deepcopy(model)
    if aux_loss_coef is not None:
        tuned.config = tuned.config.replace(router_aux_loss_coef=float(aux_loss_coef))
    apply_regime(tuned, regime, experts)
    train_options.setdefault("progress", False)
    train_options.setdefault("weight_decay", 0.0)
    handles = []
    if regime == "esft":
        if train_options["weight_decay"] != 0:
            raise ValueError(
                f"weight_decay must be 0 for regime 'esft' (decay would move the frozen experts), "
                f"got {train_options['weight_decay']}"
            )
        handles = _mask_unselected_experts(tuned, _check_experts(tuned, experts))
    try:
        log = train_steps(tuned, next_batch, steps, lr=lr, **train_options)
    finally:
        for h in handles:
            h.remove()
    for p in tuned.parameters():
        p.requires_grad_(True)
    return tuned, log

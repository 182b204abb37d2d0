"""Expert pruning and merging: one expert fewer per layer, with no retraining.

Pruning drops expert d of a layer: its router row and its weights go, and each token is
re-routed among the E-1 others with the usual softmax -> top-k -> renormalise. That equals
setting d's logit to -inf in the old router (the renormalisation cancels the softmax's sum),
so a token that had d in its top-k takes its next choice, and its weights again sum to 1.

Merging replaces the two most similar experts i, j by one whose weights are the usage-weighted
average (u_i W_i + u_j W_j) / (u_i + u_j); the router keeps the row of the more used of the two
(MC-SMoE's "dominant expert"). Similarity is measured on what the experts compute (cosine of
their outputs on the layer's real inputs), not on raw weights: two experts trained from
different random inits have their hidden units in an arbitrary order, so their weights can be
far apart while their functions are close (and averaging such weights is a gamble).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..analysis import routing_load
from ..model import MixtralForCausalLM
from ..routing import softmax_topk
from ..validation import index_in_range


@torch.no_grad()
def expert_usage(model: MixtralForCausalLM, batches: Sequence[torch.Tensor]) -> torch.Tensor:
    """(L, E) share of the top-k assignments each expert received over `batches` of ids (B, T)."""
    if len(batches) == 0:
        raise ValueError("expert_usage: batches is empty: give at least one (B, T) batch of token ids")
    model.eval()
    loads = [
        routing_load(
            model(ids.to(model.device), output_router_logits=True).router_logits, model.config.num_experts_per_tok
        )
        for ids in batches
    ]  # each (L, E)
    return torch.stack(loads).mean(0)  # (L, E)


@torch.no_grad()
def layer_inputs(model: MixtralForCausalLM, ids: torch.Tensor) -> list[torch.Tensor]:
    """What each layer's MoE block receives for ids (B, T): one (B*T, H) tensor per layer."""
    seen: list[torch.Tensor] = []
    hooks = [
        layer.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].reshape(-1, args[0].shape[-1])))
        for layer in model.model.layers
    ]
    try:
        model.eval()
        model(ids.to(model.device))
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def expert_similarity(experts, x: torch.Tensor) -> torch.Tensor:
    """(E, E) cosine similarity of what the experts output on the same rows x (N, H)."""
    out = experts.dense(x).flatten(1).float()  # (E, N*H): every expert on every row
    out = out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (E, N*H)
    return out @ out.T  # (E, E)


def most_similar_pair(similarity: torch.Tensor) -> tuple[int, int]:
    """(i, j), i < j: the off-diagonal maximum of an (E, E) similarity matrix."""
    sim = similarity.clone().float()  # (E, E)
    sim.fill_diagonal_(float("-inf"))
    flat = int(sim.argmax())
    i, j = divmod(flat, sim.shape[1])
    return (i, j) if i < j else (j, i)


def pruned_routing(logits: torch.Tensor, dropped: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Route without expert `dropped`: logits (T, E) -> weights (T, k) fp32 summing to 1, expert_ids (T, k)
    in the original numbering (never `dropped`). Softmax over the E-1 others, top-k, renormalise."""
    E = logits.shape[-1]
    dropped = index_in_range(f"pruned_routing: dropped (E={E})", dropped, 0, E - 1)
    top_k = index_in_range(f"pruned_routing: top_k (E-1={E - 1} experts remain)", top_k, 1, E - 1)
    masked = logits.float().clone()  # (T, E)
    masked[:, dropped] = float("-inf")
    probs = torch.softmax(masked, dim=-1)  # (T, E), 0 for the dropped expert
    weights, expert_ids = torch.topk(probs, top_k, dim=-1)  # (T, k), (T, k)
    return weights / weights.sum(dim=-1, keepdim=True), expert_ids


def _one_fewer(model: MixtralForCausalLM) -> MixtralForCausalLM:
    """A model with E-1 experts per layer, every non-MoE weight copied (MoE weights filled by the caller)."""
    cfg = model.config
    E, k = cfg.num_local_experts, cfg.num_experts_per_tok
    if k > E - 1:
        raise ValueError(f"cannot remove an expert: E-1 = {E - 1} experts would be fewer than top_k = {k}")
    new = MixtralForCausalLM(cfg.replace(num_local_experts=E - 1)).to(model.device, model.lm_head.weight.dtype)
    rest = {n: v for n, v in model.state_dict().items() if ".mlp." not in n}
    result = new.load_state_dict(rest, strict=False)
    not_moe = [k for k in result.missing_keys if ".mlp." not in k]
    if not_moe or result.unexpected_keys:  # only the MoE weights may be left for the caller
        raise RuntimeError(
            f"_one_fewer: copying the non-MoE weights left {not_moe} missing, {result.unexpected_keys} extra"
        )
    return new.eval()


def _check_per_layer(model: MixtralForCausalLM, values: Sequence[int], what: str) -> list[int]:
    L, E = model.config.num_hidden_layers, model.config.num_local_experts
    values = list(values)
    if len(values) != L:
        raise ValueError(f"{what} must give one expert in [0, {E}) for each of the {L} layers, got {values}")
    return [index_in_range(f"{what}[{layer}]", v, 0, E - 1) for layer, v in enumerate(values)]


@torch.no_grad()
def prune_experts(model: MixtralForCausalLM, drop: Sequence[int]) -> MixtralForCausalLM:
    """Drop expert `drop[l]` of every layer l; tokens re-route among the others (renormalised top-k)."""
    drop = _check_per_layer(model, drop, "drop")
    new = _one_fewer(model)
    E = model.config.num_local_experts
    for d, old, layer in zip(drop, model.model.layers, new.model.layers, strict=True):
        keep = torch.tensor([e for e in range(E) if e != d], device=model.device)  # (E-1,)
        layer.mlp.gate.weight.copy_(old.mlp.gate.weight[keep])  # (E-1, H)
        layer.mlp.experts.gate_up_proj.copy_(old.mlp.experts.gate_up_proj[keep])  # (E-1, 2I, H)
        layer.mlp.experts.down_proj.copy_(old.mlp.experts.down_proj[keep])  # (E-1, H, I)
    return new


@torch.no_grad()
def merge_experts(
    model: MixtralForCausalLM, pairs: Sequence[tuple[int, int]], usage: torch.Tensor
) -> MixtralForCausalLM:
    """Merge the pair (i, j) of every layer into one expert: usage-weighted average of their weights.

    usage (L, E): each expert's share of assignments (`expert_usage`). The merged expert takes
    slot min(i, j); the router row of the more used of the two is kept; slot max(i, j) is removed.
    """
    cfg = model.config
    L, E = cfg.num_hidden_layers, cfg.num_local_experts
    if not isinstance(usage, torch.Tensor) or tuple(usage.shape) != (L, E):
        raise ValueError(f"usage must be a tensor of shape (layers, experts) = {(L, E)}, got {usage!r:.60}")
    if not bool(torch.isfinite(usage).all()) or bool((usage < 0).any()):
        raise ValueError("usage must hold finite shares >= 0 (negative ones would extrapolate, inf gives NaN weights)")
    pairs = list(pairs)
    if len(pairs) != L or any(len(p) != 2 for p in pairs):
        raise ValueError(f"pairs must give two different experts in [0, {E}) for each of the {L} layers, got {pairs}")
    pairs = [tuple(index_in_range(f"pairs[{layer}]", e, 0, E - 1) for e in p) for layer, p in enumerate(pairs)]
    if any(i == j for i, j in pairs):
        raise ValueError(f"pairs must give two different experts for each layer, got {pairs}")
    new = _one_fewer(model)
    for l, ((i, j), old, layer) in enumerate(zip(pairs, model.model.layers, new.model.layers, strict=True)):
        i, j = min(i, j), max(i, j)
        u = usage[l].to(model.device).float()  # (E,)
        wi, wj = (u[i] / (u[i] + u[j]), u[j] / (u[i] + u[j])) if u[i] + u[j] > 0 else (0.5, 0.5)
        keep = torch.tensor([e for e in range(E) if e != j], device=model.device)  # (E-1,) slot i stays
        gate = old.mlp.gate.weight.clone()  # (E, H)
        gate[i] = gate[i] if u[i] >= u[j] else gate[j]  # the dominant expert's router row
        layer.mlp.gate.weight.copy_(gate[keep])  # (E-1, H)
        for name in ("gate_up_proj", "down_proj"):
            w = getattr(old.mlp.experts, name).clone()  # (E, ., .)
            w[i] = wi * w[i] + wj * w[j]
            getattr(layer.mlp.experts, name).copy_(w[keep])  # (E-1, ., .)
    return new


@torch.no_grad()
def reconstruction_errors(block, x: torch.Tensor) -> torch.Tensor:
    """(E,) mean squared change of the block's output on rows x (N, H) when each expert in turn is dropped.

    Lu et al. 2024 ("Not All Experts are Equal", layer-wise pruning) keep, per layer, the expert
    subset whose output on calibration data is closest to the full layer's; with one expert to
    drop the subsets are the E choices of the dropped one.
    """
    k = block.config.num_experts_per_tok
    logits = block.gate.logits(x).float()  # (N, E)
    out = block.experts.dense(x).float()  # (E, N, H): every expert on every row
    rows = torch.arange(x.shape[0], device=x.device)[:, None]  # (N, 1)

    def mix(weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return (weights[..., None] * out[ids, rows]).sum(1)  # (N, H)

    full = mix(*softmax_topk(logits, k))  # (N, H): the layer as it is
    return torch.stack([(mix(*pruned_routing(logits, d, k)) - full).pow(2).mean() for d in range(logits.shape[1])])


def least_used(usage: torch.Tensor) -> list[int]:
    """The least used expert of each layer: usage (L, E) -> L indices."""
    return usage.argmin(dim=1).tolist()


def random_experts(num_layers: int, num_experts: int, seed: int = 0) -> list[int]:
    """One expert per layer drawn uniformly at random (the baseline for `least_used`)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(num_experts, (num_layers,), generator=gen).tolist()

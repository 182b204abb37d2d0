"""Router losses: Switch-style load balancing (as transformers computes it) and ST-MoE's z-loss.

Notebook 07 trains the tiny model with and without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _stack_layers(router_logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(router_logits, torch.Tensor):
        router_logits = (router_logits,)
    if len(router_logits) == 0:
        raise ValueError("router_logits is empty: pass one (tokens, E) tensor per layer")
    shapes = {tuple(t.shape) for t in router_logits}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"router_logits must be (tokens, E) tensors of one shape, got shapes {sorted(shapes)}")
    device = router_logits[0].device
    return torch.stack([t.to(device) for t in router_logits])  # (L, T, E)


def load_balancing_loss(
    router_logits: torch.Tensor | Sequence[torch.Tensor],
    num_experts: int,
    top_k: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Switch Transformer's auxiliary loss, E * sum_e f_e * P_e, over all layers.

    f_e: share of the (token, slot) assignments that went to expert e (counts top-k, so
    the shares sum to k); P_e: mean router probability of e. Under uniform routing
    f_e = k/E and P_e = 1/E, so the loss equals k; it grows as routing collapses.
    `attention_mask` (B, T) leaves padding tokens out, as in transformers.
    """
    logits = _stack_layers(router_logits)  # (L, T, E)
    if logits.shape[-1] != num_experts:
        raise ValueError(f"router_logits have {logits.shape[-1]} experts, num_experts={num_experts}")
    probs = torch.softmax(logits.float(), dim=-1)  # (L, T, E)
    chosen = torch.topk(probs, top_k, dim=-1).indices  # (L, T, k)
    hits = torch.zeros_like(probs).scatter_(-1, chosen, 1.0)  # (L, T, E), k ones per row
    if attention_mask is None:
        mask = torch.ones(logits.shape[1], device=logits.device)  # (T,)
    else:
        mask = attention_mask.reshape(-1).to(device=logits.device, dtype=torch.float32)  # (T,)
        if mask.numel() != logits.shape[1]:
            raise ValueError(
                f"attention_mask has {mask.numel()} positions but router_logits have {logits.shape[1]} tokens"
            )
    rows = mask.sum() * logits.shape[0]  # tokens counted over all layers
    load_share = (hits * mask[:, None]).sum(dim=(0, 1)) / rows  # (E,) f_e: share of tokens per expert, sums to k
    mean_prob = (probs * mask[:, None]).sum(dim=(0, 1)) / rows  # (E,) P_e, sums to 1
    return num_experts * torch.sum(load_share * mean_prob)


def router_z_loss(router_logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)^2, which keeps logits small."""
    logits = _stack_layers(router_logits)  # (L, T, E)
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()

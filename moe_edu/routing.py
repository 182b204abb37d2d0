"""Gating: a bias-free linear router, softmax in fp32, top-k, renormalisation.

Notebooks 01 (gating), 02 (top-k) and 04 (weighted combining) derive these by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32 for the routing math; fp32 and fp64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def softmax_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' order: softmax over all E experts (fp32), keep the top k, renormalise.

    Returns `(weights, experts)`, both `(T, k)`; weights are fp32 (fp64 for fp64 input) and sum to 1.
    """
    probs = torch.softmax(at_least_fp32(logits), dim=-1)  # (T, E)
    top_p, top_i = torch.topk(probs, k, dim=-1)  # (T, k), (T, k)
    return top_p / top_p.sum(dim=-1, keepdim=True), top_i  # (T, k), (T, k)


def topk_softmax(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mistral-inference's order: top k of the logits, then softmax over those k (fp32).

    Equal to `softmax_topk` (notebook 04 proves it): exp(l_i)/Z cancels Z on renormalising.
    """
    top_l, top_i = torch.topk(logits, k, dim=-1)  # (T, k), (T, k)
    return torch.softmax(at_least_fp32(top_l), dim=-1), top_i  # (T, k), (T, k)


ROUTING_ORDERS = {"softmax_topk": softmax_topk, "topk_softmax": topk_softmax}


class TopKRouter(nn.Module):
    """Mixtral's gate: logits = x W^T (no bias); weights = top-k of softmax, renormalised.

    `fp32=True` computes the logits in float32 whatever the input dtype ("router in
    fp32", the usual practice for bf16 training). `fp32=False` computes them in the
    input dtype exactly as transformers does.
    """

    def __init__(self, hidden_size: int, num_experts: int, top_k: int, *, fp32: bool = True,
                 order: str = "softmax_topk") -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if order not in ROUTING_ORDERS:
            raise ValueError(f"order must be one of {sorted(ROUTING_ORDERS)}, got {order!r}")
        self.top_k, self.num_experts, self.fp32, self.order = top_k, num_experts, fp32, order
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))  # (E, H)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (T, H) -> logits (T, E), weights (T, k) fp32, experts (T, k) int64."""
        if self.fp32:
            logits = F.linear(at_least_fp32(x), at_least_fp32(self.weight))  # (T, E)
        else:
            logits = F.linear(x, self.weight)  # (T, E)
        weights, experts = ROUTING_ORDERS[self.order](logits, self.top_k)  # (T, k), (T, k)
        return logits, weights, experts

    def extra_repr(self) -> str:
        return f"hidden={self.weight.shape[1]}, experts={self.num_experts}, top_k={self.top_k}, fp32={self.fp32}"

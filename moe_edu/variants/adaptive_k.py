"""Adaptive k: a per-token number of experts, decided from the router's own confidence.

A fixed top-k spends k expert calls on every token, sure or unsure. Two post-hoc rules cut that:

- **top-p** (Huang et al. 2024, "Harder Tasks Need More Experts: Dynamic Routing in MoE Models",
  arXiv 2403.07652): keep the fewest best experts whose router probabilities sum to at least p —
  one expert for a confident token, more for an unsure one (up to `max_k`);
- **ratio skip** (Lu et al. 2024, "Not All Experts are Equal", arXiv 2402.14800, on Mixtral): skip a
  lower-ranked expert when its weight is below `beta` times the top expert's.

Both return a `keep` mask over the (T, max_k) candidates; the kept weights are renormalised to sum to 1,
so a token left with one expert gets that expert's whole output. Skipped assignments run nothing
(`moe_edu.dispatch.dispatch_kept`). Huang et al. train with top-p; applied to a model trained with
top-k (as here, and as Lu et al. do) it is an approximation whose cost is the output change.
"""

from __future__ import annotations

import torch

from ..routing import Routing, TopKRouter, at_least_fp32
from ..validation import finite_float, int_in_range, one_of

ADAPTIVE_RULES = ("top_p", "ratio")


def top_p_keep(probs: torch.Tensor, p: float) -> torch.Tensor:
    """probs (T, k) sorted descending -> keep (T, k): the fewest leading experts whose mass reaches p.

    The best expert is always kept (nothing ranks above it); expert j is kept while the mass of the
    experts ranked above it is still below p.
    """
    finite_float("top_p_keep: p", p, gt=0, le=1)
    above = probs.cumsum(dim=-1) - probs  # (T, k): mass ranked above each candidate
    return above < p  # (T, k)


def ratio_keep(weights: torch.Tensor, beta: float) -> torch.Tensor:
    """weights (T, k) sorted descending -> keep (T, k): the best expert, and any with weight >= beta x the best."""
    finite_float("ratio_keep: beta", beta, ge=0, le=1)
    return weights >= beta * weights[:, :1]  # (T, k); column 0 always True


class AdaptiveKRouter(TopKRouter):
    """Mixtral's router over `max_k` candidates, then a per-token keep mask (`rule` "top_p" or "ratio").

    "top_p" reads the softmax probabilities over all E experts (Huang et al.); "ratio" the
    renormalised top-`max_k` weights (Lu et al.). `threshold` is p or beta.
    """

    def __init__(
        self, hidden_size: int, num_experts: int, max_k: int, *, rule: str = "top_p", threshold: float = 0.5
    ) -> None:
        super().__init__(hidden_size, num_experts, max_k)
        one_of("AdaptiveKRouter: rule", rule, ADAPTIVE_RULES)
        finite_float("AdaptiveKRouter: threshold", threshold, gt=0, le=1)
        self.rule, self.threshold = rule, threshold

    def forward(self, x: torch.Tensor) -> Routing:
        """x (T, H) -> Routing with weights (T, max_k) renormalised over the kept ones and keep (T, max_k)."""
        logits = self.logits(x)  # (T, E)
        probs = torch.softmax(at_least_fp32(logits), dim=-1)  # (T, E)
        top_p, expert_ids = torch.topk(probs, self.top_k, dim=-1)  # (T, max_k), sorted descending
        renormalised = top_p / top_p.sum(dim=-1, keepdim=True)  # (T, max_k): Mixtral's weights
        if self.rule == "top_p":
            keep = top_p_keep(top_p, self.threshold)  # (T, max_k)
        else:
            keep = ratio_keep(renormalised, self.threshold)  # (T, max_k)
        kept = top_p * keep  # (T, max_k)
        weights = kept / kept.sum(dim=-1, keepdim=True)  # (T, max_k), 0 where skipped
        return Routing(logits, weights, expert_ids, keep=keep)

    @classmethod
    def like(cls, router: TopKRouter, *, max_k: int | None = None, rule: str = "top_p", threshold: float = 0.5):
        """An adaptive router sharing `router`'s weight (the same Parameter, not a copy)."""
        E = router.num_experts
        max_k = router.top_k if max_k is None else int_in_range("AdaptiveKRouter.like: max_k", max_k, 1, E)
        new = cls(router.weight.shape[1], E, max_k, rule=rule, threshold=threshold)
        new.weight = router.weight
        new.fp32 = router.fp32
        return new

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rule={self.rule}, threshold={self.threshold}"


def experts_per_token(routing: Routing) -> float:
    """Mean number of experts that run per token (k for a routing without a keep mask)."""
    if routing.keep is None:
        return float(routing.expert_ids.shape[1])
    return routing.keep.float().sum(dim=1).mean().item()

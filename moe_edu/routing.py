"""Gating: a bias-free linear router, softmax in fp32, top-k, renormalisation.

A router maps tokens x (T, H) to a `Routing`: which experts each token goes to and with
what weight. `Router` holds the one weight every router shares (`weight`, (E, H), saved
as `gate.weight` inside a block); `TopKRouter` is Mixtral's rule. The other rules of the
MoE family (noisy top-k, Switch, GShard, expert choice) are `Router`s in `moe_edu.variants`,
plugged into the same `moe_edu.moe_block.MoEBlock`.

Notebooks 01 (gating), 02 (top-k) and 04 (weighted combining) derive these by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .losses import load_balancing_loss
from .validation import boolean, finite_float, int_in_range, one_of, positive_int


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32 for the routing math; fp32 and fp64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def softmax_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' order: softmax over all E experts (fp32), keep the top k, renormalise.

    Returns `(weights, expert_ids)`, both `(T, k)`; weights are fp32 (fp64 for fp64 input) and sum to 1.
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


def softmax_topk_unnormalised(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeekMoE's order: softmax over all E experts, keep the top k probabilities as they are."""
    return torch.topk(torch.softmax(at_least_fp32(logits), dim=-1), k, dim=-1)  # (T, k), (T, k)


ROUTING_ORDERS = {
    "softmax_topk": softmax_topk,
    "topk_softmax": topk_softmax,
    "softmax_topk_unnormalised": softmax_topk_unnormalised,
}

GATE_SCORES = ("softmax", "sigmoid")


@dataclass(frozen=True)
class GateChoices:
    """Three named design choices of a top-k gate; the defaults are Mixtral's exactly.

    - `score`: "softmax" over the E logits (Mixtral, Switch, DeepSeek-V2) or "sigmoid" of each logit on its own
      (DeepSeek-V3: an expert's affinity does not depend on the other experts' logits).
    - `normalize`: rescale the k chosen scores to sum to 1 (Mixtral, DeepSeek-V3) or keep them as they are
      (Switch's top-1 weight p < 1, DeepSeek-V2); with a sigmoid, unnormalised weights can sum to up to k.
    - `jitter`: Switch's router jitter: in training only, the *router's* input is multiplied element-wise by
      Uniform(1 - jitter, 1 + jitter) (0 = off); the experts still see the clean input.
    """

    score: str = "softmax"
    normalize: bool = True
    jitter: float = 0.0

    def __post_init__(self) -> None:
        one_of("GateChoices.score", self.score, GATE_SCORES)
        boolean("GateChoices.normalize", self.normalize)
        finite_float("GateChoices.jitter", self.jitter, ge=0, lt=1)


MIXTRAL_GATE = GateChoices()


def gate_weights(
    logits: torch.Tensor, k: int, choices: GateChoices = MIXTRAL_GATE
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (T, E) -> (weights, expert_ids), both (T, k): score (fp32), top k, optionally renormalise."""
    logits = at_least_fp32(logits)  # (T, E)
    scores = torch.softmax(logits, dim=-1) if choices.score == "softmax" else torch.sigmoid(logits)  # (T, E)
    top_s, top_i = torch.topk(scores, k, dim=-1)  # (T, k), (T, k)
    if choices.normalize:
        top_s = top_s / top_s.sum(dim=-1, keepdim=True)  # (T, k)
    return top_s, top_i


def jittered(x: torch.Tensor, jitter: float) -> torch.Tensor:
    """Switch's multiplicative router jitter: x * Uniform(1 - jitter, 1 + jitter), element-wise."""
    return x * torch.empty_like(x).uniform_(1.0 - jitter, 1.0 + jitter)  # (T, H)


@dataclass
class Routing:
    """A router's decision for T tokens, as k (expert, weight) assignments per token.

    Read it by name: `routing.logits`, `routing.weights`, `routing.expert_ids`. `keep` marks the assignments that run (None: all of them, the dropless case); `requested`
    marks those that asked for a place before a capacity limit (None: there was no queue).
    """

    logits: torch.Tensor  # (T, E) fp32: the logits the decision used
    weights: torch.Tensor  # (T, k) fp32 combine weights
    expert_ids: torch.Tensor  # (T, k) int64 expert of each assignment
    keep: torch.Tensor | None = None  # (T, k) bool: False = dropped (does not run, adds nothing)
    requested: torch.Tensor | None = None  # (T, k) bool: queued for a capacity-limited expert
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # router-specific values for its aux losses


class Router(nn.Module):
    """What every router shares: logits = x W^T with W (E, H) and no bias, in fp32 by default.

    `fp32=True` computes the logits in float32 whatever the input dtype ("router in fp32",
    the usual practice for bf16 training); `fp32=False` in the input dtype, as transformers
    does. Subclasses turn the logits into a `Routing`, name their auxiliary losses, set `top_k`
    (the width k of their `Routing`) and describe themselves for notebook 09's table.
    """

    top_k: int | None = None  # k, the assignments per token in this router's Routing; None: no rule yet
    label: str = "routed MoE"  # notebook 09's table: the variant's name
    gating: str = ""  # the gating function, in words
    capacity_rule: str = "none (dropless)"
    aux_loss_names: tuple[str, ...] = ()  # the keys of `aux_losses`

    def __init__(self, hidden_size: int, num_experts: int, *, fp32: bool = True) -> None:
        super().__init__()
        positive_int(f"{type(self).__name__}: hidden_size", hidden_size)
        positive_int(f"{type(self).__name__}: num_experts", num_experts)
        self.num_experts, self.fp32 = num_experts, fp32
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))  # (E, H)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, H) -> (T, E)."""
        if self.fp32:
            return F.linear(at_least_fp32(x), at_least_fp32(self.weight))  # (T, E)
        return F.linear(x, self.weight)  # (T, E)

    @property
    def experts_per_token(self) -> float:
        """Experts one token runs at inference (an average for expert choice)."""
        if self.top_k is None:  # NotImplementedError, not AttributeError: nn.Module.__getattr__ would mask that
            raise NotImplementedError(f"{type(self).__name__} sets no top_k: a routing rule defines top_k")
        return float(self.top_k)

    @property
    def k_text(self) -> str:
        """The k column of notebook 09's table."""
        return f"{self.experts_per_token:g}"

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) router weight, as transformers initialises Mixtral (meta tensors are skipped)."""
        if self.weight.device.type != "meta":
            nn.init.normal_(self.weight, 0.0, std)

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        """This rule's auxiliary losses, unweighted (none by default)."""
        return {}

    def extra_repr(self) -> str:
        return f"hidden={self.weight.shape[1]}, experts={self.num_experts}, fp32={self.fp32}"


class TopKRouter(Router):
    """Mixtral's gate: weights = top-k of softmax(x W^T), renormalised (paper eq. 1-2), dropless.

    `order` picks how: "softmax_topk" (transformers), "topk_softmax" (mistral-inference; equal),
    or "softmax_topk_unnormalised" (DeepSeekMoE: the top-k probabilities as they are).
    `choices` (a `GateChoices`) names the other gates of the family — sigmoid scores, no renormalisation,
    router jitter; with the default (Mixtral's) the computation is exactly the one above.
    """

    label = "Mixtral dropless top-k"
    gating = "softmax -> top-k -> renormalise"
    aux_loss_names = ("load_balancing",)

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        *,
        fp32: bool = True,
        order: str = "softmax_topk",
        choices: GateChoices = MIXTRAL_GATE,
    ) -> None:
        super().__init__(hidden_size, num_experts, fp32=fp32)
        int_in_range("top_k", top_k, 1, num_experts)
        one_of("order", order, ROUTING_ORDERS)
        if not isinstance(choices, GateChoices):
            raise TypeError(f"TopKRouter: choices must be a GateChoices, got {type(choices).__name__}")
        if order != "softmax_topk" and choices != MIXTRAL_GATE:
            raise ValueError(f"TopKRouter: give either order={order!r} or non-default choices, not both")
        self.top_k, self.order, self.choices = top_k, order, choices

    def forward(self, x: torch.Tensor) -> Routing:
        """x: (T, H) -> logits (T, E), weights (T, k) fp32, expert_ids (T, k) int64."""
        c = self.choices
        if self.training and c.jitter > 0:  # Switch: only the router sees the noisy input
            x = jittered(x, c.jitter)  # (T, H)
        logits = self.logits(x)  # (T, E)
        if c.score == "softmax" and c.normalize:  # Mixtral's gate, in the chosen order
            weights, expert_ids = ROUTING_ORDERS[self.order](logits, self.top_k)  # (T, k), (T, k)
        else:
            weights, expert_ids = gate_weights(logits, self.top_k, c)  # (T, k), (T, k)
        return Routing(logits, weights, expert_ids)

    def aux_losses(self, routing: Routing) -> dict[str, torch.Tensor]:
        """Switch-style load balancing over the top-k choices (what transformers adds for Mixtral)."""
        return {"load_balancing": load_balancing_loss(routing.logits, self.num_experts, self.top_k)}

    def extra_repr(self) -> str:
        changed = "" if self.choices == MIXTRAL_GATE else f", {self.choices}"
        return f"{super().extra_repr()}, top_k={self.top_k}{changed}"

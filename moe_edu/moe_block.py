"""The MoE block, composed: a router, the experts, and one dispatch-and-combine step.

    y = sum_{i in top-k(x W_g)} softmax(top-k(x W_g))_i * SwiGLU_i(x)      (paper, eq. 1-2)

`MoEBlock(router, experts)` is the one forward every MoE layer here runs (as torchtune
composes `MoE(experts=, router=)`): the router decides (`moe_edu.routing.Routing`), the
dispatch sends tokens to their experts and sums the weighted answers back, and optional
shared experts add their output for every token. A new routing rule is a new router
(`moe_edu.variants`); expert parallelism is a different dispatch (`moe_edu.parallel`).

`SparseMoeBlock(config)` is Mixtral's: `TopKRouter` + `Experts`, the same parameters and
numbers as transformers' `MixtralSparseMoeBlock`, returning `(y, router_logits)` with
router_logits `(B*T, E)`, transformers' convention.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .config import MixtralConfig
from .dispatch import Dispatch, dispatch_kept, get_dispatch
from .experts import Experts
from .layouts import export_block_state, load_block_state
from .routing import Router, Routing, TopKRouter


def flatten_tokens(x: torch.Tensor, weight: torch.Tensor, name: str, *, any_rank: bool = False) -> torch.Tensor:
    """x (B, T, H) (any (..., H) with `any_rank`) -> (N, H) for a layer `name` holding `weight` (..., H):
    a clear error for a bad type, rank, width or dtype."""
    hidden_size = weight.shape[-1]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    rank_ok = x.dim() >= 2 if any_rank else x.dim() == 3
    if not rank_ok or x.shape[-1] != hidden_size:
        lead = "(..., tokens" if any_rank else "(batch, tokens"
        raise ValueError(f"{name} expects x of shape {lead}, hidden_size={hidden_size}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating-point x, got dtype {x.dtype}")
    if x.dtype != weight.dtype and weight.device.type != "meta":
        raise TypeError(
            f"{name} holds {weight.dtype} weights but x is {x.dtype}: convert one to the other "
            f"(e.g. block.to({x.dtype}) or x.to({weight.dtype}))"
        )
    return x.reshape(-1, hidden_size)  # (N, H)


class MoEBlock(nn.Module):
    """router (`gate`, key `gate.weight`) + `experts` (+ `shared` experts on every token) + a dispatch.

    `dispatch` is a name in `moe_edu.dispatch.DISPATCHES` or a callable with their signature;
    the block keeps the function itself (resolved here, and again whenever `dispatch` is set).
    """

    def __init__(
        self,
        router: Router,
        experts: Experts,
        *,
        shared: Experts | None = None,
        dispatch: str | Dispatch = "grouped",
        jitter_noise: float = 0.0,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        self.gate, self.experts, self.shared = router, experts, shared  # shared: None when absent
        self.dispatch = dispatch  # validated and resolved to the function now, not at every forward
        self.hidden_size, self.num_experts = experts.hidden_size, router.num_experts
        self.jitter_noise, self.initializer_range = jitter_noise, initializer_range
        self.reset_parameters()

    @property
    def dispatch(self) -> Dispatch:
        """The dispatch function every forward calls."""
        return self._dispatch

    @dispatch.setter
    def dispatch(self, value: str | Dispatch) -> None:
        self._dispatch = get_dispatch(value)

    def reset_parameters(self) -> None:
        """Each part initialises itself with std `initializer_range` (transformers' Mixtral init); the
        router, the experts, then the shared experts, so a seed gives the same weights as before."""
        for part in (self.gate, self.experts, self.shared):
            if part is not None:
                part.reset_parameters(self.initializer_range)

    def flatten(self, x: torch.Tensor, *, any_rank: bool = False) -> torch.Tensor:
        """x (B, T, H) (any (..., H) with `any_rank`) -> (N, H), with a clear error for bad input."""
        return flatten_tokens(x, self.experts.gate_up_proj, type(self).__name__, any_rank=any_rank)  # (N, H)

    def mix(self, flat: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """The one MoE forward: flat (N, H) -> y (N, H) and the router's decision."""
        if self.training and self.jitter_noise > 0:  # transformers' multiplicative jitter, router and experts alike
            flat = flat * torch.empty_like(flat).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)  # (N, H)
        routing = self.gate(flat)  # Routing: logits (N, E), weights and expert_ids (N, k)
        if routing.keep is None:  # dropless
            y = self.dispatch(flat, self.experts, routing.weights, routing.expert_ids)  # (N, H)
        else:  # capacity limits or expert choice: only the kept assignments run
            kept = (routing.weights, routing.expert_ids, routing.keep)
            y = dispatch_kept(flat, self.experts, *kept, self.dispatch)  # (N, H)
        if self.shared is not None:  # shared experts: every token, weight 1 (DeepSeekMoE)
            y = y + self.shared.dense(flat).sum(0).to(y.dtype)  # (N, H)
        return y, routing

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, H) -> y: (B, T, H), router_logits: (B*T, E)."""
        y, routing = self.mix(self.flatten(x))  # (N, H)
        return y.reshape(x.shape), routing.logits

    def route(self, x: torch.Tensor) -> Routing:
        """Only the routing decision for x (B, T, H): `.logits` (B*T, E), `.weights` and `.expert_ids` (B*T, k)."""
        return self.gate(self.flatten(x))

    def extra_repr(self) -> str:
        return f"dispatch={getattr(self.dispatch, '__name__', type(self.dispatch).__name__)}"


class SparseMoeBlock(MoEBlock):
    """Mixtral's sparse MoE block from a config: dropless top-k routing over E SwiGLU experts."""

    def __init__(
        self,
        config: MixtralConfig,
        *,
        dispatch: str | Dispatch = "grouped",
        router_fp32: bool = True,
        routing_order: str = "softmax_topk",
    ) -> None:
        router = TopKRouter(
            config.hidden_size,
            config.num_local_experts,
            config.num_experts_per_tok,
            fp32=router_fp32,
            order=routing_order,
        )
        experts = Experts(config.num_local_experts, config.hidden_size, config.intermediate_size)
        super().__init__(
            router,
            experts,
            dispatch=dispatch,
            jitter_noise=config.router_jitter_noise,
            initializer_range=config.initializer_range,
        )
        self.config = config

    @property
    def top_k(self) -> int:
        """k, as transformers' block names it (the router's `top_k`)."""
        return self.gate.top_k

    # --- interop -------------------------------------------------------------
    def load_hf_state_dict(self, state_dict: Mapping[str, torch.Tensor], *, prefix: str = "") -> SparseMoeBlock:
        """Load a transformers (v5 fused or v4 per-expert) or Mistral-native MoE state dict.

        Everything is checked before anything is copied: a mismatch raises
        `StateDictError` listing every missing, unexpected and mis-shaped key.
        """
        load_block_state(self, state_dict, prefix=prefix)
        return self

    def export_state_dict(self, layout: str = "v5") -> dict[str, torch.Tensor]:
        """This block's weights in transformers `v5`/`v4` or `mistral` key layout."""
        return export_block_state(self, layout)

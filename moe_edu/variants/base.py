"""What every MoE variant shares: the output type, the one function that computes it, and accounting.

Every routed variant in `moe_edu.variants` is a value, not a class: the library's `MoEBlock`
(a router whose weight is `gate.weight`, (E, H), plus `moe_edu.experts.Experts`, plus one
dispatch-and-combine step) with another router. Only the router differs, so a comparison
between variants compares routing alone (notebook 09). `moe_output(block, x)` runs a block
once and counts what the routing did; Soft MoE, which does not route, is a sibling module
(`soft_moe.SoftMoE`) that returns the same `MoEOutput` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import MixtralConfig
from ..experts import Experts
from ..moe_block import MoEBlock
from ..routing import Router


@dataclass
class MoEOutput:
    """What a variant computes. `y` is the MoE layer's output only: the residual stream adds
    `x + y` outside, so a token with no expert (`y[t] == 0`) passes through on the residual."""

    y: torch.Tensor  # shaped like x
    router_logits: torch.Tensor  # (N, E) fp32: the logits the routing decision used
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted; multiply by your coefficients
    load_counts: torch.Tensor | None = None  # (E,) int64: token rows each (routed) expert processed
    demand_counts: torch.Tensor | None = None  # (E,) int64: rows the router asked for, before capacity (if any)
    dropped: int = 0  # tokens that got no expert at all
    dropped_assignments: int = 0  # (token, expert) choices removed by a capacity limit
    num_tokens: int = 0  # N, the tokens routed

    @property
    def dropped_rate(self) -> float:
        """Share of tokens that got no expert."""
        return self.dropped / max(self.num_tokens, 1)


def routed_block(
    config: MixtralConfig, router: Router, experts: Experts | None = None, *, shared: Experts | None = None
) -> MoEBlock:
    """`MoEBlock(router, experts)` with `config`'s init std and jitter, as `SparseMoeBlock` has them;
    `experts` default to `config`'s E SwiGLU experts."""
    if experts is None:
        experts = Experts(config.num_local_experts, config.hidden_size, config.intermediate_size)
    return MoEBlock(
        router,
        experts,
        shared=shared,
        jitter_noise=config.router_jitter_noise,
        initializer_range=config.initializer_range,
    )


def moe_output(block: nn.Module, x: torch.Tensor) -> MoEOutput:
    """Run a variant once on x (..., H): its output, logits, aux losses and load, as a `MoEOutput`.

    A routed variant is an `MoEBlock`: `block.mix` computes y and the `Routing`, and the counts
    are read off the routing. A module that does not route (Soft MoE) returns its own `MoEOutput`.
    """
    if not isinstance(block, MoEBlock):
        return block(x)
    flat = block.flatten(x, any_rank=True)  # (N, H)
    y, r = block.mix(flat)  # (N, H), Routing
    E = block.num_experts
    ran = r.expert_ids if r.keep is None else r.expert_ids[r.keep]  # ids of the assignments that ran
    return MoEOutput(
        y=y.reshape(x.shape),
        router_logits=r.logits,
        aux_losses=block.gate.aux_losses(r),
        load_counts=torch.bincount(ran.reshape(-1), minlength=E),  # (E,)
        demand_counts=None if r.requested is None else torch.bincount(r.expert_ids[r.requested], minlength=E),
        dropped=0 if r.keep is None else int((~r.keep.any(dim=1)).sum()),
        dropped_assignments=0 if r.requested is None else int((r.requested & ~r.keep).sum()),
        num_tokens=flat.shape[0],
    )


def copy_from_block(variant: nn.Module, block: nn.Module) -> nn.Module:
    """Copy a `SparseMoeBlock`'s router and experts into `variant` (same E, H, I), so variants differ
    only in routing; returns `variant`."""
    keys = ("gate.weight", "experts.gate_up_proj", "experts.down_proj")
    mine, theirs = variant.get_parameter, block.get_parameter
    for key in keys:
        if mine(key).shape != theirs(key).shape:
            raise ValueError(
                f"copy_from_block: {key} has shape {tuple(mine(key).shape)} in the variant "
                f"but {tuple(theirs(key).shape)} in the block"
            )
    with torch.no_grad():
        for key in keys:
            mine(key).copy_(theirs(key))
    return variant


# --- accounting ------------------------------------------------------------------------
def expert_parameters(experts: Experts) -> int:
    """Parameters of one expert: w1, w3 (I x H) and w2 (H x I)."""
    return experts.gate_up_proj[0].numel() + experts.down_proj[0].numel()


def total_parameters(variant: nn.Module) -> int:
    return sum(p.numel() for p in variant.parameters())


def active_parameters(variant: nn.Module) -> int:
    """Weights one token multiplies at inference: the router, its routed experts, the shared experts."""
    shared = variant.shared.num_experts if isinstance(variant, MoEBlock) and variant.shared is not None else 0
    per_token = variant.gate.experts_per_token + shared  # expert calls per token
    return variant.gate.weight.numel() + round(per_token * expert_parameters(variant.experts))


def flops_per_token(variant: nn.Module) -> int:
    """2 x active parameters (a multiply-add is 2 FLOPs; every weight here sits in a matmul), plus
    the token mixing of a variant that mixes tokens (Soft MoE's dispatch and combine)."""
    mixing = 0 if isinstance(variant, MoEBlock) else variant.mixing_flops_per_token()
    return 2 * active_parameters(variant) + mixing


def describe(variant: nn.Module) -> dict[str, str]:
    """The static columns of notebook 09's table, read off the router."""
    gate = variant.gate
    experts, k = str(variant.num_experts), gate.k_text
    if isinstance(variant, MoEBlock) and variant.shared is not None:
        experts = f"{variant.shared.num_experts} shared + {variant.num_experts} routed (I/m)"
        k = f"{variant.shared.num_experts} + {gate.top_k}"
    return {
        "variant": gate.label,
        "experts": experts,
        "k": k,
        "gating": gate.gating,
        "capacity": gate.capacity_rule,
        "aux losses": ", ".join(gate.aux_loss_names) or "none",
    }

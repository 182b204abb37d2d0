"""What every MoE variant shares: the output type and the block they are all made of.

Every variant in `moe_edu.variants` is a `RoutedMoE`: the library's `MoEBlock` (a router
whose weight is `gate.weight`, (E, H), as in `SparseMoeBlock`, plus `moe_edu.experts.Experts`,
plus one dispatch-and-combine step) whose forward returns a `MoEOutput`. Only the router
differs, so a comparison between variants compares routing alone (notebook 09).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..capacity import check_capacity_factor
from ..moe_block import MoEBlock


@dataclass
class MoEOutput:
    """What a variant returns. `y` is the MoE layer's output only: the residual stream adds
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

    @property
    def expert_load(self) -> torch.Tensor | None:
        """Old name of `load_counts` (kept for code written against it)."""
        return self.load_counts

    @property
    def expert_demand(self) -> torch.Tensor | None:
        """Old name of `demand_counts`."""
        return self.demand_counts


class RoutedMoE(MoEBlock):
    """`MoEBlock` with a variant's router; accepts x (..., H) and returns a `MoEOutput`.

    Subclasses only pick the router (and describe themselves for notebook 09's table).
    """

    label: str = "routed MoE"  # a name for tables
    gating: str = ""  # the gating function, in words
    capacity_rule: str = "none (dropless)"
    aux_loss_names: tuple[str, ...] = ()
    input_rank = None  # (..., tokens, H)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        flat = self.flatten(x)  # (N, H)
        y, r = self.mix(flat)  # (N, H), Routing
        E = self.num_experts
        ran = r.expert_ids if r.keep is None else r.expert_ids[r.keep]  # ids of the assignments that ran
        return MoEOutput(
            y=y.reshape(x.shape),
            router_logits=r.logits,
            aux_losses=self.gate.aux_losses(r),
            load_counts=torch.bincount(ran.reshape(-1), minlength=E),  # (E,)
            demand_counts=None if r.requested is None else torch.bincount(r.expert_ids[r.requested], minlength=E),
            dropped=0 if r.keep is None else int((~r.keep.any(dim=1)).sum()),
            dropped_assignments=0 if r.requested is None else int((r.requested & ~r.keep).sum()),
            num_tokens=flat.shape[0],
        )

    # --- what the router knows ---------------------------------------------------
    def router_logits(self, flat: torch.Tensor) -> torch.Tensor:
        """The router's logits, in fp32 whatever the input dtype: flat (N, H) -> (N, E)."""
        return self.gate.logits(flat)  # (N, E)

    @property
    def top_k(self) -> int:
        return self.gate.top_k

    @property
    def experts_per_token(self) -> float:
        """Routed experts a token runs at inference (an average for expert choice); top-k variants: k."""
        return self.gate.experts_per_token

    def capacity(self, num_tokens: int) -> int:
        """Rows per expert for a batch of `num_tokens` (routers with a capacity limit only)."""
        return self.gate.capacity(num_tokens)

    @property
    def capacity_factor(self) -> float:
        """The router's capacity factor (routers with a capacity limit only); settable."""
        return self.gate.capacity_factor

    @capacity_factor.setter
    def capacity_factor(self, value: float) -> None:
        self.gate.capacity_factor = check_capacity_factor(value)

    def copy_from_block(self, block: nn.Module) -> RoutedMoE:
        """Take the router and experts of a `SparseMoeBlock` (same E, H, I), so variants differ only in routing."""
        mine = {
            "gate.weight": self.gate.weight,
            "experts.gate_up_proj": self.experts.gate_up_proj,
            "experts.down_proj": self.experts.down_proj,
        }
        theirs = {
            "gate.weight": block.gate.weight,
            "experts.gate_up_proj": block.experts.gate_up_proj,
            "experts.down_proj": block.experts.down_proj,
        }
        for key, p in mine.items():
            if p.shape != theirs[key].shape:
                raise ValueError(
                    f"{type(self).__name__}.copy_from_block: {key} has shape {tuple(p.shape)} here "
                    f"but {tuple(theirs[key].shape)} in the block"
                )
        with torch.no_grad():
            for key, p in mine.items():
                p.copy_(theirs[key])
        return self

    # --- accounting ------------------------------------------------------------
    @property
    def expert_parameters(self) -> int:
        """Parameters of one routed expert: w1, w3 (I x H) and w2 (H x I)."""
        return self.experts.gate_up_proj[0].numel() + self.experts.down_proj[0].numel()

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def active_parameters(self) -> int:
        """Weights one token multiplies at inference: the router and its experts."""
        return self.gate.weight.numel() + round(self.experts_per_token * self.expert_parameters)

    def flops_per_token(self) -> int:
        """2 x active parameters (a multiply-add is 2 FLOPs; every weight here sits in a matmul)."""
        return 2 * self.active_parameters()

    def describe(self) -> dict[str, str]:
        """The static columns of notebook 09's table."""
        return {
            "variant": self.label,
            "experts": str(self.num_experts),
            "k": self.k_text(),
            "gating": self.gating,
            "capacity": self.capacity_rule,
            "aux losses": ", ".join(self.aux_loss_names) or "none",
        }

    def k_text(self) -> str:
        return f"{self.experts_per_token:g}"

"""What every MoE variant shares: the output type, input checks, the router linear, parameter accounting.

Every variant in `moe_edu.variants` is a small `RoutedMoE`: a bias-free router (`gate.weight`,
(E, H), as in `SparseMoeBlock`) plus `moe_edu.experts.Experts`, and it returns a `MoEOutput`.
Only the routing rule differs, so a comparison between variants compares routing alone
(notebook 09).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..experts import Experts


@dataclass
class MoEOutput:
    """What a variant returns. `y` is the MoE layer's output only: the residual stream adds
    `x + y` outside, so a token with no expert (`y[t] == 0`) passes through on the residual."""

    y: torch.Tensor  # shaped like x
    router_logits: torch.Tensor  # (N, E) fp32: the logits the routing decision used
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted; multiply by your coefficients
    expert_load: torch.Tensor | None = None  # (E,) int64: token rows each (routed) expert processed
    expert_demand: torch.Tensor | None = None  # (E,) int64: rows the router asked for, before capacity (if any)
    dropped: int = 0  # tokens that got no expert at all
    dropped_assignments: int = 0  # (token, expert) choices removed by a capacity limit
    num_tokens: int = 0  # N, the tokens routed

    @property
    def dropped_rate(self) -> float:
        """Share of tokens that got no expert."""
        return self.dropped / max(self.num_tokens, 1)


class RoutedMoE(nn.Module):
    """Router + E SwiGLU experts. Subclasses implement `forward(x) -> MoEOutput` and describe themselves."""

    label: str = "routed MoE"  # a name for tables
    gating: str = ""  # the gating function, in words
    capacity_rule: str = "none (dropless)"
    aux_loss_names: tuple[str, ...] = ()

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int) -> None:
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size),
                            ("num_experts", num_experts)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.hidden_size, self.num_experts = hidden_size, num_experts
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)  # weight (E, H), the key `gate.weight`
        self.experts = Experts(num_experts, hidden_size, intermediate_size)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) for every weight, as transformers initialises Mixtral (meta tensors skipped)."""
        for p in self.parameters():
            if p.device.type != "meta":
                nn.init.normal_(p, mean=0.0, std=std)

    # --- pieces the variants share -------------------------------------------
    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (N, H), with a clear error for bad input."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"{type(self).__name__} expects x of shape (..., tokens, hidden_size={self.hidden_size}), "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point x, got dtype {x.dtype}")
        return x.reshape(-1, self.hidden_size)  # (N, H)

    def router_logits(self, flat: torch.Tensor) -> torch.Tensor:
        """Router in fp32 whatever the input dtype: flat (N, H) -> (N, E)."""
        return F.linear(flat.float(), self.gate.weight.float())  # (N, E)

    def copy_from_block(self, block: nn.Module) -> "RoutedMoE":
        """Take the router and experts of a `SparseMoeBlock` (same E, H, I), so variants differ only in routing."""
        mine = {"gate.weight": self.gate.weight, "experts.gate_up_proj": self.experts.gate_up_proj,
                "experts.down_proj": self.experts.down_proj}
        theirs = {"gate.weight": block.gate.weight, "experts.gate_up_proj": block.experts.gate_up_proj,
                  "experts.down_proj": block.experts.down_proj}
        for key, p in mine.items():
            if p.shape != theirs[key].shape:
                raise ValueError(f"{type(self).__name__}.copy_from_block: {key} has shape {tuple(p.shape)} here "
                                 f"but {tuple(theirs[key].shape)} in the block")
        with torch.no_grad():
            for key, p in mine.items():
                p.copy_(theirs[key])
        return self

    # --- accounting ------------------------------------------------------------
    @property
    def expert_parameters(self) -> int:
        """Parameters of one routed expert: w1, w3 (I x H) and w2 (H x I)."""
        return self.experts.gate_up_proj[0].numel() + self.experts.down_proj[0].numel()

    @property
    def experts_per_token(self) -> float:
        """Routed experts a token runs at inference (an average for expert choice); top-k variants: k."""
        return float(self.top_k)

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
        return {"variant": self.label, "experts": str(self.num_experts), "k": self.k_text(),
                "gating": self.gating, "capacity": self.capacity_rule,
                "aux losses": ", ".join(self.aux_loss_names) or "none"}

    def k_text(self) -> str:
        return f"{self.experts_per_token:g}"

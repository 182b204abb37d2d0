"""The experts: E independent SwiGLU feed-forward networks, stored as stacked weights.

Mixtral's expert j computes  w2( silu(w1 x) * (w3 x) ).  We keep w1 (gate) and w3 (up)
fused in one `(E, 2I, H)` tensor, exactly as transformers v5 does (`gate_up_proj`),
so one matrix multiply serves both; `w1`, `w3`, `w2` are views for reading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .grouped_mm import grouped_matmul, grouped_mm_kernel_available


def _needs_grad(x: torch.Tensor, module: nn.Module) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def swiglu(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One SwiGLU FFN written plainly: x (N, H), w1/w3 (I, H), w2 (H, I) -> (N, H)."""
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


class Experts(nn.Module):
    """E SwiGLU experts. Parameter names follow transformers v5: `gate_up_proj`, `down_proj`."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))  # (E, 2I, H)
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))  # (E, H, I)

    # Read-only views with Mixtral's names.
    @property
    def w1(self) -> torch.Tensor:  # gate projection
        return self.gate_up_proj[:, : self.intermediate_size]  # (E, I, H)

    @property
    def w3(self) -> torch.Tensor:  # up projection
        return self.gate_up_proj[:, self.intermediate_size :]  # (E, I, H)

    @property
    def w2(self) -> torch.Tensor:  # down projection
        return self.down_proj  # (E, H, I)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Run expert `e` on the rows routed to it: x (N, H) -> (N, H)."""
        gate, up = F.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)  # (N, I), (N, I)
        return F.linear(F.silu(gate) * up, self.down_proj[e])  # (N, H)

    def grouped(self, xs: torch.Tensor, counts: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """All experts on expert-sorted rows: xs (N, H) holds `counts[e]` (E,) rows for expert e -> (N, H).

        Two grouped GEMMs (gate+up fused, then down) instead of 2E small ones, the SwiGLU in
        between once over all N rows. Without a grouped kernel, CPU inference runs per-expert
        blocks that stay in cache instead (`_grouped_inference`).
        """
        kernel = grouped_mm_kernel_available(xs, self.gate_up_proj.transpose(-2, -1))
        if not kernel and xs.device.type == "cpu" and not _needs_grad(xs, self):
            return self._grouped_inference(xs, counts.tolist() if sizes is None else sizes)  # (N, H)
        h = grouped_matmul(xs, self.gate_up_proj.transpose(-2, -1), counts, sizes)  # (N, 2I)
        gate, up = h.chunk(2, dim=-1)  # (N, I), (N, I)
        return grouped_matmul(F.silu(gate) * up, self.down_proj.transpose(-2, -1), counts, sizes)  # (N, H)

    def _grouped_inference(self, xs: torch.Tensor, sizes: list[int], chunk: int = 256) -> torch.Tensor:
        """Inference without a grouped kernel: the whole SwiGLU per block of <= `chunk` rows of one expert.

        Keeping each block's (chunk, 2I) intermediate in cache, instead of one (N, 2I) pass
        over the whole layer, is what makes a CPU loop as fast as one dense FFN.
        """
        out = xs.new_empty(xs.shape[0], self.hidden_size)  # (N, H)
        start = 0
        for e, n in enumerate(sizes):
            for s in range(start, start + n, chunk):
                rows = slice(s, min(s + chunk, start + n))
                gate, up = F.linear(xs[rows], self.gate_up_proj[e]).chunk(2, dim=-1)  # (n, I), (n, I)
                torch.mm(F.silu(gate) * up, self.down_proj[e].t(), out=out[rows])  # (n, H)
            start += n
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every row (the dense view): x (N, H) -> (E, N, H)."""
        h = torch.einsum("nh,eih->eni", x, self.gate_up_proj)  # (E, N, 2I)
        gate, up = h.chunk(2, dim=-1)  # (E, N, I), (E, N, I)
        return torch.einsum("eni,ehi->enh", F.silu(gate) * up, self.down_proj)  # (E, N, H)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, hidden={self.hidden_size}, intermediate={self.intermediate_size}"

"""The experts: E independent SwiGLU feed-forward networks, stored as stacked weights.

Mixtral's expert j computes  w2( silu(w1 x) * (w3 x) ).  We keep w1 (gate) and w3 (up)
fused in one `(E, 2I, H)` tensor, exactly as transformers v5 does (`gate_up_proj`),
so one matrix multiply serves both; `w1`, `w3`, `w2` are views for reading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .grouped_mm import grouped_matmul
from .validation import positive_int


def swiglu(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One SwiGLU FFN written plainly: x (N, H), w1/w3 (I, H), w2 (H, I) -> (N, H)."""
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


class Experts(nn.Module):
    """E SwiGLU experts. Parameter names follow transformers v5: `gate_up_proj`, `down_proj`.

    Not called directly: a dispatch (`moe_edu.dispatch`) runs the routed computation through
    `expert(e, x)` or `grouped(...)`; `dense(x)` is every expert on every row, by name.
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        for name, value in (
            ("num_experts", num_experts),
            ("hidden_size", hidden_size),
            ("intermediate_size", intermediate_size),
        ):
            positive_int(f"Experts: {name}", value)
        self.num_experts, self.hidden_size, self.intermediate_size = num_experts, hidden_size, intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))  # (E, 2I, H)
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))  # (E, H, I)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) weights, as transformers initialises Mixtral (meta tensors are skipped)."""
        for p in (self.gate_up_proj, self.down_proj):
            if p.device.type != "meta":
                nn.init.normal_(p, 0.0, std)

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

    def grouped(
        self, xs: torch.Tensor, counts: torch.Tensor, sizes: list[int] | None = None, path: str | None = None
    ) -> torch.Tensor:
        """All experts on expert-sorted rows: xs (N, H) holds `counts[e]` (E,) rows for expert e -> (N, H).

        `path` is what `moe_edu.dispatch.choose_path` decided: "kernel" or "loop" run two
        grouped GEMMs (gate+up fused, then down) with the SwiGLU once over all N rows;
        "per_expert" (inference only) runs the whole SwiGLU per expert, which keeps each
        expert's weights and intermediate in cache. None: the kernel where it applies, else the loop.
        """
        if path == "per_expert":
            return self._grouped_inference(xs, counts.tolist() if sizes is None else sizes)  # (N, H)
        if path not in (None, "kernel", "loop"):
            raise ValueError(f"path must be 'kernel', 'loop' or 'per_expert', got {path!r}")
        kernel = None if path is None else path == "kernel"
        h = grouped_matmul(xs, self.gate_up_proj.mT, counts, sizes, kernel=kernel)  # (N, 2I)
        gate, up = h.chunk(2, dim=-1)  # (N, I), (N, I)
        return grouped_matmul(F.silu(gate) * up, self.down_proj.mT, counts, sizes, kernel=kernel)  # (N, H)

    def _grouped_inference(self, xs: torch.Tensor, sizes: list[int], chunk: int | None = None) -> torch.Tensor:
        """Inference, expert by expert: the whole SwiGLU on each expert's rows (in blocks of `chunk` rows if given).

        One GEMM pair per expert, written into one preallocated output, is what transformers'
        eager loop does too; on CPU it beats one fused grouped GEMM over all N rows. One
        (rows, 2I) buffer serves every expert's gate+up product, and the SwiGLU multiplies in
        place (no autograd here): fewer fresh allocations, fewer passes over memory.
        """
        out = xs.new_empty(xs.shape[0], self.hidden_size)  # (N, H)
        if not sizes or max(sizes) == 0:
            return out
        step = chunk or max(sizes)
        buf = xs.new_empty(min(step, max(sizes)), 2 * self.intermediate_size)  # (rows, 2I) reused by every expert
        start = 0
        for e, n in enumerate(sizes):
            for s in range(start, start + n, step):
                rows = slice(s, min(s + step, start + n))
                h = buf[: rows.stop - rows.start]  # (n, 2I)
                torch.mm(xs[rows], self.gate_up_proj[e].t(), out=h)  # (n, 2I)
                gate, up = h.chunk(2, dim=-1)  # (n, I), (n, I) views (silu in place on this strided view is slower)
                torch.mm(F.silu(gate).mul_(up), self.down_proj[e].t(), out=out[rows])  # (n, H)
            start += n
        return out

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every row (E times a routed layer's work): x (N, H) -> (E, N, H)."""
        h = torch.einsum("nh,eih->eni", x, self.gate_up_proj)  # (E, N, 2I)
        gate, up = h.chunk(2, dim=-1)  # (E, N, I), (E, N, I)
        return torch.einsum("eni,ehi->enh", F.silu(gate) * up, self.down_proj)  # (E, N, H)

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        """Calling the experts is ambiguous (all of them? the routed ones?), so it is an error that says which to use."""
        raise TypeError(
            "Experts is not called directly: experts.dense(x) runs every expert on every row (E, N, H); "
            "a dispatch (moe_edu.dispatch, or MoEBlock) runs each token's chosen experts"
        )

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, hidden={self.hidden_size}, intermediate={self.intermediate_size}"

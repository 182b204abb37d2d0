"""Grouped matrix multiply: G small GEMMs over consecutive row blocks, as one call.

    out[rows of group g] = x[rows of group g] @ w[g]        x (N, K), w (G, K, M), counts (G,)

This is the primitive behind sparse dispatch once tokens are sorted by expert
(notebook 03 builds it as a loop, notebook 10 measures it). Two implementations,
same numbers and the same autograd:

- `torch.nn.functional.grouped_mm`: one CUDA kernel, no host sync, on CUDA bf16 (SM >= 80);
  also torch's CPU kernel for fp32/bf16 with 16-byte aligned rows;
- a loop of `torch.mm` writing into one preallocated output everywhere else (fp64, fp16,
  odd sizes, older GPUs), with a hand-written backward so it never copies or concatenates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grouped_mm_kernel_available(x: torch.Tensor, w: torch.Tensor) -> bool:
    """True where torch's fused grouped GEMM applies to x (N, K) @ w (G, K, M).

    CUDA: bf16 operands on compute capability >= 8.0. CPU (torch >= 2.9 has a kernel,
    with a backward): fp32 or bf16 rows whose byte strides and addresses are multiples of 16.
    """
    if not hasattr(F, "grouped_mm") or x.dtype != w.dtype:
        return False
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16):
        size = x.element_size()
        return (
            x.shape[-1] * size % 16 == 0
            and w.shape[-1] * size % 16 == 0
            and x.data_ptr() % 16 == 0
            and w.data_ptr() % 16 == 0
        )
    return False


class _LoopGroupedMM(torch.autograd.Function):
    """Portable grouped GEMM: one `torch.mm` per non-empty group, results written in place."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.sizes = sizes
        out = x.new_empty(x.shape[0], w.shape[-1])  # (N, M)
        start = 0
        for g, n in enumerate(sizes):
            if n:
                torch.mm(x[start : start + n], w[g], out=out[start : start + n])  # (n, M)
            start += n
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        grad = grad.contiguous()
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None  # (N, K) every row is written
        gw = torch.zeros_like(w) if ctx.needs_input_grad[1] else None  # (G, K, M) unused experts get 0
        start = 0
        for g, n in enumerate(ctx.sizes):
            if n:
                rows = slice(start, start + n)
                if gx is not None:
                    torch.mm(grad[rows], w[g].t(), out=gx[rows])  # (n, K)
                if gw is not None:
                    torch.mm(x[rows].t(), grad[rows], out=gw[g])  # (K, M)
            start += n
        return gx, gw, None


def grouped_matmul(
    x: torch.Tensor,
    w: torch.Tensor,
    counts: torch.Tensor,
    sizes: list[int] | None = None,
    *,
    kernel: bool | None = None,
) -> torch.Tensor:
    """x (N, K) sorted into G row blocks of `counts` (G,) rows; w (G, K, M) -> (N, M).

    `sizes` is `counts.tolist()` when the caller already has it (the loop needs host
    integers; computing them once per layer keeps it to one device sync). `kernel` forces
    the fused kernel (True) or the loop (False); None uses the kernel where it applies.
    """
    if x.dim() != 2 or w.dim() != 3 or x.shape[1] != w.shape[1] or counts.shape != (w.shape[0],):
        raise ValueError(
            f"grouped_matmul expects x (N, K), w (G, K, M), counts (G,); got x {tuple(x.shape)}, "
            f"w {tuple(w.shape)}, counts {tuple(counts.shape)}"
        )
    if kernel is None:
        kernel = grouped_mm_kernel_available(x, w)
    if kernel:
        offs = counts.cumsum(0, dtype=torch.int32)  # (G,) end row of each group, stays on the device
        return F.grouped_mm(x, w, offs=offs)  # (N, M)
    sizes = counts.tolist() if sizes is None else sizes
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"grouped_matmul: counts sum to {sum(sizes)} but x has {x.shape[0]} rows")
    return _LoopGroupedMM.apply(x, w, tuple(sizes))

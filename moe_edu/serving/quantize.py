"""Weight-only quantisation of the experts: int8 per output channel, int4 in groups, in plain torch.

    q = quantize_int8(w)              # (out, in) -> int8 values + one fp32 scale per row
    w_hat = q.dequantize()            # |w - w_hat| <= scale / 2 per entry
    q4 = quantize_int4(w, group_size=32)   # two values per byte, one scale per 32 inputs

Symmetric absmax scaling: scale = max|w| / qmax over a row (int8, qmax 127) or a group of
`group_size` consecutive inputs of a row (int4, qmax 7; codes in [-7, 7], packed two per byte:
the nibble's 16th level, -8, is never produced by this symmetric scheme).
Experts hold ~96 % of Mixtral's parameters, so they are what quantisation must shrink;
the router is tiny, and `quantize_model_experts(..., router=...)` can leave it in full precision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..validation import positive_int


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes + fp32 scales for a 2-D weight (out, in)."""

    codes: torch.Tensor  # int8 (out, in), or uint8 (out, in/2) packed int4
    scale: torch.Tensor  # fp32 (out, 1) per channel, or (out, in/group) per group
    bits: int  # 8 or 4
    shape: tuple[int, int]
    group_size: int | None = None  # None: one scale per output channel

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: codes + scales."""
        return self.codes.numel() * self.codes.element_size() + self.scale.numel() * self.scale.element_size()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Back to a float (out, in) tensor: codes x scale."""
        if self.bits == 8:
            return (self.codes.float() * self.scale).to(dtype)  # (out, in)
        values = unpack_int4(self.codes, self.shape[1]).float()  # (out, in)
        out, g = self.shape[0], self.group_size
        return (values.reshape(out, -1, g) * self.scale[:, :, None]).reshape(self.shape).to(dtype)  # (out, in)


def _check_2d(w: torch.Tensor, name: str) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point() or 0 in w.shape:
        raise ValueError(
            f"{name} needs a non-empty 2-D floating-point weight (out, in), got {getattr(w, 'shape', type(w).__name__)}"
        )
    if not bool(torch.isfinite(w).all()):  # one inf would make its whole row (int8) or group (int4) NaN
        raise ValueError(f"{name}: the weight holds NaN or infinite values, which no scale can represent")


def quantize_int8(w: torch.Tensor) -> QuantizedTensor:
    """Symmetric int8, one scale per output channel (row): codes = round(w / scale), scale = max|row| / 127."""
    _check_2d(w, "quantize_int8")
    w = w.detach().float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (out, 1)
    codes = torch.round(w / scale).clamp(-127, 127).to(torch.int8)  # (out, in)
    return QuantizedTensor(codes, scale, 8, tuple(w.shape))


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """int values in [-8, 7], shape (out, in) with `in` even -> uint8 (out, in/2), two per byte."""
    nib = (values.to(torch.int16) & 0xF).to(torch.uint8)  # (out, in) two's-complement nibbles
    return nib[:, 0::2] | (nib[:, 1::2] << 4)  # (out, in/2)


def unpack_int4(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """uint8 (out, in/2) -> int8 (out, in) values in [-8, 7]."""
    lo, hi = (packed & 0xF).to(torch.int8), (packed >> 4).to(torch.int8)  # (out, in/2) each
    both = torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)[:, :cols]  # (out, in)
    return torch.where(both > 7, both - 16, both)  # (out, in)


def quantize_int4(w: torch.Tensor, group_size: int = 32) -> QuantizedTensor:
    """Symmetric int4 in groups of `group_size` inputs: scale = max|group| / 7, codes in [-7, 7] packed."""
    _check_2d(w, "quantize_int4")
    out, cols = w.shape
    positive_int("group_size", group_size)
    if group_size % 2 or cols % group_size:
        raise ValueError(f"group_size must be even and divide the input width {cols}, got {group_size}")
    groups = w.detach().float().reshape(out, cols // group_size, group_size)  # (out, G, g)
    scale = groups.abs().amax(dim=-1).clamp_min(1e-12) / 7  # (out, G)
    values = torch.round(groups / scale[:, :, None]).clamp(-8, 7).reshape(out, cols)  # (out, in)
    return QuantizedTensor(pack_int4(values), scale, 4, (out, cols), group_size)


def quantize(w: torch.Tensor, scheme: str, group_size: int = 32) -> QuantizedTensor:
    """`scheme` "int8" (per channel) or "int4" (group-wise)."""
    if scheme == "int8":
        return quantize_int8(w)
    if scheme == "int4":
        return quantize_int4(w, group_size)
    raise ValueError(f"scheme must be 'int8' or 'int4', got {scheme!r}")


@torch.no_grad()
def quantize_model_experts(
    model: nn.Module, scheme: str, *, group_size: int = 32, router: str | None = None
) -> tuple[nn.Module, int]:
    """A copy of a `MixtralForCausalLM` whose expert weights (and router if `router` names a scheme)
    are replaced by their dequantised values; returns (model, bytes the quantised weights take).

    Dequantising once gives the same numbers as a kernel that dequantises on the fly, so the
    copy measures the accuracy cost; the byte count is the memory cost.
    """
    model = copy.deepcopy(model)
    stored = 0
    for layer in model.model.layers:
        experts = layer.mlp.experts
        for param in (experts.gate_up_proj, experts.down_proj):  # (E, 2I, H), (E, H, I)
            for e in range(param.shape[0]):
                q = quantize(param[e], scheme, group_size)
                param[e].copy_(q.dequantize(param.dtype))
                stored += q.nbytes
        if router is not None:
            w = layer.mlp.gate.weight  # (E, H)
            q = quantize(w, router, group_size)
            w.copy_(q.dequantize(w.dtype))
    return model, stored

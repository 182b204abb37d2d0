"""The one strict loader: every key, shape and dtype checked before any value is copied.

Weights come from a *source*: an in-memory state dict (`MemorySource`) or a safetensors
checkpoint read lazily (`pretrained.Checkpoint`). Both answer the same four questions —
which keys, what shape, is it floating point (from file headers only), and the tensor —
so `load_into` is the only place that decides what fits. A stored tensor may be one
parameter, or per-expert tensors that assemble into it (transformers v4 `experts.{j}.w1/w3`
stack into our fused `experts.gate_up_proj`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

import torch
from torch import nn


class StateDictError(RuntimeError):
    """A state dict that does not fit: every problem is counted (the first keys listed), nothing was loaded.

    A `RuntimeError`, like torch's own `load_state_dict` error (it was a `KeyError`, whose message
    Python prints as a quoted repr).
    """

    def __init__(self, what: str, missing=(), unexpected=(), mismatched=(), wrong_dtype=()) -> None:
        lines = [f"cannot load {what}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_some(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_some(unexpected)}")
        for key, want, got in list(mismatched)[:SHOWN]:
            lines.append(f"  {key}: expected shape {tuple(want)}, got {tuple(got)}")
        for key, got in list(wrong_dtype)[:SHOWN]:
            lines.append(f"  {key}: expected a floating-point tensor, got dtype {got}")
        for kind, items in (("shape mismatches", mismatched), ("dtype errors", wrong_dtype)):
            if len(items) > SHOWN:
                lines.append(f"  ... and {len(items) - SHOWN} more {kind}")
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        self.wrong_dtype = list(wrong_dtype)
        super().__init__("\n".join(lines))


SHOWN = 20  # keys listed per kind of problem; the counts are always complete


def _some(keys) -> str:
    keys = sorted(keys)
    return str(keys) if len(keys) <= SHOWN else f"{keys[:SHOWN]} and {len(keys) - SHOWN} more"


class Source(Protocol):
    """Named tensors a loader can inspect before reading them."""

    keys: Mapping[str, object] | set

    def shape(self, key: str) -> tuple[int, ...]: ...
    def dtype(self, key: str) -> str: ...
    def tensor(self, key: str) -> torch.Tensor: ...


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "float64", "float32", "float16", "bfloat16"}


class MemorySource:
    """An in-memory state dict as a `Source`; values that are not tensors count as missing."""

    def __init__(self, sd: Mapping[str, torch.Tensor]) -> None:
        self.sd = sd
        self.keys = {k for k, v in sd.items() if isinstance(v, torch.Tensor)}
        self.not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.sd[key].shape)

    def dtype(self, key: str) -> str:
        return str(self.sd[key].dtype).removeprefix("torch.")

    def tensor(self, key: str) -> torch.Tensor:
        return self.sd[key]


# A plan entry is (keys, pieces): pieces = 0 for one stored tensor; else the keys are per-expert
# tensors, `pieces` per expert (2: w1 then w3 stacked into gate_up_proj; 1: w2 into down_proj).
Plan = tuple[list[str], int]


def _experts_plan(src: Source, prefix: str, name: str, num_experts: int) -> tuple[Plan | None, list[str]]:
    """Fused v5 tensor if stored, else the per-expert v4 tensors; or None and the keys that are missing."""
    for moe in ("mlp.", "block_sparse_moe."):
        if f"{prefix}{moe}experts.{name}" in src.keys:
            return ([f"{prefix}{moe}experts.{name}"], 0), []
    ns = (1, 3) if name == "gate_up_proj" else (2,)  # gate_up_proj = [w1; w3] per expert, down_proj = w2
    for moe in ("block_sparse_moe.", "mlp."):
        keys = [f"{prefix}{moe}experts.{j}.w{n}.weight" for j in range(num_experts) for n in ns]
        present = [k for k in keys if k in src.keys]
        if len(present) == len(keys):
            return (keys, len(ns)), []
        if present:  # a per-expert layout with holes: name the holes
            return None, [k for k in keys if k not in src.keys]
    return None, [f"{prefix}mlp.experts.{name}"]


def _plan(src: Source, param: str, num_experts: int) -> tuple[Plan | None, list[str]]:
    m = re.match(r"(model\.layers\.\d+\.)mlp\.(.+)$", param)
    if m is None:
        return (([param], 0), []) if param in src.keys else (None, [param])
    prefix, rest = m.groups()
    if rest.startswith("experts."):
        return _experts_plan(src, prefix, rest[len("experts.") :], num_experts)
    for moe in ("mlp.", "block_sparse_moe."):
        if f"{prefix}{moe}{rest}" in src.keys:
            return ([f"{prefix}{moe}{rest}"], 0), []
    return None, [param]


def _stored_shape(src: Source, plan: Plan) -> tuple[tuple[int, ...], list]:
    """The shape `plan` assembles to, from headers only, and any per-expert tensors of odd shape."""
    keys, pieces = plan
    shapes = [src.shape(k) for k in keys]
    if not pieces:
        return shapes[0], []
    odd = [(k, shapes[0], s) for k, s in zip(keys, shapes, strict=True) if s != shapes[0]]
    return (len(keys) // pieces, pieces * shapes[0][0], *shapes[0][1:]), odd


def _read(src: Source, plan: Plan, dtype: torch.dtype | None, device) -> torch.Tensor:
    """Assemble one parameter, reading its stored tensors one at a time into one buffer."""
    keys, pieces = plan
    first = src.tensor(keys[0])
    if not pieces:
        return first.to(device=device, dtype=dtype)
    rows = first.shape[0]
    out = torch.empty(len(keys) // pieces, pieces * rows, *first.shape[1:], dtype=dtype or first.dtype, device=device)
    for i, key in enumerate(keys):
        j, part = divmod(i, pieces)
        out[j, part * rows : (part + 1) * rows] = first if i == 0 else src.tensor(key)  # (rows, cols)
    return out


def load_into(
    module: nn.Module,
    src: Source,
    what: str,
    *,
    prefix: str = "",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    strict_prefix: str | None = "",
) -> None:
    """Fill `module`'s parameters from `src` keys `prefix + name`, checking every key, shape and dtype first.

    Meta parameters are replaced (stored dtype unless `dtype`); real ones are copied into in place.
    `strict_prefix`: source keys under it that no parameter used are reported as unexpected (None: no check).
    """
    E = getattr(getattr(module, "config", None), "num_local_experts", None) or getattr(module, "num_experts", 0)
    plans, missing, mismatched, wrong_dtype, used = {}, [], [], [], set()
    for name, p in module.named_parameters():
        plan, absent = _plan(src, prefix + name, E)
        missing += absent
        if plan is None:
            continue
        stored, odd = _stored_shape(src, plan)
        mismatched += odd
        if stored != tuple(p.shape):
            mismatched.append((prefix + name, p.shape, stored))
        wrong_dtype += [(k, src.dtype(k)) for k in plan[0] if src.dtype(k) not in FLOAT_DTYPES]
        plans[name] = plan
        used.update(plan[0])
    missing += getattr(src, "not_tensors", [])
    unexpected = []
    if strict_prefix is not None:
        unexpected = [k for k in src.keys if k.startswith(strict_prefix) and k not in used]
        if getattr(getattr(module, "config", None), "tie_word_embeddings", False):
            unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected or mismatched or wrong_dtype:
        raise StateDictError(what, missing, unexpected, mismatched, wrong_dtype)
    for name, plan in plans.items():  # one parameter at a time: peak = model + one stored tensor
        owner, attr = _owner(module, name)
        old = getattr(owner, attr)
        with torch.no_grad():
            if old.device.type == "meta":
                value = _read(src, plan, dtype, device or "cpu")
                setattr(owner, attr, nn.Parameter(value, requires_grad=old.requires_grad))
            else:
                old.copy_(_read(src, plan, None, None))


def check_and_load(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Load an in-memory state dict only if keys, shapes and dtypes match exactly; else raise, listing all."""
    load_into(module, MemorySource(sd), what)


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr

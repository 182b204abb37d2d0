"""Expert offloading, for real: experts live in a safetensors file and come in through an LRU cache.

    block = OffloadedMoeBlock.from_block(resident_block, "experts.safetensors", cache_size=2)
    y, router_logits = block(x)          # equal to resident_block(x); block.bytes_read counts the I/O
    model.model.layers[i].mlp = block    # a drop-in replacement inside MixtralForCausalLM

Only the router stays resident: it must run before anyone knows which experts are needed.
An expert is fetched (memory-mapped from the file, copied to `device`) the first time a token
needs it, and kept while it is among the `cache_size` most recently used. On a GPU server the
file is CPU RAM and the copy crosses PCIe; `offload_tokens_per_second` turns the resulting
number of expert loads per token into a speed for Mixtral 8x7B.
"""

from __future__ import annotations

import copy
import os
import secrets
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..accounting import count_parameters
from ..config import MixtralConfig
from ..experts import Experts, swiglu
from ..validation import nonnegative_float, nonnegative_int, positive_float
from .expert_cache import LRUCache
from .memory import dtype_bits

_FLOAT = {"F64", "F32", "F16", "BF16"}


def expert_keys(e: int) -> tuple[str, str]:
    """The safetensors keys of expert e: its fused gate+up (2I, H) and its down projection (H, I)."""
    return f"experts.{e}.gate_up_proj", f"experts.{e}.down_proj"


def save_experts(experts: Experts, path: str | Path, *, layer: int | None = None) -> Path:
    """Write each expert's weights as its own tensors, so one expert can be read without the others.

    The header names the file: a fresh random `block_id` (and `layer`, if given) that the block
    reading it checks on every load, so a file rewritten for another layer cannot be read silently.
    Written to a temporary file and renamed into place (a reader never sees half a file).
    """
    path = Path(path)
    tensors = {}
    for e in range(experts.num_experts):
        gu, down = expert_keys(e)
        tensors[gu] = experts.gate_up_proj[e].detach().contiguous().cpu()  # (2I, H)
        tensors[down] = experts.down_proj[e].detach().contiguous().cpu()  # (H, I)
    meta = {"num_experts": str(experts.num_experts), "block_id": secrets.token_hex(8)}
    if layer is not None:
        meta["layer"] = str(nonnegative_int("layer", layer))
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class OffloadedMoeBlock(nn.Module):
    """A sparse MoE block whose experts are read from `path` on demand through an LRU cache.

    Returns `(y, router_logits)` like `SparseMoeBlock`. Counters: `bytes_read`, `cache.hits`,
    `cache.misses` (one per expert fetched). The file is checked whole at construction (every
    expert present, shapes and dtype agreeing with the router) and its `block_id` on every read.
    """

    def __init__(self, router: nn.Module, path: str | Path, *, cache_size: int, device: str | torch.device = "cpu"):
        super().__init__()
        self.gate = router  # resident: (E, H) weights, a few KB
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"OffloadedMoeBlock: no experts file at {self.path}")
        E, H = router.weight.shape
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta, keys = f.metadata() or {}, set(f.keys())
                stored = meta.get("num_experts", str(E))
                if not stored.isdigit():
                    raise ValueError(f"its metadata says num_experts={stored!r}")
                self.num_experts = int(stored)
                if self.num_experts != E:
                    raise ValueError(f"it has {self.num_experts} experts, the router {E}")
                missing = [k for e in range(E) for k in expert_keys(e) if k not in keys]
                if missing:
                    raise ValueError(f"it lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}")
                two_i, h = f.get_slice(expert_keys(0)[0]).get_shape()
                self.intermediate_size, self.hidden_size = two_i // 2, h
                for e in range(E):
                    gu, down = (f.get_slice(k) for k in expert_keys(e))
                    if gu.get_shape() != [two_i, H] or down.get_shape() != [H, two_i // 2] or two_i % 2:
                        raise ValueError(
                            f"expert {e} has shapes {gu.get_shape()} / {down.get_shape()}, the router's hidden size is {H}"
                        )
                    if gu.get_dtype() != down.get_dtype() or gu.get_dtype() not in _FLOAT:
                        raise ValueError(f"expert {e} has dtypes {gu.get_dtype()} / {down.get_dtype()}")
        except (SafetensorError, OSError) as err:
            raise ValueError(f"OffloadedMoeBlock: cannot read the experts file {self.path}: {err}") from None
        except ValueError as err:
            raise ValueError(f"OffloadedMoeBlock: the experts file {self.path} does not fit: {err}") from None
        self.block_id = meta.get("block_id")
        self.layer = meta.get("layer")
        self.device = torch.device(device)
        self.cache = LRUCache(cache_size)
        self.bytes_read = 0

    @classmethod
    def from_block(
        cls,
        block: nn.Module,
        path: str | Path,
        *,
        cache_size: int,
        device: str | torch.device = "cpu",
        layer: int | None = None,
        overwrite: bool = False,
    ) -> OffloadedMoeBlock:
        """Offload a resident block's experts to `path` (one file per layer); the router is copied.

        An existing `path` is refused unless `overwrite=True`: another block may be reading it
        (offloading every layer to one file gave each layer the last layer's experts, silently).
        """
        if Path(path).exists() and not overwrite:
            raise FileExistsError(
                f"OffloadedMoeBlock.from_block: {path} exists (another layer's experts?); use one file per "
                f"layer, or overwrite=True if no block reads it any more"
            )
        save_experts(block.experts, path, layer=layer)
        return cls(copy.deepcopy(block.gate), path, cache_size=cache_size, device=device)

    def load_expert(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Read expert e from the file (a miss): (2I, H) and (H, I) on `self.device`."""
        with safe_open(str(self.path), framework="pt") as f:
            block_id = (f.metadata() or {}).get("block_id")
            if block_id != self.block_id:
                raise RuntimeError(
                    f"OffloadedMoeBlock: {self.path} was rewritten (block_id {self.block_id} -> {block_id}), "
                    f"e.g. by from_block for another layer: its experts are not this block's"
                )
            gate_up, down = (f.get_tensor(key).to(self.device) for key in expert_keys(e))
        self.bytes_read += gate_up.numel() * gate_up.element_size() + down.numel() * down.element_size()
        return gate_up, down

    def expert(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.get(e, lambda: self.load_expert(e))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, H) -> y (B, T, H), router_logits (B*T, E); cached experts run first, then the misses."""
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"OffloadedMoeBlock expects x of shape (batch, tokens, {self.hidden_size}), got {tuple(x.shape)}"
            )
        flat = x.reshape(-1, self.hidden_size)  # (N, H)
        routing = self.gate(flat)  # logits (N, E), weights (N, k) fp32, expert_ids (N, k)
        y = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)  # (N, H) fp32 accumulation
        I = self.intermediate_size
        needed = list(dict.fromkeys(routing.expert_ids.reshape(-1).tolist()))  # each needed expert once
        # cached experts first, so that a miss never evicts an expert these tokens still need
        # (unless more are needed than fit): the token-aware LRU of `simulate_cache`
        needed.sort(key=lambda e: e not in self.cache)
        for e in needed:
            tok, slot = (routing.expert_ids == e).nonzero(as_tuple=True)  # (n,), (n,)
            gate_up, down = self.expert(e)
            out = swiglu(flat[tok], gate_up[:I], gate_up[I:], down)  # (n, H)
            y.index_add_(0, tok, out.float() * routing.weights[tok, slot, None])  # (N, H)
        return y.to(x.dtype).reshape(x.shape), routing.logits


def offload_tokens_per_second(
    config: MixtralConfig,
    loads_per_token: float,
    *,
    pcie_gbs: float,
    device_gbs: float = 1000.0,
    weight_dtype: str | torch.dtype | int = torch.bfloat16,
    shared_dtype: str | torch.dtype | int = torch.bfloat16,
    prefetched: float = 0.0,
    overlap: bool = False,
) -> float:
    """Decoding speed (batch 1) when experts cross PCIe for every token.

    Memory-bound model of a decode step. The device reads the active weights at `device_gbs`
    GB/s: the k experts of every layer at `weight_dtype`, the shared weights (attention,
    embeddings, router, norms) at `shared_dtype` — quantising the experts leaves those in bf16.
    Expert loads cross the bus at `pcie_gbs` GB/s:

    * `loads_per_token` demand misses: found missing when the router runs, so the device waits
      for them (serial with its reads);
    * `prefetched` speculative loads, started a layer early: they overlap with the device's reads,
      so the slower of the two sets their pace — whether the guess was right or wrong.

    `overlap=True` is the optimistic bound where every transfer (demand misses too) hides
    behind the device's reads: time = max(bus, device).
    """
    positive_float("bandwidth pcie_gbs", pcie_gbs)
    positive_float("bandwidth device_gbs", device_gbs)
    nonnegative_float("loads_per_token", loads_per_token)  # -1 gave 85.7 tokens/s, NaN gave NaN
    nonnegative_float("prefetched", prefetched)
    bits, shared_bits = dtype_bits(weight_dtype), dtype_bits(shared_dtype)
    expert_bytes = 3 * config.hidden_size * config.intermediate_size * bits / 8
    p = count_parameters(config)
    demand = loads_per_token * expert_bytes / (pcie_gbs * 1e9)  # seconds on the bus, device waiting
    ahead = prefetched * expert_bytes / (pcie_gbs * 1e9)  # seconds on the bus, a layer early
    device = (p.active_experts * bits + (p.active - p.active_experts) * shared_bits) / 8 / (device_gbs * 1e9)
    if overlap:
        return 1.0 / max(demand + ahead, device)
    return 1.0 / (demand + max(ahead, device))

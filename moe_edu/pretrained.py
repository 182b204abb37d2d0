"""Local transformers checkpoints: load lazily, load one layer's MoE block alone, save.

A checkpoint directory is what `transformers`' `save_pretrained` writes (and what the
Hugging Face Hub serves for Mixtral): `config.json` plus `model.safetensors`, or several
`model-0000i-of-0000n.safetensors` shards listed in `model.safetensors.index.json`.

Safetensors files are memory-mapped and read one tensor at a time, so
- `from_pretrained` builds the model on the meta device and fills it tensor by tensor
  (peak memory: the model plus one expert stack, never a second copy of the checkpoint);
- `load_moe_block(path, layer)` opens only the shards holding that layer's MoE tensors
  and reads only those: with the real Mixtral-8x7B files (~90 GB) one layer's block is
  ~1.4 GB, so a student can route their own text through a real layer on a laptop.

Expert weights may be stored fused (transformers v5: `mlp.experts.gate_up_proj`) or per
expert (v4, and what v5 still writes: `block_sparse_moe.experts.{j}.w1/w2/w3.weight`).
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import MixtralConfig
from .interop import StateDictError, model_from_v5
from .model import MixtralForCausalLM
from .moe_block import SparseMoeBlock

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or corrupted (the message names file and key)."""


class Checkpoint:
    """The tensors of a checkpoint directory, by name, read lazily from their shard."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint directory {self.path} does not exist")
        if not (self.path / "config.json").is_file():
            raise CheckpointError(f"{self.path / 'config.json'} is missing: not a transformers checkpoint")
        self.config = MixtralConfig.from_json(self.path / "config.json")
        self.files: dict[str, str] = {}  # tensor name -> shard file name
        index = self.path / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
                raise CheckpointError(f"cannot read the shard index {index}: {err!r}") from err
            self.files = dict(weight_map)
            for name in sorted(set(self.files.values())):
                if not (self.path / name).is_file():
                    raise CheckpointError(f"{index} lists shard {name}, which is missing from {self.path}")
        elif (self.path / SINGLE).is_file():
            with self._open(SINGLE) as f:
                self.files = {k: SINGLE for k in f.keys()}
        else:
            raise CheckpointError(f"no {SINGLE} or {INDEX} in {self.path}")
        self._handles: dict[str, object] = {}
        self._stack: ExitStack | None = None

    def _open(self, name: str):
        try:
            return safe_open(str(self.path / name), framework="pt")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read safetensors file {self.path / name}: {err}") from err

    def __enter__(self) -> "Checkpoint":
        self._stack = ExitStack()
        return self

    def __exit__(self, *exc) -> None:
        self._handles.clear()
        self._stack.close()
        self._stack = None

    def _handle(self, key: str):
        if key not in self.files:
            raise CheckpointError(f"tensor {key!r} is not in the checkpoint {self.path}")
        name = self.files[key]
        if name not in self._handles:
            if self._stack is None:
                raise RuntimeError("use `with Checkpoint(path) as ckpt:` to read tensors")
            self._handles[name] = self._stack.enter_context(self._open(name))
        return self._handles[name]

    def shape(self, key: str) -> tuple[int, ...]:
        """The stored shape, from the file header only (no tensor data is read)."""
        try:
            return tuple(self._handle(key).get_slice(key).get_shape())
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {key!r} from {self.path / self.files[key]}: {err}") from err

    def tensor(self, key: str) -> torch.Tensor:
        try:
            return self._handle(key).get_tensor(key)
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {key!r} from {self.path / self.files[key]}: {err}") from err


# --- which stored tensors make each of our parameters -------------------------------
# A source is (keys, pieces): pieces = 0 for one stored tensor; else the keys are per-expert
# tensors, `pieces` per expert (2: w1 then w3 stacked into gate_up_proj; 1: w2 into down_proj).
Source = tuple[list[str], int]


def _experts_source(ckpt: Checkpoint, prefix: str, name: str, num_experts: int) -> tuple[Source | None, list[str]]:
    """Fused v5 tensor if stored, else the per-expert v4 tensors; or None and the keys that are missing."""
    for moe in ("mlp.", "block_sparse_moe."):
        if f"{prefix}{moe}experts.{name}" in ckpt.files:
            return ([f"{prefix}{moe}experts.{name}"], 0), []
    ns = (1, 3) if name == "gate_up_proj" else (2,)  # gate_up_proj = [w1; w3] per expert, down_proj = w2
    for moe in ("block_sparse_moe.", "mlp."):
        keys = [f"{prefix}{moe}experts.{j}.w{n}.weight" for j in range(num_experts) for n in ns]
        present = [k for k in keys if k in ckpt.files]
        if len(present) == len(keys):
            return (keys, len(ns)), []
        if present:  # a per-expert layout with holes: name the holes
            return None, [k for k in keys if k not in ckpt.files]
    return None, [f"{prefix}mlp.experts.{name}"]


def _source(ckpt: Checkpoint, param: str, num_experts: int) -> tuple[Source | None, list[str]]:
    m = re.match(r"(model\.layers\.\d+\.)mlp\.(.+)$", param)
    if m is None:
        return (([param], 0), []) if param in ckpt.files else (None, [param])
    prefix, rest = m.groups()
    if rest.startswith("experts."):
        return _experts_source(ckpt, prefix, rest[len("experts."):], num_experts)
    for moe in ("mlp.", "block_sparse_moe."):
        if f"{prefix}{moe}{rest}" in ckpt.files:
            return ([f"{prefix}{moe}{rest}"], 0), []
    return None, [param]


def _stored_shape(ckpt: Checkpoint, src: Source) -> tuple[tuple[int, ...], list]:
    """The shape `src` assembles to, from file headers only, and any per-expert tensors of odd shape."""
    keys, pieces = src
    shapes = [ckpt.shape(k) for k in keys]
    if not pieces:
        return shapes[0], []
    odd = [(k, shapes[0], s) for k, s in zip(keys, shapes) if s != shapes[0]]
    return (len(keys) // pieces, pieces * shapes[0][0], *shapes[0][1:]), odd


def _read(ckpt: Checkpoint, src: Source, dtype: torch.dtype | None, device) -> torch.Tensor:
    """Assemble one parameter, reading its stored tensors one at a time into one buffer."""
    keys, pieces = src
    first = ckpt.tensor(keys[0])
    if not pieces:
        return first.to(device=device, dtype=dtype)
    rows = first.shape[0]
    out = torch.empty(len(keys) // pieces, pieces * rows, *first.shape[1:], dtype=dtype or first.dtype, device=device)
    for i, key in enumerate(keys):
        j, part = divmod(i, pieces)
        out[j, part * rows:(part + 1) * rows] = first if i == 0 else ckpt.tensor(key)  # (rows, cols)
    return out


def load_into(module: nn.Module, ckpt: Checkpoint, prefix: str, what: str, *, dtype: torch.dtype | None = None,
              device: torch.device | str = "cpu", strict_prefix: str | None = None) -> None:
    """Fill `module`'s (meta) parameters from `ckpt` keys `prefix + name`, checking all keys and shapes first.

    `strict_prefix`: checkpoint keys under it that no parameter used are reported as unexpected.
    """
    E = module.config.num_local_experts
    plan, missing, mismatched, used = {}, [], [], set()
    for name, p in module.named_parameters():
        src, absent = _source(ckpt, prefix + name, E)
        missing += absent
        if src is None:
            continue
        stored, odd = _stored_shape(ckpt, src)
        mismatched += odd
        if stored != tuple(p.shape):
            mismatched.append((prefix + name, p.shape, stored))
        plan[name] = src
        used.update(src[0])
    unexpected = []
    if strict_prefix is not None:
        unexpected = [k for k in ckpt.files if k.startswith(strict_prefix) and k not in used]
        if getattr(module.config, "tie_word_embeddings", False):
            unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected or mismatched:
        raise StateDictError(f"{what} from {ckpt.path}", missing, unexpected, mismatched)
    for name, src in plan.items():  # one parameter at a time: peak = model + one stored tensor
        owner, attr = _owner(module, name)
        with torch.no_grad():
            value = _read(ckpt, src, dtype, device)
        setattr(owner, attr, nn.Parameter(value, requires_grad=getattr(owner, attr).requires_grad))


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr


def from_pretrained(path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
                    dispatch: str = "grouped", num_hidden_layers: int | None = None) -> MixtralForCausalLM:
    """A `MixtralForCausalLM` from a local transformers checkpoint directory.

    `dtype=None` keeps the stored dtype (bf16 for the released Mixtral weights). Every key
    and shape is checked against the config before any tensor data is read.
    `num_hidden_layers=n` keeps only the first n decoder layers and never reads the others:
    with Mixtral-8x7B, `n=1` (~2 GB) is enough to route real text through a real layer.
    """
    with Checkpoint(path) as ckpt:
        cfg, total = ckpt.config, ckpt.config.num_hidden_layers
        if num_hidden_layers is not None:
            if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int) or not (
                    1 <= num_hidden_layers <= total):
                raise ValueError(f"num_hidden_layers must be an int in [1, {total}], got {num_hidden_layers!r}")
            cfg = cfg.replace(num_hidden_layers=num_hidden_layers)
            dropped = tuple(f"model.layers.{i}." for i in range(num_hidden_layers, total))
            ckpt.files = {k: f for k, f in ckpt.files.items() if not k.startswith(dropped)}
        with torch.device("meta"):
            model = MixtralForCausalLM(cfg, dispatch=dispatch)
        load_into(model, ckpt, "", f"a MixtralForCausalLM ({cfg.num_hidden_layers} layers)",
                  dtype=dtype, device=device, strict_prefix="")
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset_buffers(device)
    return model.eval()


def load_moe_block(path: str | Path, layer: int, *, dtype: torch.dtype | None = None,
                   device: torch.device | str = "cpu", dispatch: str = "grouped") -> SparseMoeBlock:
    """Layer `layer`'s sparse MoE block alone: only its shards are opened, only its tensors read."""
    with Checkpoint(path) as ckpt:
        n = ckpt.config.num_hidden_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
            raise ValueError(f"layer must be an int in [0, num_hidden_layers={n}), got {layer!r}")
        with torch.device("meta"):
            block = SparseMoeBlock(ckpt.config, dispatch=dispatch)
        prefix = f"model.layers.{layer}."
        load_into(block, ckpt, prefix + "mlp.", f"the MoE block of layer {layer}", dtype=dtype, device=device)
    return block.eval()


def save_pretrained(model: MixtralForCausalLM, path: str | Path, *, max_shard_size: int = 5 * 2**30) -> Path:
    """Write `config.json` and safetensors shards (+ index) that transformers 4.x and 5.x load.

    Weights are written as transformers' own `save_pretrained` writes them (per-expert
    `block_sparse_moe.experts.{j}.w1/w2/w3.weight`); `max_shard_size` is in bytes.
    """
    from safetensors.torch import save_file

    if not isinstance(model, MixtralForCausalLM):
        raise TypeError(f"save_pretrained expects a moe_edu MixtralForCausalLM, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    sd = model_from_v5(sd, cfg, "v4")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(sd):
        nbytes = sd[k].numel() * sd[k].element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][k] = sd[k]
        size += nbytes
    names = [SINGLE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, str(path / name), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        (path / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (path / "config.json").write_text(json.dumps(hf_config_dict(cfg, next(iter(sd.values())).dtype), indent=2) + "\n")
    return path


def hf_config_dict(cfg: MixtralConfig, dtype: torch.dtype) -> dict:
    """`cfg` as transformers' `config.json` (read by transformers 4.x and 5.x alike)."""
    d = cfg.to_dict()
    d.pop("router_z_loss_coef")  # ours only; transformers has no z-loss
    d.update(architectures=["MixtralForCausalLM"], model_type="mixtral", dtype=str(dtype).removeprefix("torch."),
             rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    return d

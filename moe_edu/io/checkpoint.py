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

Everything is bounded by the checkpoint itself before any object is built: the layer and
expert counts of `config.json` must agree with the tensor names and header shapes, so an
absurd config fails at once, naming the field. Saving is atomic (`atomic.atomic_directory`):
a reader sees the old checkpoint or the new one, whole; stale shards never survive; and a save
replaces only the checkpoint's own files (listed in a hidden manifest), never a tokenizer, notes
or other folders that share the directory.

Expert weights may be stored fused (transformers v5: `mlp.experts.gate_up_proj`) or per
expert (v4, and what v5 still writes: `block_sparse_moe.experts.{j}.w1/w2/w3.weight`).
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..accounting import count_parameters
from ..config import MixtralConfig
from ..layouts import model_from_v5
from ..loading import FLOAT_DTYPES, load_into
from ..model import MixtralForCausalLM
from ..moe_block import SparseMoeBlock
from ..validation import int_in_range, positive_int
from .atomic import atomic_directory, creation_mode, real_target

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
        if (self.path / "config.json").stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{self.path / 'config.json'} is over {MAX_CONFIG_BYTES} bytes: not a config")
        self.config = MixtralConfig.from_json(self.path / "config.json")
        self.files: dict[str, str] = {}  # tensor name -> shard file name
        index = self.path / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
                raise CheckpointError(f"cannot read the shard index {index}: {err!r}") from err
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: weight_map must be an object of tensor name -> shard file")
            self.files = dict(weight_map)
            for name in self.files.values():
                if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                    raise CheckpointError(f"{index} names shard {name!r} outside {self.path}: only file names allowed")
            for name in sorted(set(self.files.values())):
                if not (self.path / name).is_file():
                    raise CheckpointError(f"{index} lists shard {name}, which is missing from {self.path}")
                if (self.path / name).resolve().parent != self.path.resolve():  # a symlink out of the directory
                    raise CheckpointError(f"{index} names shard {name!r}, which links outside {self.path}")
        elif (self.path / SINGLE).is_file():
            self.check_bytes([SINGLE])  # before a (possibly huge) header is parsed
            with self._open(SINGLE) as f:
                self.files = dict.fromkeys(f.keys(), SINGLE)
        else:
            raise CheckpointError(f"no {SINGLE} or {INDEX} in {self.path}")
        self.check_bytes(sorted(set(self.files.values())))
        self._handles: dict[str, object] = {}
        self._stack: ExitStack | None = None

    @property
    def keys(self) -> Mapping[str, str]:
        """The stored tensor names (what `loading.load_into` looks up)."""
        return self.files

    def _open(self, name: str):
        try:
            return safe_open(str(self.path / name), framework="pt")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read safetensors file {self.path / name}: {err}") from err

    def __enter__(self) -> Checkpoint:
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

    def dtype(self, key: str) -> str:
        """The stored dtype ("F32", "BF16", "I64", ...), from the file header only."""
        try:
            return self._handle(key).get_slice(key).get_dtype()
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {key!r} from {self.path / self.files[key]}: {err}") from err

    def check_counts(self, layers: range | None = None) -> None:
        """config.json's layer and expert counts must match the stored names and header shapes.

        Runs before any model is built, so a config claiming 10^8 layers or 10^9 experts fails
        in milliseconds instead of building Python objects for minutes. Expert counts are checked
        for `layers` (default: all): per-expert tensors must be stored for exactly experts 0..E-1
        (one tensor named `experts.999999999` does not make 10^9 experts), fused tensors and the
        router must have their full header shape. `check_bytes` then bounds every other size.
        """
        cfg, stored_layers, per_expert = self.config, set(), {}
        for key in self.files:
            m = _EXPERT_KEY.match(key)
            if m:
                per_expert.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            m = m or _LAYER_KEY.match(key)
            if m:
                stored_layers.add(int(m.group(1)))
        n = len(stored_layers)
        if cfg.num_hidden_layers != n or stored_layers != set(range(n)):
            raise CheckpointError(
                f"{self.path / 'config.json'}: num_hidden_layers={cfg.num_hidden_layers}, but the "
                f"tensors hold {n} layers (indices {_span(stored_layers)})"
            )
        E, H, I = cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size
        where = f"{self.path / 'config.json'}: num_local_experts={E}"
        for i in range(n) if layers is None else layers:
            fused = f"model.layers.{i}.mlp.experts.gate_up_proj"
            if i in per_expert:
                stored = per_expert[i]
                if stored != set(range(len(stored))) or len(stored) != E:
                    raise CheckpointError(f"{where}, but layer {i} stores experts {_span(stored)} ({len(stored)})")
            elif fused in self.files:
                if self.shape(fused) != (E, 2 * I, H):
                    raise CheckpointError(f"{where}, but {fused} has shape {self.shape(fused)}, not {(E, 2 * I, H)}")
            else:
                raise CheckpointError(f"{where}, but layer {i} stores no experts")
            for router in (f"model.layers.{i}.mlp.gate.weight", f"model.layers.{i}.block_sparse_moe.gate.weight"):
                if router in self.files and self.shape(router) != (E, H):
                    raise CheckpointError(f"{where}, but {router} has shape {self.shape(router)}, not {(E, H)}")

    def check_bytes(self, shards: list[str]) -> None:
        """The weight files must hold at least one byte per parameter that config.json implies.

        A bound on every size field at once (vocabulary, widths, heads, layers, experts), from
        `stat` alone, before any header is parsed: a 104-byte file cannot back 10^9 experts.
        """
        config = self.config
        need = count_parameters(config).total
        present = sum((self.path / name).stat().st_size for name in shards)
        if need > present:
            fields = ", ".join(
                f"{k}={getattr(config, k)}"
                for k in (
                    "num_hidden_layers",
                    "num_local_experts",
                    "hidden_size",
                    "intermediate_size",
                    "vocab_size",
                    "num_attention_heads",
                    "num_key_value_heads",
                )
            )
            raise CheckpointError(
                f"{self.path / 'config.json'} describes {need:,} parameters ({fields}), but the "
                f"weight files hold only {present:,} bytes"
            )

    def tensor(self, key: str) -> torch.Tensor:
        """The stored tensor; a float tensor holding NaN or inf is refused (flipped bytes, a diverged save)."""
        try:
            value = self._handle(key).get_tensor(key)
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {key!r} from {self.path / self.files[key]}: {err}") from err
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{key!r} in {self.path / self.files[key]} holds NaN or infinite values")
        return value

    def check_one_dtype(self, dtype: torch.dtype | None, prefix: str | tuple[str, ...] = "") -> None:
        """With `dtype=None` the stored dtype is kept: one float dtype under `prefix`, or forward fails on mixed matmuls."""
        if dtype is not None:
            return
        seen: dict[str, list[str]] = {}
        for key in self.files:
            if key.startswith(prefix) and self.dtype(key) in FLOAT_DTYPES:  # integer tensors: refused by load_into
                seen.setdefault(self.dtype(key), []).append(key)
        if len(seen) > 1:
            detail = ", ".join(f"{d}: {len(keys)} (e.g. {sorted(keys)[0]})" for d, keys in sorted(seen.items()))
            raise CheckpointError(
                f"{self.path} stores tensors in several dtypes ({detail}): pass dtype= (e.g. torch.float32) "
                f"to load them all in one"
            )


MAX_CONFIG_BYTES = 1 << 20  # a Mixtral config.json is ~1 kB
_EXPERT_KEY = re.compile(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.")
_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.")


def _span(indices: set[int]) -> str:
    return f"{min(indices)}..{max(indices)}" if indices else "none"


def _dtype(dtype) -> torch.dtype | None:
    """None, a floating-point torch.dtype, or its name ("bfloat16")."""
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be None or a floating-point torch.dtype (e.g. torch.bfloat16), got {dtype!r}")
    return dtype


def from_pretrained(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    dispatch: str = "grouped",
    num_hidden_layers: int | None = None,
) -> MixtralForCausalLM:
    """A `MixtralForCausalLM` from a local transformers checkpoint directory.

    `dtype=None` keeps the stored dtype (bf16 for the released Mixtral weights). Every key
    and shape is checked against the config before any tensor data is read.
    `num_hidden_layers=n` keeps only the first n decoder layers and never reads the others:
    with Mixtral-8x7B, `n=1` (~2 GB) is enough to route real text through a real layer.
    """
    dtype = _dtype(dtype)
    with Checkpoint(path) as ckpt:
        cfg, total = ckpt.config, ckpt.config.num_hidden_layers
        if num_hidden_layers is not None:
            what = f"num_hidden_layers (the checkpoint has num_hidden_layers={total})"
            int_in_range(what, num_hidden_layers, 1, total)
        ckpt.check_counts(range(num_hidden_layers or total))  # before anything is built
        if num_hidden_layers is not None:
            cfg = cfg.replace(num_hidden_layers=num_hidden_layers)
        if num_hidden_layers is not None:
            dropped = tuple(f"model.layers.{i}." for i in range(num_hidden_layers, total))
            ckpt.files = {k: f for k, f in ckpt.files.items() if not k.startswith(dropped)}
        ckpt.check_one_dtype(dtype)
        with torch.device("meta"):
            model = MixtralForCausalLM(cfg, dispatch=dispatch)
        load_into(
            model,
            ckpt,
            f"a MixtralForCausalLM ({cfg.num_hidden_layers} layers) from {ckpt.path}",
            dtype=dtype,
            device=device,
            strict_prefix="",
        )
        if cfg.tie_word_embeddings and "lm_head.weight" in ckpt.files:  # tied: the stored head must be the embedding
            stored = ckpt.tensor("lm_head.weight").to(model.model.embed_tokens.weight)
            if not torch.equal(stored, model.model.embed_tokens.weight):
                raise CheckpointError(
                    f"{ckpt.path / 'config.json'}: tie_word_embeddings=true, but the stored lm_head.weight "
                    f"differs from the embedding (it would be ignored): set it to false to use the stored head"
                )
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset_buffers(device)
    return model.eval()


def load_moe_block(
    path: str | Path,
    layer: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    dispatch: str = "grouped",
) -> SparseMoeBlock:
    """Layer `layer`'s sparse MoE block alone: only its shards are opened, only its tensors read."""
    dtype = _dtype(dtype)
    with Checkpoint(path) as ckpt:
        n = ckpt.config.num_hidden_layers
        int_in_range(f"layer (the checkpoint has num_hidden_layers={n})", layer, 0, n - 1)
        ckpt.check_counts(range(layer, layer + 1))
        ckpt.check_one_dtype(dtype, (f"model.layers.{layer}.mlp.", f"model.layers.{layer}.block_sparse_moe."))
        with torch.device("meta"):
            block = SparseMoeBlock(ckpt.config, dispatch=dispatch)
        prefix = f"model.layers.{layer}."
        load_into(
            block,
            ckpt,
            f"the MoE block of layer {layer} from {ckpt.path}",
            prefix=prefix + "mlp.",
            dtype=dtype,
            device=device,
            strict_prefix=None,
        )
    return block.eval()


def save_pretrained(model: MixtralForCausalLM, path: str | Path, *, max_shard_size: int = 5 * 2**30) -> Path:
    """Write `config.json` and safetensors shards (+ index) that transformers 4.x and 5.x load.

    Weights are written as transformers' own `save_pretrained` writes them (per-expert
    `block_sparse_moe.experts.{j}.w1/w2/w3.weight`); `max_shard_size` is in bytes.
    Atomic: `path` holds the old checkpoint or the new one, whole, whatever happens.
    """
    if not isinstance(model, MixtralForCausalLM):
        raise TypeError(f"save_pretrained expects a moe_edu MixtralForCausalLM, got {type(model).__name__}")
    positive_int("max_shard_size", max_shard_size)
    cfg = model.config
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return write_checkpoint(path, model_from_v5(sd, cfg, "v4"), cfg, max_shard_size=max_shard_size)


MANIFEST = ".moe_edu-checkpoint.json"  # the files a save wrote: the next save replaces exactly those
CHECKPOINT_FILES = {"config.json", "generation_config.json", SINGLE, INDEX, MANIFEST}
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def checkpoint_owner(path: Path, extra: Collection[str] = ()) -> Callable[[str], bool]:
    """Which entries of the checkpoint directory `path` a save replaces: its own files, nothing else.

    Owned: config, generation config, weights, shards (transformers' names), index, the names the
    previous save listed in its manifest, and `extra`. A tokenizer, notes or sub-folders stay.
    """
    listed: set[str] = set()
    try:
        data = json.loads((path / MANIFEST).read_text())
        if isinstance(data, dict) and isinstance(data.get("files"), list):
            listed = {n for n in data["files"] if isinstance(n, str) and Path(n).name == n and n not in ("", ".", "..")}
    except (OSError, ValueError):
        pass
    names = CHECKPOINT_FILES | listed | set(extra)
    return lambda name: name in names or _SHARD.fullmatch(name) is not None


def write_checkpoint(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    config: MixtralConfig,
    *,
    max_shard_size: int = 5 * 2**30,
    metadata: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    replaces: Collection[str] = (),
) -> Path:
    """The one checkpoint writer: shards (+ index), `config.json` and any extra text `files`, atomically.

    Everything goes into a temporary sibling directory whose files then replace the checkpoint's
    own files in `path` in one swap (`atomic.atomic_directory`): stale shards and index of an older
    save never survive next to the new ones, and every other entry of `path` is kept. `replaces`
    names further entries of `path` this save removes (e.g. a finished run's training state).
    """
    path = Path(path)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(tensors):
        nbytes = tensors[k].numel() * tensors[k].element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][k] = tensors[k]
        size += nbytes
    names = (
        [SINGLE]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name in files or {}:
        if Path(name).name != name or name in ("", ".", "..") or name in CHECKPOINT_FILES or _SHARD.fullmatch(name):
            raise ValueError(f"write_checkpoint: files may only add plain file names of their own, got {name!r}")
    dtype = next(iter(tensors.values())).dtype
    real = real_target(path)
    with atomic_directory(real, owned=checkpoint_owner(real, replaces)) as tmp:
        for name, shard in zip(names, shards, strict=True):
            save_safetensors(shard, tmp / name, {"format": "pt"} if metadata is None else metadata)
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                "weight_map": {k: name for name, shard in zip(names, shards, strict=True) for k in shard},
            }
            (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(config, dtype), indent=2) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        written = [*sorted(p.name for p in tmp.iterdir() if not p.name.startswith(".")), MANIFEST]
        (tmp / MANIFEST).write_text(json.dumps({"producer": "moe_edu", "files": written}, indent=1) + "\n")
    return path


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """`safetensors.torch.save_file`, with the header's metadata in the order given, readable as umask allows.

    safetensors (0.8) writes the metadata in hash order, which changes from process to
    process: two identical saves could differ in their bytes. The header is rewritten in
    place (same length, only the order of its keys changes), so a seeded run gives one file.
    """
    try:
        save_file(dict(tensors), str(path), metadata=dict(metadata) or None)  # {}: no metadata at all
    except SafetensorError as err:  # a full disk arrives as "I/O error: ... (os error 28)": make it an OSError
        code = re.search(r"os error (\d+)", str(err))
        raise OSError(int(code.group(1)) if code else errno.EIO, f"cannot write {path}: {err}") from None
    if metadata:
        with open(path, "r+b") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            header = {"__metadata__": dict(metadata), **{k: v for k, v in header.items() if k != "__metadata__"}}
            text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
            if len(text) <= n:
                f.seek(8)
                f.write(text.ljust(n, b" "))
    os.chmod(path, creation_mode(path.parent))  # safetensors creates 0600 files; a checkpoint is meant to be shared


def hf_config_dict(cfg: MixtralConfig, dtype: torch.dtype) -> dict:
    """`cfg` as transformers' `config.json` (read by transformers 4.x and 5.x alike); the one config writer.

    `router_z_loss_coef` is ours (transformers keeps unknown keys as attributes and ignores it).
    """
    d = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", **cfg.to_dict()}
    d["dtype"] = str(dtype).removeprefix("torch.")
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    return d

"""State-dict layouts of a Mixtral MoE block, and strict loading between them.

Three layouts exist in the wild (E experts, I intermediate, H hidden):

| layout    | router            | experts                                                   |
|-----------|-------------------|-----------------------------------------------------------|
| `v5`      | `gate.weight`     | `experts.gate_up_proj` (E, 2I, H), `experts.down_proj` (E, H, I) |
| `v4`      | `gate.weight`     | `experts.{j}.w1.weight` (I, H), `.w3.weight` (I, H), `.w2.weight` (H, I) |
| `mistral` | `feed_forward.gate.weight` | `feed_forward.experts.{j}.w1/w3/w2.weight`     |

`v5` is what `SparseMoeBlock` stores (transformers >= 5); `v4` is transformers 4.x;
`mistral` is the naming of Mistral's own consolidated checkpoints. Loading itself (strict:
keys, shapes, dtypes) is `loading.load_into`, the one loader for memory and files alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from .loading import StateDictError, check_and_load

__all__ = [
    "LAYOUTS",
    "StateDictError",
    "block_to_v5",
    "check_and_load",
    "detect_layout",
    "export_block_state",
    "load_block_state",
    "model_from_v5",
    "model_to_v5",
    "split_moe_blocks",
    "v5_to_layout",
]

LAYOUTS = ("v5", "v4", "mistral")
_MISTRAL_PREFIX = "feed_forward."

# Mistral-native names -> transformers' (v5 and v4 alike) for the non-MoE tensors; the inverse is derived.
MISTRAL_MODEL_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
MISTRAL_LAYER_KEYS = {  # inside `layers.{i}.` -> inside `model.layers.{i}.`
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
TO_MISTRAL_MODEL_KEYS = {v: k for k, v in MISTRAL_MODEL_KEYS.items()}
TO_MISTRAL_LAYER_KEYS = {v: k for k, v in MISTRAL_LAYER_KEYS.items()}


def detect_layout(keys) -> str:
    """Which of `LAYOUTS` a block's keys use (v5 if in doubt, so errors list v5 names)."""
    keys = list(keys)
    if any(k.startswith(_MISTRAL_PREFIX) for k in keys):
        return "mistral"
    if any(re.match(r"experts\.\d+\.w[123]\.weight$", k) for k in keys):
        return "v4"
    return "v5"


def block_to_v5(sd: Mapping[str, torch.Tensor], num_experts: int) -> dict[str, torch.Tensor]:
    """Any layout -> v5 keys. Keys it does not recognise are passed through (and then reported)."""
    layout = detect_layout(sd)
    if layout == "v5":
        return dict(sd)
    if layout == "mistral":
        sd = {k[len(_MISTRAL_PREFIX) :] if k.startswith(_MISTRAL_PREFIX) else k: v for k, v in sd.items()}
    out = {k: v for k, v in sd.items() if not re.match(r"experts\.\d+\.w[123]\.weight$", k)}
    names = [f"experts.{j}.w{n}.weight" for j in range(num_experts) for n in (1, 2, 3)]
    missing = [n for n in names if n not in sd]
    extra = [k for k in sd if re.match(r"experts\.(\d+)\.w[123]\.weight$", k) and k not in names]
    if missing or extra:
        raise StateDictError(f"a {layout} MoE block with {num_experts} experts", missing, extra)
    w1 = [sd[f"experts.{j}.w1.weight"] for j in range(num_experts)]
    w3 = [sd[f"experts.{j}.w3.weight"] for j in range(num_experts)]
    w2 = [sd[f"experts.{j}.w2.weight"] for j in range(num_experts)]
    shapes = {tuple(t.shape) for t in w1 + w3}
    if len(shapes) != 1 or len({tuple(t.shape) for t in w2}) != 1:
        bad = [
            (f"experts.{j}.w{n}.weight", w1[0].shape if n != 2 else w2[0].shape, t.shape)
            for j in range(num_experts)
            for n, t in ((1, w1[j]), (3, w3[j]), (2, w2[j]))
            if t.shape != (w2[0].shape if n == 2 else w1[0].shape)
        ]
        raise StateDictError(f"a {layout} MoE block", mismatched=bad)
    out["experts.gate_up_proj"] = torch.stack(
        [torch.cat([a, b], dim=0) for a, b in zip(w1, w3, strict=False)]
    )  # (E, 2I, H)
    out["experts.down_proj"] = torch.stack(w2)  # (E, H, I)
    return out


def v5_to_layout(sd: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """v5 keys -> `layout` keys."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "v5":
        return dict(sd)
    gate_up, down = sd["experts.gate_up_proj"], sd["experts.down_proj"]  # (E, 2I, H), (E, H, I)
    inter = gate_up.shape[1] // 2
    out = {"gate.weight": sd["gate.weight"]}
    for j in range(gate_up.shape[0]):
        out[f"experts.{j}.w1.weight"] = gate_up[j, :inter].clone()  # (I, H)
        out[f"experts.{j}.w3.weight"] = gate_up[j, inter:].clone()  # (I, H)
        out[f"experts.{j}.w2.weight"] = down[j].clone()  # (H, I)
    if layout == "mistral":
        out = {_MISTRAL_PREFIX + k: v for k, v in out.items()}
    return out


def load_block_state(block: nn.Module, sd: Mapping[str, torch.Tensor], *, prefix: str = "") -> None:
    if not isinstance(sd, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(sd).__name__}")
    if prefix:
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise StateDictError(f"a MoE block: no key starts with prefix {prefix!r}", missing=["gate.weight"])
    v5 = block_to_v5(sd, block.num_experts)
    check_and_load(block, v5, f"a MoE block (E={block.num_experts}, H={block.hidden_size})")


def export_block_state(block: nn.Module, layout: str = "v5") -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in block.state_dict().items()}
    return v5_to_layout(sd, layout)


# --- whole models ---------------------------------------------------------------
def _unpermute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Mistral's interleaved-pair RoPE layout -> transformers' rotate-half layout (q/k rows)."""
    out_dim, in_dim = w.shape
    return w.view(heads, out_dim // heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _mistral_model_key(key: str, sd: Mapping[str, torch.Tensor], config) -> tuple[str, torch.Tensor]:
    tensor = sd[key]
    if key in MISTRAL_MODEL_KEYS:
        return MISTRAL_MODEL_KEYS[key], tensor
    m = re.match(r"layers\.(\d+)\.(.+)$", key)
    if not m:
        return key, tensor
    i, rest = m.groups()
    if rest == "attention.wq.weight" and tensor.dim() == 2:
        tensor = _unpermute_rotary(tensor, config.num_attention_heads)
    elif rest == "attention.wk.weight" and tensor.dim() == 2:
        tensor = _unpermute_rotary(tensor, config.num_key_value_heads)
    if rest in MISTRAL_LAYER_KEYS:
        return f"model.layers.{i}.{MISTRAL_LAYER_KEYS[rest]}", tensor
    if rest.startswith(_MISTRAL_PREFIX):
        return f"model.layers.{i}.mlp.{rest[len(_MISTRAL_PREFIX) :]}", tensor
    return key, tensor


def _permute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers' rotate-half layout -> Mistral's interleaved pairs (inverse of `_unpermute_rotary`)."""
    out_dim, in_dim = w.shape
    return w.view(heads, 2, out_dim // heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


V4_MOE = ".block_sparse_moe."  # transformers 4.x (and its save_pretrained in 5.x) name the MoE block so


def split_moe_blocks(sd: Mapping[str, torch.Tensor], pattern: str):
    """Split a model state dict into (other keys, {layer prefix: that layer's MoE-block keys}).

    `pattern` has two groups: the prefix that names a layer's block, and the key inside it.
    """
    out: dict[str, torch.Tensor] = {}
    per_layer: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = re.match(pattern, k)
        if m:
            per_layer.setdefault(m.group(1), {})[m.group(2)] = v
        else:
            out[k] = v
    return out, per_layer


def model_to_v5(sd: Mapping[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A whole-model state dict in transformers v5, v4 or Mistral-native keys -> v5 keys."""
    if not isinstance(sd, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(sd).__name__}")
    if "tok_embeddings.weight" in sd or any(".feed_forward." in k for k in sd):
        sd = dict(_mistral_model_key(k, sd, config) for k in sd)
    sd = {k.replace(V4_MOE, ".mlp."): v for k, v in sd.items()}
    out, per_layer = split_moe_blocks(sd, r"(model\.layers\.\d+\.mlp\.)(.+)$")
    for prefix, block in per_layer.items():
        out.update({prefix + k: v for k, v in block_to_v5(block, config.num_local_experts).items()})
    return out


def model_from_v5(sd: Mapping[str, torch.Tensor], config, layout: str = "v5") -> dict[str, torch.Tensor]:
    """v5 whole-model keys -> `layout`: "v5"; "v4" (`block_sparse_moe.experts.{j}.w1/w2/w3`, what
    transformers' `save_pretrained` writes); "mistral" (consolidated names, q/k rows re-permuted)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "v5":
        return dict(sd)
    out, per_layer = split_moe_blocks(sd, r"(model\.layers\.\d+\.)mlp\.(.+)$")
    for prefix, block in per_layer.items():
        out.update({prefix + "block_sparse_moe." + k: v for k, v in v5_to_layout(block, "v4").items()})
    if layout == "v4":
        return out
    mistral: dict[str, torch.Tensor] = {}
    for k, v in out.items():
        m = re.match(r"model\.layers\.(\d+)\.(.+)$", k)
        if k in TO_MISTRAL_MODEL_KEYS:
            mistral[TO_MISTRAL_MODEL_KEYS[k]] = v
        elif m and m.group(2) in TO_MISTRAL_LAYER_KEYS:
            if m.group(2) == "self_attn.q_proj.weight":
                v = _permute_rotary(v, config.num_attention_heads)
            elif m.group(2) == "self_attn.k_proj.weight":
                v = _permute_rotary(v, config.num_key_value_heads)
            mistral[f"layers.{m.group(1)}.{TO_MISTRAL_LAYER_KEYS[m.group(2)]}"] = v
        elif m and m.group(2).startswith("block_sparse_moe."):
            mistral[f"layers.{m.group(1)}.{_MISTRAL_PREFIX}{m.group(2)[len('block_sparse_moe.') :]}"] = v
        else:
            mistral[k] = v
    return mistral

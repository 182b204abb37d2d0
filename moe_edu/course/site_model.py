"""The shipped tiny model for the browser: what the site explorer needs to route any typed text.

The router logits of layer l depend on the text through layers 0..l, so the page needs the
embeddings, every layer's attention, norms and router, and the experts of all layers but the last
(no router reads their output); not the final norm or the head. They go, fp32 little-endian, as
base64 inside a JS file (`window.MOE_MODEL = {...}`, loadable from file:// like the routing data),
with the config and the byte-level BPE tokenizer (vocab and merges). `static/site_explorer_live.js`
tokenises and runs that forward pass in plain JS: no ONNX runtime, no WASM, nothing fetched.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

FORMAT = 1
GLOBAL = "MOE_MODEL"  # the window property the model file sets
FILE = "site_explorer_model.js"
LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate.weight",
)
EXPERT_TENSORS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")  # (E, 2I, H), (E, H, I)


def check_tokenizer(spec: dict) -> dict:
    """The tokenizer.json fields the JS tokenizer implements (byte-level BPE, digits split one by one, no
    normalizer); anything else is a ValueError that names the field, not a page that tokenises wrongly."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ValueError(f"tokenizer model must be a plain BPE, got {model.get('type')!r}")
    if spec.get("normalizer") is not None:
        raise ValueError(f"tokenizer normalizer must be null, got {spec['normalizer']!r}")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("individual_digits"), s.get("add_prefix_space"), s.get("use_regex")) for s in steps]
    if kinds != [("Digits", True, None, None), ("ByteLevel", None, False, True)]:
        raise ValueError(f"tokenizer pre_tokenizer must be Digits(individual) then ByteLevel(regex), got {kinds}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"vocab": model["vocab"], "merges": merges}


def export_model(model: Any, tokenizer: Any) -> dict[str, Any]:
    """Config, tokenizer and the tensors the routers need (see module doc), as JSON-ready data."""
    cfg = model.config
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    names = ["model.embed_tokens.weight"]
    for layer in range(cfg.num_hidden_layers):
        names += [f"model.layers.{layer}.{n}" for n in LAYER_TENSORS]
        if layer < cfg.num_hidden_layers - 1:
            names += [f"model.layers.{layer}.{n}" for n in EXPERT_TENSORS]
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"model state dict lacks {missing[:3]} (a moe_edu MixtralForCausalLM is expected)")
    tensors, chunks, offset = {}, [], 0
    for name in names:
        array = state[name].contiguous().numpy().astype("<f4")
        tensors[name] = {"shape": list(array.shape), "offset": offset}
        chunks.append(array.ravel())
        offset += array.size
    weights = np.concatenate(chunks).tobytes()
    return {
        "format": FORMAT,
        "config": {
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_layers": cfg.num_hidden_layers,
            "num_experts": cfg.num_local_experts,
            "top_k": cfg.num_experts_per_tok,
            "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads,
            "head_dim": cfg.attention_head_dim,
            "rope_theta": float(cfg.rope_theta),
            "rms_norm_eps": float(cfg.rms_norm_eps),
            "context": cfg.max_position_embeddings,
            "vocab_size": cfg.vocab_size,
            "sliding_window": cfg.sliding_window,
        },
        "tokenizer": check_tokenizer(json.loads(tokenizer.backend.to_str())),
        "tensors": tensors,
        "num_floats": offset,
        "weights": base64.b64encode(weights).decode("ascii"),
    }

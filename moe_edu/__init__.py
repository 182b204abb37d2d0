"""moe_edu: a real Mixtral sparse mixture-of-experts layer, small enough to read.

Names are imported lazily so `import moe_edu` stays fast (no matplotlib, no widgets).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "MixtralConfig": "config",
    "PRESETS": "presets",
    "get_config": "presets",
    "count_parameters": "accounting",
    "flops_per_token": "accounting",
    "ParameterCount": "accounting",
    "TopKRouter": "routing",
    "Router": "routing",
    "Routing": "routing",
    "softmax_topk": "routing",
    "topk_softmax": "routing",
    "Experts": "experts",
    "swiglu": "experts",
    "DISPATCHES": "dispatch",
    "SparseMoeBlock": "moe_block",
    "MoEBlock": "moe_block",
    "grouped_matmul": "grouped_mm",
    "ExpertParallelMoeBlock": "parallel",
    "check_expert_parallel": "parallel_check",
    "load_balancing_loss": "losses",
    "router_z_loss": "losses",
    "StateDictError": "interop",
    "MixtralForCausalLM": "model",
    "MoeCausalLMOutput": "model",
    "from_pretrained": "pretrained",
    "load_moe_block": "pretrained",
    "save_pretrained": "pretrained",
    "CheckpointError": "pretrained",
    "load_pretrained": "shipped",
    "build_variants": "variants",
    "MoEOutput": "variants",
    "load_train_log": "shipped",
    "Tokenizer": "tokenizer",
    "TrainConfig": "train",
    "capacity_dispatch": "capacity",
    "glossary_table": "glossary",
    "draw_mixtral_block": "diagram",
    "RoutingExplorer": "widgets",
    "render_routing_html": "widgets",
    "trace_routing": "widgets",
    "upcycle_model": "upcycling",
    "prune_experts": "pruning",
    "merge_experts": "pruning",
    "memory_budget": "memory",
    "MemoryBudget": "memory",
    "passkey_grid": "passkey",
    "OffloadedMoeBlock": "offload",
    "LRUCache": "expert_cache",
    "quantize_int8": "quantize",
    "quantize_int4": "quantize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moe_edu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

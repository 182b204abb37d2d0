"""moe_edu: a real Mixtral sparse mixture-of-experts layer, small enough to read.

The library's names are imported eagerly below. The course's figures and widgets
(`moe_edu.course`) load on first use: importing them costs 0.34 s more (matplotlib,
ipywidgets, anywidget; measured on this project's 2-core CI machine, against 0.17 s for every
library module after torch), which a training script or checkpoint loader never needs.
"""

from __future__ import annotations

import importlib

from .accounting import ParameterCount, count_parameters, flops_per_token
from .capacity import capacity_dispatch
from .config import MixtralConfig
from .dispatch import DISPATCHES
from .expert_cache import LRUCache
from .experts import Experts, swiglu
from .grouped_mm import grouped_matmul
from .interop import StateDictError
from .losses import load_balancing_loss, router_z_loss
from .memory import MemoryBudget, memory_budget
from .model import MixtralForCausalLM, MoeCausalLMOutput
from .moe_block import MoEBlock, SparseMoeBlock
from .offload import OffloadedMoeBlock
from .parallel import ExpertParallelMoeBlock
from .parallel_check import check_expert_parallel
from .passkey import passkey_grid
from .presets import PRESETS, get_config
from .pretrained import CheckpointError, from_pretrained, load_moe_block, save_pretrained
from .pruning import merge_experts, prune_experts
from .quantize import quantize_int4, quantize_int8
from .routing import Router, Routing, TopKRouter, softmax_topk, topk_softmax
from .shipped import load_pretrained, load_train_log
from .tokenizer import Tokenizer
from .train_config import TrainConfig
from .upcycling import upcycle_model
from .variants import MoEOutput, build_variants

__version__ = "0.1.0"

# course names, loaded on first use: public name -> module of moe_edu.course
_COURSE = {
    "glossary_table": "glossary",
    "draw_mixtral_block": "diagram",
    "RoutingExplorer": "widgets",
    "render_routing_html": "widgets",
    "trace_routing": "widgets",
}

__all__ = [
    "CheckpointError",
    "DISPATCHES",
    "ExpertParallelMoeBlock",
    "Experts",
    "LRUCache",
    "MemoryBudget",
    "MixtralConfig",
    "MixtralForCausalLM",
    "MoEBlock",
    "MoEOutput",
    "MoeCausalLMOutput",
    "OffloadedMoeBlock",
    "PRESETS",
    "ParameterCount",
    "Router",
    "Routing",
    "RoutingExplorer",
    "SparseMoeBlock",
    "StateDictError",
    "Tokenizer",
    "TopKRouter",
    "TrainConfig",
    "build_variants",
    "capacity_dispatch",
    "check_expert_parallel",
    "count_parameters",
    "draw_mixtral_block",
    "flops_per_token",
    "from_pretrained",
    "get_config",
    "glossary_table",
    "grouped_matmul",
    "load_balancing_loss",
    "load_moe_block",
    "load_pretrained",
    "load_train_log",
    "memory_budget",
    "merge_experts",
    "passkey_grid",
    "prune_experts",
    "quantize_int4",
    "quantize_int8",
    "render_routing_html",
    "router_z_loss",
    "save_pretrained",
    "softmax_topk",
    "swiglu",
    "topk_softmax",
    "trace_routing",
    "upcycle_model",
]


def __getattr__(name: str):
    if name in _COURSE:
        value = getattr(importlib.import_module(f".course.{_COURSE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moe_edu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_COURSE))

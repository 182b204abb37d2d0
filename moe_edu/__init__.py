"""moe_edu: a real Mixtral sparse mixture-of-experts layer, small enough to read.

The package root exports what a user calls: the layer, the model, configs, accounting and
checkpoint I/O. Everything else lives at its own address:

- the flat core (`moe_edu.routing`, `.experts`, `.dispatch`, `.moe_block`, ...), read by notebooks 00-05;
- `moe_edu.variants` (notebook 09), `moe_edu.parallel` (10);
- the periphery: `moe_edu.io`, `.training`, `.serving`, `.adapting`, and `.experiments` (the
  `python -m` precompute commands); `moe_edu.course` (figures, widgets, exercise checkers).

Three course names of the stable API (`trace_routing`, `render_routing_html`, `RoutingExplorer`)
load on first use, so that `import moe_edu` never imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import importlib

from .accounting import count_parameters, flops_per_token
from .capacity import capacity_dispatch
from .config import MixtralConfig
from .dispatch import DISPATCHES
from .experts import Experts, swiglu
from .io.checkpoint import CheckpointError, from_pretrained, load_moe_block, save_pretrained
from .io.shipped import load_pretrained
from .loading import StateDictError
from .losses import load_balancing_loss, router_z_loss
from .model import MixtralForCausalLM
from .moe_block import MoEBlock, SparseMoeBlock
from .presets import PRESETS, get_config
from .routing import Router, Routing, TopKRouter, softmax_topk, topk_softmax
from .tokenizer import Tokenizer

__version__ = "0.1.0"

# the stable API's course names (DESIGN.md), loaded on first use from moe_edu.course.widgets
_LAZY = ("RoutingExplorer", "render_routing_html", "trace_routing")

__all__ = [
    "DISPATCHES",
    "PRESETS",
    "CheckpointError",
    "Experts",
    "MixtralConfig",
    "MixtralForCausalLM",
    "MoEBlock",
    "Router",
    "Routing",
    "RoutingExplorer",
    "SparseMoeBlock",
    "StateDictError",
    "Tokenizer",
    "TopKRouter",
    "capacity_dispatch",
    "count_parameters",
    "flops_per_token",
    "from_pretrained",
    "get_config",
    "load_balancing_loss",
    "load_moe_block",
    "load_pretrained",
    "render_routing_html",
    "router_z_loss",
    "save_pretrained",
    "softmax_topk",
    "swiglu",
    "topk_softmax",
    "trace_routing",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(".course.widgets", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moe_edu' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""The MoE family: each routing rule a router in the library's `MoEBlock`, over the same experts and dispatch.

| name             | module              | what it is                                               |
|------------------|---------------------|----------------------------------------------------------|
| `mixtral`        | `mixtral.py`        | Mixtral's dropless top-2 (`SparseMoeBlock`), the reference |
| `noisy_topk`     | `noisy_topk.py`     | Shazeer et al. 2017: noisy top-k, importance + load loss  |
| `switch`         | `switch.py`         | Switch top-1 with capacity factor and token dropping      |
| `gshard`         | `gshard.py`         | GShard top-2 with capacity and random second expert       |
| `expert_choice`  | `expert_choice.py`  | experts pick their top-C tokens (Zhou et al. 2022)        |
| `shared_experts` | `shared_experts.py` | DeepSeekMoE: shared + fine-grained routed experts         |
| `soft_moe`       | `soft_moe.py`       | Soft MoE (Puigcerver 2023): slots mix tokens, no choice   |
| `aux_free`       | `aux_free.py`       | Wang et al. 2024 (DeepSeek-V3): a selection-only bias, no aux loss |

A variant is a value, not a class: `build_variant("switch", config, capacity_factor=2.0)` returns
`MoEBlock(SwitchRouter(...), Experts(...))`; the router carries the table's text (`label`,
`gating`, `capacity_rule`, `aux_loss_names`). `base.moe_output(block, x)` runs any variant and
returns a `MoEOutput`. Soft MoE routes nothing, so it is a sibling module (`SoftMoE`) that
returns a `MoEOutput` itself. `compare.py` turns a batch into notebook 09's table.

A new rule is a new router: subclass `moe_edu.routing.Router` (or `TopKRouter`,
`capacity.CapacityRouter`), return a `Routing` from `forward`, set `top_k` and the table text,
name its `aux_losses`; then add a `build_<name>(config, **options)` to `VARIANTS`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import MixtralConfig
from .aux_free import build_aux_free
from .base import MoEOutput, moe_output
from .expert_choice import build_expert_choice
from .gshard import build_gshard
from .mixtral import build_mixtral
from .noisy_topk import build_noisy_topk
from .shared_experts import build_shared_experts
from .soft_moe import SoftMoE, build_soft_moe
from .switch import build_switch

VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "mixtral": build_mixtral,
    "noisy_topk": build_noisy_topk,
    "switch": build_switch,
    "gshard": build_gshard,
    "expert_choice": build_expert_choice,
    "shared_experts": build_shared_experts,
    "soft_moe": build_soft_moe,  # a sibling module, not an MoEBlock: it routes nothing
    "aux_free": build_aux_free,
}


def build_variant(name: str, config: MixtralConfig, **options) -> nn.Module:
    """One variant sized from a Mixtral config: an `MoEBlock` with that rule's router (a `SoftMoE` for
    "soft_moe"); `options` go to the builder in `VARIANTS` (e.g. `capacity_factor=2.0`)."""
    try:
        build = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown MoE variant {name!r}; choose one of {sorted(VARIANTS)}") from None
    return build(config, **options)


def build_variants(config: MixtralConfig, options: dict[str, dict] | None = None) -> dict[str, nn.Module]:
    """Every variant, in the registry's order; `options` maps a name to its builder's keywords."""
    options = options or {}
    unknown = sorted(set(options) - set(VARIANTS))
    if unknown:
        raise ValueError(f"options for unknown MoE variants {unknown}; choose from {sorted(VARIANTS)}")
    return {name: build_variant(name, config, **options.get(name, {})) for name in VARIANTS}


__all__ = ["VARIANTS", "MoEOutput", "SoftMoE", "build_variant", "build_variants", "moe_output"]

"""The MoE family, each routing rule a small module over the same experts and dispatch.

| name             | module              | what it is                                               |
|------------------|---------------------|----------------------------------------------------------|
| `mixtral`        | `mixtral.py`        | Mixtral's dropless top-2, the reference point            |
| `noisy_topk`     | `noisy_topk.py`     | Shazeer et al. 2017: noisy top-k, importance + load loss  |
| `switch`         | `switch.py`         | Switch top-1 with capacity factor and token dropping      |
| `gshard`         | `gshard.py`         | GShard top-2 with capacity and random second expert       |
| `expert_choice`  | `expert_choice.py`  | experts pick their top-C tokens (Zhou et al. 2022)        |
| `shared_experts` | `shared_experts.py` | DeepSeekMoE: shared + fine-grained routed experts         |
| `soft_moe`       | `soft_moe.py`       | Soft MoE (Puigcerver 2023): slots mix tokens, no choice   |
| `aux_free`       | `aux_free.py`       | Wang et al. 2024 (DeepSeek-V3): a selection-only bias, no aux loss |

Each module is a router (`...Router`) plus a thin `RoutedMoE` that plugs it into the library's
`MoEBlock` (same experts, same dispatch-and-combine step); every variant returns a `MoEOutput`;
`compare.py` turns a batch into notebook 09's table.
"""

from __future__ import annotations

from ..config import MixtralConfig
from .aux_free import AuxFreeMoE
from .base import MoEOutput, RoutedMoE
from .expert_choice import ExpertChoiceMoE
from .gshard import GShardMoE
from .mixtral import MixtralDroplessMoE
from .noisy_topk import NoisyTopKMoE
from .shared_experts import SharedExpertMoE
from .soft_moe import SoftMoE
from .switch import SwitchMoE

VARIANTS: dict[str, type[RoutedMoE]] = {
    "mixtral": MixtralDroplessMoE,
    "noisy_topk": NoisyTopKMoE,
    "switch": SwitchMoE,
    "gshard": GShardMoE,
    "expert_choice": ExpertChoiceMoE,
    "shared_experts": SharedExpertMoE,
    "soft_moe": SoftMoE,
    "aux_free": AuxFreeMoE,
}


def build_variant(name: str, config: MixtralConfig, **options) -> RoutedMoE:
    """One variant sized from a Mixtral config (options go to its `from_config`)."""
    try:
        cls = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown MoE variant {name!r}; choose one of {sorted(VARIANTS)}") from None
    return cls.from_config(config, **options)


def build_variants(config: MixtralConfig, options: dict[str, dict] | None = None) -> dict[str, RoutedMoE]:
    """Every variant, in the registry's order; `options` maps a name to its `from_config` keywords."""
    options = options or {}
    unknown = sorted(set(options) - set(VARIANTS))
    if unknown:
        raise ValueError(f"options for unknown MoE variants {unknown}; choose from {sorted(VARIANTS)}")
    return {name: build_variant(name, config, **options.get(name, {})) for name in VARIANTS}


__all__ = [
    "VARIANTS",
    "MoEOutput",
    "RoutedMoE",
    "build_variant",
    "build_variants",
    "MixtralDroplessMoE",
    "NoisyTopKMoE",
    "SwitchMoE",
    "GShardMoE",
    "ExpertChoiceMoE",
    "SharedExpertMoE",
    "SoftMoE",
    "AuxFreeMoE",
]

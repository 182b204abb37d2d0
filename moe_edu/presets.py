"""Named configs, from a CPU toy to the exact published Mixtral models."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .config import MixtralConfig

MIXTRAL_8X7B = MixtralConfig(name="mixtral-8x7b")  # the defaults are Mixtral-8x7B-v0.1's config.json

MIXTRAL_8X22B = MixtralConfig(  # Mixtral-8x22B-v0.1 (vocab 32000 as in the paper's accounting)
    hidden_size=6144,
    intermediate_size=16384,
    num_hidden_layers=56,
    num_attention_heads=48,
    num_key_value_heads=8,
    max_position_embeddings=65536,
    name="mixtral-8x22b",
)

# A forward pass in about a millisecond on a laptop CPU: the notebooks' default.
TINY = MixtralConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=224,  # 3.5 x hidden, as in Mixtral
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,  # 4 query heads per K/V head, as in Mixtral
    max_position_embeddings=256,
    name="tiny",
)

# Mixtral's shape at 1/16 of its width: big enough for meaningful timings on a CPU.
SMALL = MIXTRAL_8X7B.scaled(256, num_hidden_layers=8, head_dim=32, max_position_embeddings=2048, name="small")

# Read-only: a notebook cannot change "tiny" for every later caller by accident.
PRESETS: Mapping[str, MixtralConfig] = MappingProxyType({c.name: c for c in (TINY, SMALL, MIXTRAL_8X7B, MIXTRAL_8X22B)})


def get_config(name: str) -> MixtralConfig:
    """A preset by name, with a helpful error for unknown names."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None

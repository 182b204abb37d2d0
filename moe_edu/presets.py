"""Named configs, from a CPU toy to the exact published Mixtral models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .accounting import ModelShape
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


@dataclass(frozen=True)
class PublishedMoE:
    """An open MoE's shape (from its released config.json) and the counts its authors published.

    `total_b` and `active_b` are in billions as published; `tolerance_b` is half the last digit they
    round to, so a correct count must land within it.
    """

    shape: ModelShape
    total_b: float
    active_b: float
    tolerance_b: float
    source: str


# Each shape: the fields of the model's config.json that change the count (verified for this course).
OLMOE_1B_7B = ModelShape(  # allenai/OLMoE-1B-7B-0924: 64 experts of width 1024, top-8, q/k RMSNorm
    MixtralConfig(
        vocab_size=50304,
        hidden_size=2048,
        intermediate_size=1024,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=4096,
        num_local_experts=64,
        num_experts_per_tok=8,
        bos_token_id=None,
        eos_token_id=None,
        name="olmoe-1b-7b",
    ),
    qk_norm=True,
)

QWEN1_5_MOE_A2_7B = ModelShape(  # Qwen/Qwen1.5-MoE-A2.7B: 60 routed experts of width 1408, top-4, + shared 5632
    MixtralConfig(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=1408,  # moe_intermediate_size: one routed expert
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=16,
        num_local_experts=60,
        num_experts_per_tok=4,
        bos_token_id=None,
        eos_token_id=None,
        name="qwen1.5-moe-a2.7b",
    ),
    shared_intermediate_size=5632,
    shared_gate=True,
    attention_bias=True,
)

DBRX = ModelShape(  # databricks/dbrx-base: 16 experts of width 10752, top-4, GQA with 8 K/V heads
    MixtralConfig(
        vocab_size=100352,
        hidden_size=6144,
        intermediate_size=10752,
        num_hidden_layers=40,
        num_attention_heads=48,
        num_key_value_heads=8,
        num_local_experts=16,
        num_experts_per_tok=4,
        bos_token_id=None,
        eos_token_id=None,
        name="dbrx",
    )
)

OPEN_MOES: Mapping[str, PublishedMoE] = MappingProxyType(
    {
        "mixtral-8x7b": PublishedMoE(
            ModelShape(MIXTRAL_8X7B), 47, 13, 0.5, "Jiang et al. 2024 (arXiv 2401.04088), abstract and §2"
        ),
        "mixtral-8x22b": PublishedMoE(
            ModelShape(MIXTRAL_8X22B), 141, 39, 0.5, "Mistral AI, 'Cheaper, Better, Faster, Stronger' (2024-04-17)"
        ),
        "olmoe-1b-7b": PublishedMoE(OLMOE_1B_7B, 6.9, 1.3, 0.05, "Muennighoff et al. 2024 (arXiv 2409.02060)"),
        "qwen1.5-moe-a2.7b": PublishedMoE(
            QWEN1_5_MOE_A2_7B, 14.3, 2.7, 0.05, "Qwen1.5-MoE-A2.7B model card and blog (2024-03-28)"
        ),
        "dbrx": PublishedMoE(DBRX, 132, 36, 0.5, "Databricks, dbrx-base model card (2024-03-27)"),
    }
)

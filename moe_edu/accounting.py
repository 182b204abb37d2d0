"""Parameter and FLOP accounting: why Mixtral has 47B parameters but uses 13B per token.

Notebook 00 derives these counts term by term; tests check the totals against
models instantiated on the `meta` device.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MixtralConfig
from .validation import nonnegative_int


@dataclass(frozen=True)
class ParameterCount:
    """Exact integer parameter counts, split by component (whole model)."""

    embedding: int  # token embedding, V x H
    attention: int  # q, k, v, o projections over all layers
    router: int  # the gates, E x H per layer
    experts: int  # all E experts of all layers
    active_experts: int  # the k experts a token actually runs, all layers
    norms: int  # RMSNorm weights (2 per layer + final)
    lm_head: int  # output projection, H x V (0 when tied)

    @property
    def total(self) -> int:
        return self.embedding + self.attention + self.router + self.experts + self.norms + self.lm_head

    @property
    def active(self) -> int:
        """Parameters a single token touches: everything but the unchosen experts."""
        return self.total - self.experts + self.active_experts

    def __str__(self) -> str:
        return f"total {self.total:,} ({self.total / 1e9:.1f}B), active {self.active:,} ({self.active / 1e9:.1f}B)"


def count_parameters(config: MixtralConfig) -> ParameterCount:
    """Every parameter of a `MixtralForCausalLM` built from `config`, by component (exact integers)."""
    if not isinstance(config, MixtralConfig):
        raise TypeError(f"count_parameters expects a MixtralConfig, got {type(config).__name__}")
    c = config
    H, I, L, E, k = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok
    q_out = c.num_attention_heads * c.attention_head_dim
    kv_out = c.num_key_value_heads * c.attention_head_dim
    attention = L * (H * q_out + 2 * H * kv_out + q_out * H)  # wq, wk, wv, wo
    one_expert = 3 * H * I  # w1 (I x H), w3 (I x H), w2 (H x I)
    return ParameterCount(
        embedding=c.vocab_size * H,
        attention=attention,
        router=L * E * H,
        experts=L * E * one_expert,
        active_experts=L * k * one_expert,
        norms=(2 * L + 1) * H,
        lm_head=0 if c.tie_word_embeddings else H * c.vocab_size,
    )


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs per token (a multiply-add counts 2)."""

    dense_equivalent: int  # if every token ran all E experts (a dense model of the same size)
    active: int  # what a token actually costs with top-k routing

    @property
    def ratio(self) -> float:
        return self.active / self.dense_equivalent


def flops_per_token(config: MixtralConfig, context: int = 0) -> FlopCount:
    """2 x (weights a token multiplies), plus attention over `context` previous tokens.

    The embedding lookup is free (a gather); the LM head is a real matmul.
    """
    nonnegative_int("context", context)
    p = count_parameters(config)
    c = config
    attn_scores = 2 * 2 * c.num_hidden_layers * context * c.num_attention_heads * c.attention_head_dim  # QK^T and AV
    shared = 2 * (p.attention + p.router + (p.lm_head or p.embedding)) + attn_scores
    return FlopCount(dense_equivalent=shared + 2 * p.experts, active=shared + 2 * p.active_experts)

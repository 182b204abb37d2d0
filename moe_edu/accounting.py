"""Parameter and FLOP accounting: why Mixtral has 47B parameters but uses 13B per token.

Notebook 00 derives these counts term by term; tests check the totals against
models instantiated on the `meta` device.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MixtralConfig
from .validation import boolean, nonnegative_int


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
    always_on: int = 0  # shared experts, their gates, dense-FFN layers: every token runs them (0 for Mixtral)

    @property
    def total(self) -> int:
        return self.embedding + self.attention + self.router + self.experts + self.norms + self.lm_head + self.always_on

    @property
    def active(self) -> int:
        """Parameters a single token touches: everything but the unchosen experts."""
        return self.total - self.experts + self.active_experts

    def __str__(self) -> str:
        return f"total {self.total:,} ({self.total / 1e9:.1f}B), active {self.active:,} ({self.active / 1e9:.1f}B)"


@dataclass(frozen=True)
class ModelShape:
    """A MixtralConfig plus what other open MoEs add, so `count_parameters` can count them too.

    `config.intermediate_size` is the width of one *routed* expert. The extras, all off by default
    (then the count is Mixtral's exactly):
    - `shared_intermediate_size`: width of the always-on shared expert(s) of every MoE layer (Qwen-MoE,
      DeepSeekMoE: several shared experts of width w count as one of width n*w);
    - `shared_gate`: a sigmoid gate (H -> 1) on the shared expert (Qwen-MoE);
    - `attention_bias`: biases on q, k and v (Qwen);
    - `qk_norm`: an RMSNorm on q and on k (OLMoE);
    - `dense_layers`, `dense_intermediate_size`: the first layers run one dense SwiGLU FFN instead of a MoE.
    """

    config: MixtralConfig
    shared_intermediate_size: int = 0
    shared_gate: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    dense_layers: int = 0
    dense_intermediate_size: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.config, MixtralConfig):
            raise TypeError(f"ModelShape.config must be a MixtralConfig, got {type(self.config).__name__}")
        nonnegative_int("ModelShape.shared_intermediate_size", self.shared_intermediate_size)
        nonnegative_int("ModelShape.dense_layers", self.dense_layers, maximum=self.config.num_hidden_layers)
        nonnegative_int("ModelShape.dense_intermediate_size", self.dense_intermediate_size)
        for name in ("shared_gate", "attention_bias", "qk_norm"):
            boolean(f"ModelShape.{name}", getattr(self, name))
        if self.shared_gate and not self.shared_intermediate_size:
            raise ValueError("ModelShape.shared_gate needs a shared expert (shared_intermediate_size > 0)")
        if self.dense_layers and not self.dense_intermediate_size:
            raise ValueError("ModelShape.dense_layers needs dense_intermediate_size > 0")

    @property
    def name(self) -> str:
        return self.config.name


def count_parameters(config: MixtralConfig | ModelShape) -> ParameterCount:
    """Every parameter of a `MixtralForCausalLM` built from `config`, by component (exact integers).

    A `ModelShape` adds shared experts, dense first layers, q/k/v biases and q/k norms (other open MoEs).
    """
    if isinstance(config, ModelShape):
        return _count_shape(config)
    if not isinstance(config, MixtralConfig):
        raise TypeError(f"count_parameters expects a MixtralConfig or a ModelShape, got {type(config).__name__}")
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


def _count_shape(shape: ModelShape) -> ParameterCount:
    """`count_parameters` for a `ModelShape`: Mixtral's count with the MoE layers and the extras adjusted."""
    c, base = shape.config, count_parameters(shape.config)
    H, L, E, D = c.hidden_size, c.num_hidden_layers, c.num_local_experts, shape.dense_layers
    q_out, kv_out = c.num_attention_heads * c.attention_head_dim, c.num_key_value_heads * c.attention_head_dim
    moe_layers, per_expert = L - D, 3 * H * c.intermediate_size
    attention = base.attention + L * (q_out + 2 * kv_out) * shape.attention_bias  # q, k, v biases
    norms = base.norms + L * (q_out + kv_out) * shape.qk_norm  # RMSNorm on q and on k
    shared = moe_layers * (3 * H * shape.shared_intermediate_size + H * shape.shared_gate)
    return ParameterCount(
        embedding=base.embedding,
        attention=attention,
        router=moe_layers * E * H,
        experts=moe_layers * E * per_expert,
        active_experts=moe_layers * c.num_experts_per_tok * per_expert,
        norms=norms,
        lm_head=base.lm_head,
        always_on=shared + D * 3 * H * shape.dense_intermediate_size,
    )


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs per token (a multiply-add counts 2)."""

    dense_equivalent: int  # if every token ran all E experts (a dense model of the same size)
    active: int  # what a token actually costs with top-k routing

    @property
    def ratio(self) -> float:
        return self.active / self.dense_equivalent


def flops_per_token(config: MixtralConfig | ModelShape, context: int = 0) -> FlopCount:
    """2 x (weights a token multiplies), plus attention over `context` previous tokens.

    The embedding lookup is free (a gather); the LM head is a real matmul.
    """
    nonnegative_int("context", context)
    p = count_parameters(config)
    c = config.config if isinstance(config, ModelShape) else config
    attn_scores = 2 * 2 * c.num_hidden_layers * context * c.num_attention_heads * c.attention_head_dim  # QK^T and AV
    shared = 2 * (p.attention + p.router + p.always_on + (p.lm_head or p.embedding)) + attn_scores
    return FlopCount(dense_equivalent=shared + 2 * p.experts, active=shared + 2 * p.active_experts)

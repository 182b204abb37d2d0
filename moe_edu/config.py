"""The Mixtral configuration: one documented dataclass, with transformers' field names.

Field names match `transformers.MixtralConfig`, so a `config.json` written by
transformers maps onto this class one to one (see `from_dict`). Validation runs on
construction and names the offending field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .validation import (
    boolean,
    finite_float,
    nonnegative_float,
    optional_positive_int,
    positive_float,
    positive_int,
    probability,
    token_id,
)


@dataclass(frozen=True)
class MixtralConfig:
    # --- vocabulary and width -------------------------------------------------
    vocab_size: int = 32000  # Mixtral's SentencePiece vocabulary
    hidden_size: int = 4096  # d_model: width of the residual stream
    intermediate_size: int = 14336  # width inside each SwiGLU expert (3.5 x hidden)
    # --- depth and attention ---------------------------------------------------
    num_hidden_layers: int = 32  # decoder blocks; every block's FFN is a sparse MoE
    num_attention_heads: int = 32  # query heads
    num_key_value_heads: int = 8  # grouped-query attention: 4 query heads share one K/V head
    head_dim: int | None = None  # None -> hidden_size // num_attention_heads
    max_position_embeddings: int = 32768  # context length the model was trained for
    rope_theta: float = 1e6  # rotary base; Mixtral uses 1e6 for its long context
    rms_norm_eps: float = 1e-5  # epsilon inside RMSNorm
    sliding_window: int | None = None  # Mixtral v0.1 attends to the full context
    attention_dropout: float = 0.0
    # --- the sparse mixture of experts -----------------------------------------
    num_local_experts: int = 8  # E: experts per MoE layer
    num_experts_per_tok: int = 2  # k: experts each token is routed to
    router_aux_loss_coef: float = 0.001  # weight of the load-balancing loss in training
    router_z_loss_coef: float = 0.0  # weight of the ST-MoE router z-loss (0 = off, as in Mixtral)
    router_jitter_noise: float = 0.0  # multiplicative input noise in training (transformers' option)
    # --- the rest ----------------------------------------------------------------
    hidden_act: str = "silu"  # SwiGLU's gate activation
    initializer_range: float = 0.02  # std of the normal init of every weight
    tie_word_embeddings: bool = False  # Mixtral keeps lm_head separate from the embedding
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    name: str = field(default="custom", compare=False)  # a label for printing; not a model field

    def __post_init__(self) -> None:
        f = "MixtralConfig."
        positive = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "num_local_experts",
            "num_experts_per_tok",
        ]
        for name in positive:
            positive_int(f + name, getattr(self, name))
        k, e = self.num_experts_per_tok, self.num_local_experts
        if k > e:
            raise ValueError(
                f"MixtralConfig.num_experts_per_tok (k={k}) must be between 1 and num_local_experts (E={e})"
            )
        optional_positive_int(f + "head_dim", self.head_dim)
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"MixtralConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads}) unless head_dim is given"
            )
        if self.attention_head_dim % 2:
            raise ValueError(
                f"MixtralConfig.head_dim must be even for rotary embeddings, got {self.attention_head_dim}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"MixtralConfig.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        optional_positive_int(f + "sliding_window", self.sliding_window)
        for name in ("rope_theta", "rms_norm_eps", "initializer_range"):
            positive_float(f + name, getattr(self, name))
        for name in ("router_aux_loss_coef", "router_z_loss_coef"):
            nonnegative_float(f + name, getattr(self, name))
        probability(f + "attention_dropout", self.attention_dropout)
        finite_float(f + "router_jitter_noise", self.router_jitter_noise, ge=0, lt=1)
        if self.hidden_act != "silu":
            raise ValueError(f"MixtralConfig.hidden_act must be 'silu' (SwiGLU), got {self.hidden_act!r}")
        boolean(f + "tie_word_embeddings", self.tie_word_embeddings)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            token_id(f + name, getattr(self, name), self.vocab_size)
        if not isinstance(self.name, str):
            raise ValueError(f"MixtralConfig.name must be a str, got {self.name!r}")

    # ------------------------------------------------------------------ derived
    @property
    def attention_head_dim(self) -> int:
        """The per-head width actually used."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    def replace(self, **changes: Any) -> MixtralConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def scaled(
        self,
        hidden_size: int,
        num_hidden_layers: int | None = None,
        head_dim: int | None = None,
        **overrides: Any,
    ) -> MixtralConfig:
        """Derive a config of another width that keeps Mixtral's ratios.

        Kept: intermediate/hidden (3.5 for Mixtral), query heads per K/V head (4),
        the expert count E and top-k. Heads are `hidden_size // head_dim` (head_dim
        defaults to this config's, capped so that there is at least one K/V group).
        """
        group = self.num_attention_heads // self.num_key_value_heads
        positive_int("scaled: hidden_size", hidden_size)
        optional_positive_int("scaled: num_hidden_layers", num_hidden_layers)
        optional_positive_int("scaled: head_dim", head_dim)
        hd = head_dim if head_dim is not None else min(self.attention_head_dim, max(2, hidden_size // group))
        heads = max(group, (hidden_size // hd) // group * group)
        values = {
            "hidden_size": hidden_size,
            "intermediate_size": round(hidden_size * self.intermediate_size / self.hidden_size),
            "num_attention_heads": heads,
            "num_key_value_heads": heads // group,
            "head_dim": None if heads * hd == hidden_size else hd,
            "num_hidden_layers": self.num_hidden_layers if num_hidden_layers is None else num_hidden_layers,
            "name": f"{self.name}-scaled-{hidden_size}",
        }
        values.update(overrides)
        return self.replace(**values)

    # ---------------------------------------------------------------- interop
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("name")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = False) -> MixtralConfig:
        """Build from a transformers-style dict (e.g. `config.json`).

        Keys transformers writes that do not change the computation (`architectures`,
        `torch_dtype`, ...) are ignored; with `strict=True` any unknown key raises.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a Mixtral config must be a JSON object (dict), got {type(d).__name__}")
        d = dict(d)
        rope = d.pop("rope_parameters", None) or d.pop("rope_scaling", None)
        if rope is not None and not isinstance(rope, dict):
            raise ValueError(f"MixtralConfig: rope_parameters must be an object, got {rope!r}")
        if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in d:
            d["rope_theta"] = rope["rope_theta"]
        if isinstance(d.get("eos_token_id"), list):  # transformers allows several; we stop on the first
            if not d["eos_token_id"]:
                raise ValueError("MixtralConfig.eos_token_id must be an int or a non-empty list, got []")
            d["eos_token_id"] = d["eos_token_id"][0]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if strict and unknown:
            raise ValueError(f"unknown MixtralConfig fields: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> MixtralConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as err:  # also a 5000-digit int, arrays nested 100k deep
            raise ValueError(f"cannot read a Mixtral config from {path}: {err}") from err
        return cls.from_dict(data)

    def to_hf(self):
        """The equivalent `transformers.MixtralConfig` (needs transformers)."""
        from transformers import MixtralConfig as HFConfig

        d = self.to_dict()
        d.pop("router_z_loss_coef")
        theta = d.pop("rope_theta")
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
        return HFConfig(**d)

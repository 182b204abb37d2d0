"""Router outputs for one text: which expert each token goes to, at every layer.

The model side of the routing explorer (notebook 06). Works with any model that has
`.config` (`num_local_experts`, `num_experts_per_tok`, `max_position_embeddings`) and
`forward(input_ids, output_router_logits=True).router_logits` (one `(B*T, E)` tensor per
layer, transformers' convention), and any tokenizer with `encode(str) -> list[int]` and
`decode(list[int]) -> str`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from moe_edu.analysis import load_share
from moe_edu.course.widgets.text_spans import TextSpan, text_spans
from moe_edu.routing import softmax_topk


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class RoutingTrace:
    """Router logits of every layer for one tokenised text (batch of one)."""

    text: str
    token_ids: list[int]
    tokens: list[str]  # decode([id]) of each token (a byte of a character decodes to U+FFFD alone)
    logits: torch.Tensor  # (L, T, E) fp32 on the CPU
    num_input_tokens: int  # tokens the text had before truncation
    top_k: int  # the model's k (num_experts_per_tok)
    spans: tuple[TextSpan, ...] = ()  # whole characters as typed; default: one span per token

    def __post_init__(self) -> None:
        if not self.spans:
            object.__setattr__(self, "spans", tuple(TextSpan(t, i, i + 1) for i, t in enumerate(self.tokens)))
        covered = [t for s in self.spans for t in range(s.start, s.stop)]
        if covered != list(range(len(self.token_ids))):
            raise ValueError("spans must cover every token once, in order")

    @property
    def span_of_token(self) -> list[int]:
        """The index of the span that holds each token: (T,)."""
        return [g for g, s in enumerate(self.spans) for _ in range(s.start, s.stop)]

    @property
    def num_layers(self) -> int:
        return self.logits.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.logits.shape[1]

    @property
    def num_experts(self) -> int:
        return self.logits.shape[2]

    @property
    def truncated(self) -> bool:
        return self.num_input_tokens > self.num_tokens

    @property
    def probs(self) -> torch.Tensor:
        """Router probabilities, softmax over all experts in fp32: (L, T, E) (computed once per trace)."""
        cache = self.__dict__.setdefault("_cache", {})
        if "probs" not in cache:
            cache["probs"] = torch.softmax(self.logits, dim=-1)  # (L, T, E)
        return cache["probs"]

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be an int in [0, {self.num_layers}), got {layer!r}")
        return layer

    def check_k(self, k: int | None) -> int:
        k = self.top_k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_experts:
            raise ValueError(f"k must be an int in [1, num_experts={self.num_experts}], got {k!r}")
        return k

    def topk(self, layer: int, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Renormalised top-k `(weights, experts)`, both (T, k), exactly as the MoE block routes (computed once
        per layer and k: the explorer's views ask for the same routing many times per update)."""
        key = ("topk", self.check_layer(layer), self.check_k(k))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = softmax_topk(self.logits[key[1]], key[2])  # (T, k), (T, k)
        return cache[key]

    def first_choice(self, layer: int) -> torch.Tensor:
        """The first-choice expert of every token at `layer`: (T,)."""
        return self.topk(layer, 1)[1][:, 0]  # (T,)

    def first_choices(self) -> torch.Tensor:
        """First-choice experts at every layer: (L, T)."""
        return torch.stack([self.first_choice(i) for i in range(self.num_layers)])  # (L, T)

    def load(self, layer: int, k: int | None = None) -> torch.Tensor:
        """Share of the T*k routed slots that each expert receives at `layer`: (E,), sums to 1."""
        return load_share(self.topk(layer, k)[1], self.num_experts).float()  # (E,)


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def trace_routing(model: Any, tokenizer: Tokenizer, text: str, max_tokens: int | None = None) -> RoutingTrace:
    """Tokenise `text`, run the model once and keep every layer's router logits.

    Texts longer than `max_tokens` (default: the model's `max_position_embeddings`) are
    cut to their first `max_tokens` tokens; `RoutingTrace.truncated` says so.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: type a sentence to route")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: the tokenizer raised a raw TypeError
        raise ValueError(f"text holds a character UTF-8 cannot encode (a lone surrogate) at {err.start}") from None
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_experts_per_tok"):
        raise TypeError("model must have a .config with num_experts_per_tok (a Mixtral-style config)")
    context = int(getattr(config, "max_position_embeddings", 0) or 0) or None
    limit = max_tokens if max_tokens is not None else context
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if context is not None and limit is not None:
        limit = min(limit, context)
    ids = [int(i) for i in tokenizer.encode(text)]
    if not ids:
        raise ValueError(f"text {text[:40]!r} produced no tokens")
    kept = ids[:limit] if limit is not None else ids
    input_ids = torch.tensor([kept], dtype=torch.long, device=_model_device(model))  # (1, T)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids, output_router_logits=True)
    finally:
        model.train(was_training)
    router_logits = getattr(out, "router_logits", None)
    if not router_logits:
        raise TypeError(
            "model output has no router_logits: forward(input_ids, output_router_logits=True) "
            "must return one (B*T, E) tensor per layer"
        )
    logits = torch.stack([r.detach().float().cpu().reshape(len(kept), -1) for r in router_logits])  # (L, T, E)
    return RoutingTrace(
        text=text,
        token_ids=kept,
        tokens=[tokenizer.decode([i]) for i in kept],
        logits=logits,
        num_input_tokens=len(ids),
        top_k=int(config.num_experts_per_tok),
        spans=tuple(text_spans(tokenizer, kept)),
    )

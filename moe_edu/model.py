"""The Mixtral decoder: embedding -> L x (attention + sparse MoE) -> RMSNorm -> LM head.

Module names mirror transformers' `MixtralForCausalLM` (`model.layers.{i}.self_attn.q_proj`,
`model.layers.{i}.mlp.experts.gate_up_proj`, `lm_head`, ...), so its v5 state dict
loads as is; v4 and Mistral-native keys are converted (see `interop.model_to_v5`).
The model knows nothing about files: checkpoints are read and written by `pretrained`
(`from_pretrained`, `save_pretrained`) and `run_dir` (training runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, build_attention_mask
from .config import MixtralConfig
from .dispatch import Dispatch
from .generation import generate
from .layouts import model_from_v5, model_to_v5
from .loading import check_and_load
from .losses import load_balancing_loss, router_z_loss
from .moe_block import SparseMoeBlock
from .norm import RMSNorm
from .rope import RotaryEmbedding


@dataclass
class MoeModelOutput:
    """What `MixtralModel` returns (transformers' `MoeModelOutputWithPast`, same field names)."""

    last_hidden_state: torch.Tensor  # (B, T, H) after the final RMSNorm
    router_logits: tuple[torch.Tensor, ...]  # one (B*T, E) per layer
    past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # KV cache, one (k, v) per layer


@dataclass
class MoeCausalLMOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # cross-entropy + aux_coef * aux_loss + z_coef * z_loss
    aux_loss: torch.Tensor | None = None  # load balancing, = k when routing is uniform
    z_loss: torch.Tensor | None = None  # router z-loss
    router_logits: tuple[torch.Tensor, ...] | None = None  # one (B*T, E) per layer
    past_key_values: list | None = None  # KV cache, one (k, v) per layer


class DecoderLayer(nn.Module):
    def __init__(self, config: MixtralConfig, dispatch: str | Dispatch = "grouped") -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SparseMoeBlock(config, dispatch=dispatch)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, H) -> x (B, T, H), router_logits (B*T, E), this layer's (k, v) cache."""
        a, new_cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)  # (B, T, H)
        x = x + a  # (B, T, H)
        m, router_logits = self.mlp(self.post_attention_layernorm(x))  # (B, T, H), (B*T, E)
        return x + m, router_logits, new_cache


class MixtralModel(nn.Module):
    """The decoder without its head: token ids -> final hidden states (transformers' `MixtralModel`)."""

    def __init__(self, config: MixtralConfig, dispatch: str | Dispatch = "grouped") -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, dispatch) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.attention_head_dim, config.rope_theta)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        use_cache: bool = False,
    ) -> MoeModelOutput:
        """input_ids (B, T) -> last_hidden_state (B, T, H), router_logits (one (B*T, E) per layer), the cache.

        `attention_mask` (B, past + T): 1 = a real token, 0 = padding; `past_key_values` from a previous call.
        """
        cfg = self.config
        check_ids(input_ids, None, cfg.vocab_size)
        B, T = input_ids.shape
        past = 0 if not past_key_values else past_key_values[0][0].shape[2]
        if attention_mask is not None and tuple(attention_mask.shape) != (B, past + T):
            raise ValueError(
                f"attention_mask must have shape (batch, past + tokens) = {(B, past + T)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        if past + T > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence of {past + T} tokens exceeds max_position_embeddings={cfg.max_position_embeddings}"
            )
        x = self.embed_tokens(input_ids)  # (B, T, H)
        positions = torch.arange(past, past + T, device=input_ids.device)  # (T,)
        cos, sin = self.rotary_emb(positions, x.dtype)  # (T, D), (T, D)
        mask = build_attention_mask(T, past, x.device, cfg.sliding_window, attention_mask)
        router_logits, new_cache = [], []
        for i, layer in enumerate(self.layers):
            x, logits, kv = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            router_logits.append(logits)  # (B*T, E)
            new_cache.append(kv)
        return MoeModelOutput(self.norm(x), tuple(router_logits), new_cache if use_cache else None)


class MixtralForCausalLM(nn.Module):
    """`MixtralModel` + the LM head (and the losses when labels are given)."""

    def __init__(self, config: MixtralConfig, *, dispatch: str | Dispatch = "grouped") -> None:
        super().__init__()
        self.model = MixtralModel(config, dispatch)  # holds the config: `self.config` is the same object
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    @property
    def config(self) -> MixtralConfig:
        """The model's config, shared with `self.model` (as in transformers): setting it, e.g. to a config with
        another `sliding_window`, changes what the decoder does."""
        return self.model.config

    @config.setter
    def config(self, value: MixtralConfig) -> None:
        self.model.config = value

    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) weights, ones for norms (transformers' init)."""
        for name, p in self.named_parameters():
            if p.device.type == "meta":
                continue
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, mean=0.0, std=self.config.initializer_range)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_router_logits: bool | None = None,
        past_key_values: list | None = None,
        use_cache: bool = False,
    ) -> MoeCausalLMOutput:
        """input_ids (B, T) -> logits (B, T, V); losses when `labels` (B, T) are given (-100 = ignore).

        `output_router_logits` defaults to True when labels are given (the aux loss needs them).
        """
        cfg = self.config
        if labels is not None:
            check_labels(labels, input_ids, self.config.vocab_size)
        if output_router_logits is None:
            output_router_logits = labels is not None
        hidden = self.model(input_ids, attention_mask, past_key_values, use_cache)
        logits = self.lm_head(hidden.last_hidden_state)  # (B, T, V)
        past = 0 if not past_key_values else past_key_values[0][0].shape[2]
        out = MoeCausalLMOutput(logits=logits, past_key_values=hidden.past_key_values)
        if output_router_logits:
            out.router_logits = hidden.router_logits
            token_mask = attention_mask if past == 0 else None
            out.aux_loss = load_balancing_loss(
                out.router_logits, cfg.num_local_experts, cfg.num_experts_per_tok, token_mask
            )
            out.z_loss = router_z_loss(out.router_logits)
        if labels is not None:
            shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]  # (B, T): token t predicts t+1
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), shifted.reshape(-1).long(), ignore_index=-100
            )
            if output_router_logits:
                loss = loss + cfg.router_aux_loss_coef * out.aux_loss
                if cfg.router_z_loss_coef:
                    loss = loss + cfg.router_z_loss_coef * out.z_loss
            out.loss = loss
        return out

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, **kwargs) -> torch.Tensor:
        """Greedy (default) or sampled continuation with a KV cache; see `generation.generate`."""
        return generate(self, input_ids, max_new_tokens, **kwargs)

    def load_hf_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> MixtralForCausalLM:
        """Load a whole transformers (v5 or v4) or Mistral-native state dict; strict, all-or-nothing."""
        sd = model_to_v5(state_dict, self.config)
        if self.config.tie_word_embeddings and "lm_head.weight" not in sd and "model.embed_tokens.weight" in sd:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        check_and_load(self, sd, f"a MixtralForCausalLM ({self.config.name}, {self.config.num_hidden_layers} layers)")
        return self

    def hf_state_dict(self, layout: str = "v5") -> dict[str, torch.Tensor]:
        """This model's weights with transformers v5 / v4 keys, or Mistral-native ones ("mistral")."""
        return model_from_v5({k: v.detach().clone() for k, v in self.state_dict().items()}, self.config, layout)


def check_ids(input_ids: torch.Tensor, labels: torch.Tensor | None, vocab_size: int) -> None:
    """Token ids must be a (batch, tokens) integer tensor inside the vocabulary; labels alike or -100."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.long, torch.int32):
        raise TypeError(
            f"input_ids must be an integer tensor of dtype torch.long (or torch.int32), got {input_ids.dtype}"
        )
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, tokens), got {tuple(input_ids.shape)}")
    if input_ids.numel():
        lo, hi = torch.stack(torch.aminmax(input_ids)).tolist()  # one host sync on a GPU
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"input_ids must lie in [0, vocab_size={vocab_size}), got values in [{lo}, {hi}]")
    if labels is not None:
        check_labels(labels, input_ids, vocab_size)


def check_labels(labels: torch.Tensor, input_ids: torch.Tensor, vocab_size: int | None = None) -> None:
    """Labels: an integer tensor shaped like input_ids (-100 = ignore)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.long, torch.int32):
        raise TypeError(
            f"labels must be an integer tensor of dtype torch.long (or torch.int32), "
            f"got {getattr(labels, 'dtype', type(labels).__name__)}"
        )
    if isinstance(input_ids, torch.Tensor) and labels.shape != input_ids.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
    if vocab_size is not None:
        targets = labels[:, 1:][labels[:, 1:] != -100]  # what the loss uses (token t predicts t+1)
        if not targets.numel() or int(targets.min()) < 0 or int(targets.max()) >= vocab_size:
            raise ValueError(
                f"labels[:, 1:] must hold at least one target in [0, vocab_size={vocab_size}) (-100: ignored)"
            )

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

from .attention import Attention, attention_mask
from .config import MixtralConfig
from .generation import generate
from .layouts import model_from_v5, model_to_v5
from .loading import check_and_load
from .losses import load_balancing_loss, router_z_loss
from .moe_block import SparseMoeBlock
from .norm import RMSNorm
from .rope import RotaryEmbedding


@dataclass
class MoeCausalLMOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # cross-entropy + aux_coef * aux_loss + z_coef * z_loss
    aux_loss: torch.Tensor | None = None  # load balancing, = k when routing is uniform
    z_loss: torch.Tensor | None = None  # router z-loss
    router_logits: tuple[torch.Tensor, ...] | None = None  # one (B*T, E) per layer
    past_key_values: list | None = None  # KV cache, one (k, v) per layer


class DecoderLayer(nn.Module):
    def __init__(self, config: MixtralConfig, dispatch: str = "grouped") -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SparseMoeBlock(config, dispatch=dispatch)

    def forward(self, x, cos, sin, mask, cache=None):
        a, new_cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)  # (B, T, H)
        x = x + a  # (B, T, H)
        m, router_logits = self.mlp(self.post_attention_layernorm(x))  # (B, T, H), (B*T, E)
        return x + m, router_logits, new_cache


class MixtralModel(nn.Module):
    def __init__(self, config: MixtralConfig, dispatch: str = "grouped") -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, dispatch) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.attention_head_dim, config.rope_theta)


class MixtralForCausalLM(nn.Module):
    def __init__(self, config: MixtralConfig, *, dispatch: str = "grouped") -> None:
        super().__init__()
        self.config = config
        self.model = MixtralModel(config, dispatch)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

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
        check_ids(input_ids, labels, cfg.vocab_size)
        if output_router_logits is None:
            output_router_logits = labels is not None
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
        x = self.model.embed_tokens(input_ids)  # (B, T, H)
        positions = torch.arange(past, past + T, device=input_ids.device)  # (T,)
        cos, sin = self.model.rotary_emb(positions, x.dtype)  # (T, D), (T, D)
        mask = attention_mask_for(T, past, x.device, cfg.sliding_window, attention_mask)
        router_logits, new_cache = [], []
        for i, layer in enumerate(self.model.layers):
            x, logits, kv = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            router_logits.append(logits)  # (B*T, E)
            new_cache.append(kv)
        logits = self.lm_head(self.model.norm(x))  # (B, T, V)
        out = MoeCausalLMOutput(logits=logits, past_key_values=new_cache if use_cache else None)
        if output_router_logits:
            out.router_logits = tuple(router_logits)
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
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.long, torch.int32):
            raise TypeError(
                f"labels must be an integer tensor of dtype torch.long (or torch.int32), "
                f"got {getattr(labels, 'dtype', type(labels).__name__)}"
            )
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
        targets = labels[:, 1:][labels[:, 1:] != -100]  # what the loss uses (token t predicts t+1)
        if not targets.numel() or int(targets.min()) < 0 or int(targets.max()) >= vocab_size:
            raise ValueError(
                f"labels[:, 1:] must hold at least one target in [0, vocab_size={vocab_size}) (-100: ignored)"
            )


attention_mask_for = attention_mask

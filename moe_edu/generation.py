"""Autoregressive generation with a KV cache: greedy, or sampling with temperature / top-k."""

from __future__ import annotations

import torch

from .validation import finite_float, nonnegative_int, optional_positive_int


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int = 32,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """input_ids (B, T) -> (B, T + n). temperature 0 = greedy; stops early when all rows hit eos.

    Non-finite logits (a diverged model) raise instead of silently emitting token 0; the
    model's train/eval mode is restored however the call ends.
    """
    nonnegative_int("max_new_tokens", max_new_tokens)
    finite_float("temperature", temperature, ge=0)
    optional_positive_int("top_k", top_k)
    if eos_token_id is not None:
        nonnegative_int("eos_token_id", eos_token_id, maximum=model.config.vocab_size - 1)
    limit = model.config.max_position_embeddings
    if input_ids.dim() == 2 and input_ids.shape[1] == 0:  # was an IndexError deep in the decode loop
        raise ValueError("generate: the prompt is empty (shape (B, 0)): give at least one token per row")
    if input_ids.dim() == 2 and input_ids.shape[1] + max_new_tokens > limit:
        raise ValueError(
            f"prompt + max_new_tokens = {input_ids.shape[1] + max_new_tokens} exceeds max_position_embeddings={limit}"
        )
    was_training = model.training
    model.eval()
    try:
        return _decode(model, input_ids, max_new_tokens, temperature, top_k, eos_token_id, generator)
    finally:
        model.train(was_training)


def _decode(model, input_ids, max_new_tokens, temperature, top_k, eos_token_id, generator) -> torch.Tensor:
    out, cache, step = input_ids, None, input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (B,)
    for i in range(max_new_tokens):
        res = model(step, past_key_values=cache, use_cache=True, output_router_logits=False)
        cache = res.past_key_values
        logits = res.logits[:, -1, :].float()  # (B, V)
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(
                f"generate: the model produced non-finite logits at new token {i} "
                "(NaN/inf weights or activations); no token can be chosen"
            )
        if temperature == 0:
            nxt = logits.argmax(-1)  # (B,)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]  # (B,)
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
            done = done | (nxt == eos_token_id)
        step = nxt[:, None]  # (B, 1)
        out = torch.cat([out, step], dim=1)  # (B, T+i+1)
        if eos_token_id is not None and bool(done.all()):
            break
    return out

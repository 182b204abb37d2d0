"""Routing statistics from the Mixtral paper's §5: expert load per domain, consecutive-token repetition.

"Routing analysis" (Jiang et al., 2024, §5) asks whether experts specialise by topic.
It measures (Fig. 7) the share of tokens each expert receives per domain and layer, and
(Table 5) how often two consecutive tokens get the same first-choice expert, or share
at least one of their top-2 experts, against what uniform random routing would give:

    first choice:  1 / E                      (8 experts: 12.5 %)
    top-k overlap: 1 - C(E-k, k) / C(E, k)     (8 experts, top-2: 1 - 15/28 = 46.4 %)

Notebook 08 runs all of this on the shipped tiny model; the exercise `ex08` re-derives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from math import comb

import torch


# ------------------------------------------------------------------ baselines
def random_first_choice_rate(num_experts: int) -> float:
    """Chance that two tokens routed uniformly at random share their first-choice expert: 1/E."""
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    return 1.0 / num_experts


def random_topk_overlap_rate(num_experts: int, top_k: int) -> float:
    """Chance that two uniformly random k-subsets of E experts share at least one: 1 - C(E-k,k)/C(E,k)."""
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
    return 1.0 - comb(num_experts - top_k, top_k) / comb(num_experts, top_k)


# ------------------------------------------------------------ per-sequence stats
def _check_chosen(chosen: torch.Tensor) -> None:
    if not isinstance(chosen, torch.Tensor) or chosen.dim() != 2 or chosen.is_floating_point():
        raise ValueError(
            f"chosen must be an integer tensor of shape (tokens, k) ordered by expert rank, "
            f"got {getattr(chosen, 'shape', type(chosen).__name__)}"
        )


def repetition_counts(chosen: torch.Tensor) -> tuple[int, int, int]:
    """(first-choice repeats, top-k overlaps, consecutive pairs) of one sequence's routing.

    chosen: (T, k) expert ids, column 0 the first choice. Pair t is (t-1, t).
    """
    _check_chosen(chosen)
    if chosen.shape[0] < 2:
        return 0, 0, 0
    prev, cur = chosen[:-1], chosen[1:]  # (T-1, k), (T-1, k)
    first = int((prev[:, 0] == cur[:, 0]).sum())
    overlap = int((prev[:, :, None] == cur[:, None, :]).any(-1).any(-1).sum())  # (T-1,) any shared expert
    return first, overlap, chosen.shape[0] - 1


def repetition_rates(sequences: Iterable[torch.Tensor]) -> tuple[float, float]:
    """(first-choice rate, top-k overlap rate), pooled over sequences; pairs never cross sequences."""
    first = overlap = pairs = 0
    for chosen in sequences:
        f, o, p = repetition_counts(chosen)
        first, overlap, pairs = first + f, overlap + o, pairs + p
    if pairs == 0:
        raise ValueError("repetition_rates needs at least one sequence of two or more tokens")
    return first / pairs, overlap / pairs


def load_share(chosen: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Share of the (token, slot) assignments that went to each expert: (..., k) ids -> (E,), sums to 1."""
    flat = chosen.reshape(-1)
    if flat.numel() == 0:
        raise ValueError("load_share needs at least one assignment")
    if int(flat.min()) < 0 or int(flat.max()) >= num_experts:
        raise ValueError(f"expert ids must lie in [0, num_experts={num_experts})")
    return torch.bincount(flat, minlength=num_experts).double() / flat.numel()  # (E,)


def load_imbalance(load: torch.Tensor) -> float:
    """max / mean of an expert-load vector (E,) or mean over layers of (L, E): 1 = balanced, E = collapsed."""
    load = load.double()
    if load.dim() == 1:
        load = load[None]  # (1, E)
    if load.dim() != 2:
        raise ValueError(f"load must be (E,) or (L, E), got {tuple(load.shape)}")
    return float((load.max(-1).values / load.mean(-1)).mean())


# ---------------------------------------------------------------- running the model
@torch.no_grad()
def route(model, input_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Top-k experts per layer for one token sequence: -> (L, T, k), column 0 the first choice."""
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=model.device).reshape(1, -1)  # (1, T)
    if ids.shape[1] == 0:
        raise ValueError("route needs at least one token")
    out = model(ids, output_router_logits=True)
    k = model.config.num_experts_per_tok
    logits = torch.stack(out.router_logits)  # (L, T, E)
    return torch.topk(logits.float(), k, dim=-1).indices.cpu()  # (L, T, k); softmax keeps the order


def route_domains(
    model, tokenizer, docs_by_domain: Mapping[str, Sequence], max_tokens: int = 2000, max_len: int | None = None
) -> dict[str, list[torch.Tensor]]:
    """Route up to `max_tokens` held-out tokens per domain, document by document.

    docs_by_domain: domain -> documents (objects with `.text`, or strings). Each document is
    cut to `max_len` tokens (default: the model's context). Returns domain -> list of (L, T, k).
    """
    max_len = max_len or model.config.max_position_embeddings
    routed: dict[str, list[torch.Tensor]] = {}
    for domain, docs in docs_by_domain.items():
        budget, routed[domain] = max_tokens, []
        for doc in docs:
            if budget <= 1:
                break
            ids = tokenizer.encode(getattr(doc, "text", doc))[: min(max_len, budget)]
            if len(ids) >= 2:
                routed[domain].append(route(model, ids))
                budget -= len(ids)
        if not routed[domain]:
            raise ValueError(f"domain {domain!r} has no document of two or more tokens")
    return routed


def load_by_domain(routed: Mapping[str, list[torch.Tensor]], num_experts: int) -> dict[str, torch.Tensor]:
    """domain -> (L, E) share of assignments per layer and expert (each row sums to 1)."""
    result = {}
    for domain, seqs in routed.items():
        layers = seqs[0].shape[0]
        result[domain] = torch.stack(
            [load_share(torch.cat([s[l] for s in seqs]), num_experts) for l in range(layers)]
        )  # (L, E)
    return result


def repetition_by_domain(routed: Mapping[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """domain -> (L, 2): per layer, (first-choice rate, top-k overlap rate) of consecutive tokens."""
    result = {}
    for domain, seqs in routed.items():
        layers = seqs[0].shape[0]
        result[domain] = torch.tensor(
            [repetition_rates(s[l] for s in seqs) for l in range(layers)], dtype=torch.float64
        )  # (L, 2)
    return result


def routing_load(router_logits: Sequence[torch.Tensor], top_k: int) -> torch.Tensor:
    """(L, E) share of assignments per layer from one forward pass's router logits (L x (T, E))."""
    logits = torch.stack([t.detach().float() for t in router_logits])  # (L, T, E)
    E = logits.shape[-1]
    chosen = torch.topk(logits, top_k, dim=-1).indices  # (L, T, k)
    return torch.stack([load_share(c, E) for c in chosen])  # (L, E)

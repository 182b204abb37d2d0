"""Caching experts: which experts to keep on the accelerator when they do not all fit.

Decoding one token runs k of E experts per layer. If only C < E experts per layer fit in fast
memory, the others are fetched on demand (over PCIe from CPU RAM, Eliseev & Mazur 2023,
arXiv 2312.17238). Two ideas make the fetches rarer:

* an **LRU cache** per layer: consecutive tokens often reuse experts (the locality of the
  paper's Table 5, notebook 08), so the least recently used expert is the one to evict;
* **speculative prefetch**: apply layer l+1's router to layer l's output (the residual stream
  changes slowly) to guess layer l+1's experts, and start loading them early.

`routing_trace` records, for each token, the experts each layer chose and the guess for it;
`simulate_cache` replays a trace through LRU caches and counts hits, loads and prefetches;
`random_trace` is its no-locality baseline (uniform routing: a cache of C experts hits C / E).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from ..validation import nonnegative_int


class LRUCache:
    """A fixed number of slots; `get` loads on a miss and evicts the least recently used entry."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"LRUCache: capacity must be an int >= 0, got {capacity!r}")
        self.capacity = capacity
        self.entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: Hashable, value=None) -> None:
        """Insert (or refresh) `key` as most recently used, evicting the oldest entry if full."""
        if self.capacity == 0:
            return
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def get(self, key: Hashable, load: Callable[[], object] = lambda: None):
        """The cached value (a hit), or `load()` stored as most recently used (a miss)."""
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        value = load()
        self.put(key, value)
        return value


@dataclass(frozen=True)
class RoutingTrace:
    """Experts chosen per token and layer, in token order, and the speculative guesses for them."""

    chosen: torch.Tensor  # (T, L, k) expert ids
    guess: torch.Tensor  # (T, L, k) layer l's guess from layer l-1's output; row l=0 is -1 (no guess)
    doc_starts: list[int]  # index of each document's first token

    def shuffled(self, seed: int = 0) -> RoutingTrace:
        """The same routing decisions in a random token order: locality destroyed, load unchanged."""
        perm = torch.randperm(self.chosen.shape[0], generator=torch.Generator().manual_seed(seed))  # (T,)
        return RoutingTrace(self.chosen[perm], self.guess[perm], [0])


@torch.no_grad()
def routing_trace(model, token_ids: Sequence[Sequence[int]]) -> RoutingTrace:
    """Route documents through a `MixtralForCausalLM`; guess layer l from layer l-1's output.

    The guess applies layer l's own post-attention RMSNorm and router to the residual stream
    *before* layer l's attention: what a server knows while layer l-1's experts still run.
    """
    layers = model.model.layers
    k = model.config.num_experts_per_tok
    chosen, guess, starts, n = [], [], [], 0
    for ids in token_ids:
        outputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda m, i, o, out=outputs: out.append(o[0])) for layer in layers]
        try:
            out = model(torch.as_tensor(ids, device=model.device).reshape(1, -1), output_router_logits=True)
        finally:
            for h in hooks:
                h.remove()
        real = torch.stack([torch.topk(lg.float(), k, dim=-1).indices for lg in out.router_logits], 1)  # (T, L, k)
        g = torch.full_like(real, -1)  # (T, L, k)
        for l in range(1, len(layers)):
            h = layers[l].post_attention_layernorm(outputs[l - 1][0])  # (T, H) layer l-1's output, normalised
            logits = layers[l].mlp.gate(h).logits  # (T, E)
            g[:, l] = torch.topk(logits.float(), k, dim=-1).indices  # (T, k)
        chosen.append(real.cpu())
        guess.append(g.cpu())
        starts.append(n)
        n += real.shape[0]
    return RoutingTrace(torch.cat(chosen), torch.cat(guess), starts)


@dataclass(frozen=True)
class CacheStats:
    """What a replay of a trace through per-layer LRU caches of `capacity` experts cost."""

    capacity: int
    hits: torch.Tensor  # (L,) demanded experts found in the cache
    accesses: torch.Tensor  # (L,) experts demanded (tokens x k)
    prefetched: torch.Tensor  # (L,) experts loaded speculatively (not already cached)
    tokens: int

    @property
    def hit_rate_per_layer(self) -> torch.Tensor:
        return self.hits.double() / self.accesses  # (L,)

    @property
    def hit_rate(self) -> float:
        return float(self.hits.sum() / self.accesses.sum())

    @property
    def loads_per_token(self) -> float:
        """Experts moved into fast memory per token, all layers: demand misses + prefetches."""
        return float((self.accesses - self.hits + self.prefetched).sum()) / self.tokens


def simulate_cache(trace: RoutingTrace, capacity: int, *, prefetch: bool = False) -> CacheStats:
    """Replay the trace token by token through one LRU cache of `capacity` experts per layer.

    Token-aware, as a server is: a token's k experts are all needed for this layer, so its
    cached experts are looked up (and refreshed) first and its misses then evict the least
    recently used expert *this token does not need* — never one it still needs (only when
    capacity < k must it evict one of its own, already used). With `prefetch`, the guessed
    experts of layer l are loaded (as most recently used) before layer l's real experts are
    known: a right guess turns a miss into a hit, a wrong one costs a load.
    """
    T, L, k = trace.chosen.shape
    nonnegative_int("capacity", capacity)  # True, 1.5 and None are not cache sizes
    if T == 0:
        raise ValueError("simulate_cache: the trace holds no tokens")
    caches: list[list[int]] = [[] for _ in range(L)]  # per layer, least recently used first (LRUCache, inlined)
    hits, prefetched = [0] * L, [0] * L
    chosen, guess = trace.chosen.tolist(), trace.guess.tolist()
    for t in range(T):
        for l in range(L):
            cache = caches[l]
            if prefetch and l > 0:
                for e in guess[t][l][:capacity]:
                    if e in cache:
                        cache.remove(e)
                    else:
                        prefetched[l] += 1
                    cache.append(e)
                    if len(cache) > capacity:
                        del cache[0]
            need = chosen[t][l]
            misses = []
            for e in need:  # hits first: they become most recently used, out of eviction's way
                if e in cache:
                    hits[l] += 1
                    cache.remove(e)
                    cache.append(e)
                else:
                    misses.append(e)
            for e in misses:
                cache.append(e)
                if len(cache) > capacity:
                    del cache[0]  # the LRU entry; a needed one only when capacity < k
    return CacheStats(capacity, torch.tensor(hits), torch.full((L,), T * k), torch.tensor(prefetched), T)


def random_trace(tokens: int, layers: int, num_experts: int, k: int, seed: int = 0) -> RoutingTrace:
    """Uniform top-k routing with no locality and no skew: each token draws k distinct experts per layer.

    The no-locality baseline for `simulate_cache`: replayed through it, a cache of C >= 1 experts
    hits C / E of the demanded experts (the token-aware policy keeps any C experts, all equally
    likely to be drawn next).
    """
    g = torch.Generator().manual_seed(seed)
    chosen = torch.rand(tokens, layers, num_experts, generator=g).argsort(-1)[..., :k]  # (T, L, k) distinct
    return RoutingTrace(chosen, torch.full_like(chosen, -1), [0])


def prefetch_accuracy(trace: RoutingTrace) -> torch.Tensor:
    """(L,) share of each layer's chosen experts that the guess named (layer 0: NaN, never guessed)."""
    _T, _L, _k = trace.chosen.shape
    hit = (trace.chosen[:, :, :, None] == trace.guess[:, :, None, :]).any(-1)  # (T, L, k)
    acc = hit.double().mean(dim=(0, 2))  # (L,)
    acc[0] = float("nan")
    return acc

# %% [markdown]
# # Exercises 11 — Serving Mixtral
#
# Companion to **notebook 11 (Serving Mixtral)**. Three pieces of serving arithmetic and code:
# the size of the KV cache, the hit rate of an LRU expert cache, and an int8 round trip of an
# expert's weights.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import serving as ex

# %% [markdown]
# ## Exercise 11.1 — KV-cache bytes per token
#
# For every layer, attention keeps the key and the value of every past token, for each of the
# `num_kv_heads` K/V heads (grouped-query attention: Mixtral has 32 query heads but 8 K/V heads).
# Write `kv_bytes_per_token(num_layers, num_kv_heads, head_dim, bytes_per_value)` returning an int.


# %%
def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, bytes_per_value: int) -> int:
    """Bytes of K and V that one token adds to the cache, all layers."""
    ### BEGIN SOLUTION
    return 2 * num_layers * num_kv_heads * head_dim * bytes_per_value
    ### END SOLUTION


# %%
from moe_edu.course.exercises import serving as ex  # fetched afresh: grading calls the original checker

ex.check_kv_bytes_per_token(kv_bytes_per_token)

# %% [markdown]
# With your function (or the reference): Mixtral 8x7B in bf16 at 32,768 tokens, batch 1 and batch 8.

# %%
kv_fn = ex.use("kv_bytes_per_token", kv_bytes_per_token)
per_token = kv_fn(32, 8, 128, 2)
for batch in (1, 8):
    print(f"batch {batch}: {per_token * 32768 * batch / 2**30:.0f} GiB of KV cache")

# %% [markdown]
# ## Exercise 11.2 — an LRU expert cache
#
# A GPU holds `capacity` experts of a layer; a token needs some expert; if it is cached that is a
# hit, otherwise it is loaded (a miss) and the **least recently used** expert is evicted when the
# cache is full. Write `lru_hit_rate(trace, capacity)`: the share of the accesses in `trace` (a
# list of expert ids, in order) that hit, starting from an empty cache. A cache of capacity 0 holds
# nothing and never hits (the checker tries it: mind an eviction from an empty cache).


# %%
def lru_hit_rate(trace: list[int], capacity: int) -> float:
    """hits / accesses for an LRU cache of `capacity` entries replaying `trace`."""
    ### BEGIN SOLUTION
    cache: list[int] = []  # least recently used first
    hits = 0
    for e in trace:
        if e in cache:
            hits += 1
            cache.remove(e)
        cache.append(e)
        if len(cache) > capacity:
            cache.pop(0)
    return hits / len(trace)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import serving as ex  # fetched afresh: grading calls the original checker

ex.check_lru_hit_rate(lru_hit_rate)

# %% [markdown]
# Locality is what makes a cache work. The same accesses in a random order hit less:

# %%
lru_fn = ex.use("lru_hit_rate", lru_hit_rate)
local = [0, 0, 1, 0, 1, 1, 2, 2, 1, 2, 3, 3, 2, 3, 3, 4, 4, 3, 4, 4] * 3  # (60,) experts drift slowly
shuffled = [local[i] for i in torch.randperm(len(local), generator=torch.Generator().manual_seed(0)).tolist()]
print(f"capacity 2: in order {lru_fn(local, 2):.2f}, shuffled {lru_fn(shuffled, 2):.2f}")

# %% [markdown]
# ## Exercise 11.3 — an int8 round trip
#
# Weight-only int8 quantisation with one scale per output channel (row): `scale = max|row| / 127`,
# `codes = round(w / scale)` clamped to [-127, 127] as `torch.int8`, and back `codes * scale`.
# Write `int8_round_trip(w)` returning the dequantised float32 weights (same shape as `w`).
# Careful with a row of zeros: its scale is 0 and `0 / 0` is NaN. Guard the scale so that no NaN
# reaches the int8 cast (the checker watches that cast, since NaN happens to become code 0 on most CPUs
# and the result alone would look right).


# %%
def int8_round_trip(w: torch.Tensor) -> torch.Tensor:
    """w (out, in) -> dequantised symmetric per-row int8, float32."""
    ### BEGIN SOLUTION
    scale = w.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (out, 1)
    codes = torch.round(w.float() / scale).clamp(-127, 127).to(torch.int8)  # (out, in)
    return codes.float() * scale
    ### END SOLUTION


# %%
from moe_edu.course.exercises import serving as ex  # fetched afresh: grading calls the original checker

ex.check_int8_round_trip(int8_round_trip)

# %% [markdown]
# The error of a round trip is at most half a step, `scale / 2`, in every entry:

# %%
rt_fn = ex.use("int8_round_trip", int8_round_trip)
w = torch.randn(64, 256)  # (out, in)
step = w.abs().amax(1, keepdim=True) / 127  # (out, 1)
print("every error <= half a step:", bool(((rt_fn(w) - w).abs() <= step / 2 + 1e-7).all()))
print(f"bytes: fp32 {w.numel() * 4:,}, int8 codes + fp32 scales {w.numel() + w.shape[0] * 4:,}")

# %% [markdown]
# ## Open question 11.4 — which experts to keep
#
# A server can keep 4 of Mixtral's 8 experts per layer on the GPU. Routing is dropless top-2.
# Without locality (every token picks 2 random experts), what hit rate would an LRU cache of 4 get?
# What do consecutive-token repetition rates like the paper's Table 5 mean for it?

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** It depends on how the cache looks a token's experts up. A server needs both of them for
# the layer, so it looks both up before evicting anything (never evicting an expert the token still
# needs). With no locality the cache then holds 4 experts that are as likely as any others to be
# needed: each of the token's 2 experts is cached with probability 4/8, a hit rate of 50 % (notebook 11
# §4.2 measures 50.2 % on uniform random routing). Replayed one expert at a time, as your
# `lru_hit_rate` does, the token's first expert takes a slot the second can never use (the two differ):
# (4/8 + 3/7) / 2 = 13/28 = 46.4 % (notebook 11 measures 46.8 %). Repetition between neighbouring tokens
# (Table 5: at layer 15 the top-2 sets of consecutive tokens share an expert 61.6–67.0 % of the time,
# against 46 % at random) means the experts just used are more likely than average to be needed next —
# exactly what LRU keeps — so the hit rate rises above that baseline (notebook 11: 77 % at 4 of 8 on the
# shipped model's routing, against 50 %).
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# The KV cache grows linearly with the tokens (a fixed number of bytes each, set by the KV heads, not the
# query heads); an LRU cache turns routing locality into
# hits; int8 per-channel quantisation is a round trip with an error of at most half a step.

# %% [markdown]
# # Exercises 02 — Top-k selection
#
# Companion to **notebook 02 (Top-k selection)**. Every token keeps only its `k` most probable
# experts (Mixtral: `k = 2` of `E = 8`). You will build the selection mask and the renormalised
# top-k weights that Mixtral uses.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import topk as ex

# %% [markdown]
# ## Exercise 2.1 — the top-k mask
#
# Seed §2 (選擇專家): *only the top-k experts with the highest router scores are activated for a token.*
#
# Write `topk_mask(probs, k)`: for router probabilities `(T, E)` return a **bool** tensor `(T, E)`
# that is `True` exactly at each token's `k` most probable experts.


# %%
def topk_mask(probs: torch.Tensor, k: int) -> torch.Tensor:
    """probs (T, E) -> bool (T, E), k True entries per row."""
    ### BEGIN SOLUTION
    chosen = torch.topk(probs, k, dim=-1).indices  # (T, k)
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, chosen, True)  # (T, E)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import topk as ex  # fetched afresh: grading calls the original checker

ex.check_topk_mask(topk_mask)

# %% [markdown]
# ## Exercise 2.2 — top-k with renormalised weights
#
# Mixtral (as `transformers` computes it): softmax over all `E` experts in float32, keep the top
# `k` probabilities, **renormalise** them to sum to 1.
#
# Write `topk_renormalised(logits, k)` returning `(weights, experts)`: `weights` float32 `(T, k)`
# with rows summing to 1 and `experts` int64 `(T, k)`. The order of the `k` slots does not matter.


# %%
def topk_renormalised(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (T, E) -> weights (T, k) float32, experts (T, k) int64."""
    ### BEGIN SOLUTION
    probs = torch.softmax(logits.float(), dim=-1)  # (T, E)
    top_p, top_i = torch.topk(probs, k, dim=-1)  # (T, k), (T, k)
    return top_p / top_p.sum(dim=-1, keepdim=True), top_i  # (T, k), (T, k)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import topk as ex  # fetched afresh: grading calls the original checker

ex.check_topk_renormalised(topk_renormalised)

# %% [markdown]
# ## How many experts does each token use?
#
# With your functions (or the reference), count how often each expert is chosen for 64 random
# tokens, for k = 1, 2, 3. The sum over experts is always `k x T`.

# %%
topk_mask_fn = ex.use("topk_mask", topk_mask)
topk_renormalised_fn = ex.use("topk_renormalised", topk_renormalised)

logits = torch.randn(64, 8)  # (T, E)
for k in (1, 2, 3):
    load = topk_mask_fn(torch.softmax(logits, -1), k).sum(0)  # (E,)
    weights, experts = topk_renormalised_fn(logits, k)  # (T, k), (T, k)
    print(
        f"k={k}: chosen per expert {load.tolist()} (sum {int(load.sum())}), "
        f"mean top-1 weight {weights.max(-1).values.mean():.3f}"
    )

# %% [markdown]
# ## Open question 2.3 — ties
#
# What does `torch.topk` do when two experts have exactly the same probability for a token?
# Why does it (almost) never matter in a trained float32 model, and when could it matter?

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** `torch.topk` still returns exactly `k` indices; which of the tied experts wins is
# an implementation detail (not guaranteed stable across devices or versions). With continuous
# float32 logits an exact tie has probability ~0, and when the tie is exact the tied experts
# receive the same weight, so the output changes only through the (different) expert functions.
# It can matter in low precision (bf16 rounds nearby logits to the same value), with
# zero-initialised or quantised routers, or on synthetic inputs such as all-equal logits —
# and it makes results differ between CPU and GPU.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Top-k turns a dense distribution over `E` experts into `k` weights that sum to 1.
# Next: **exercises 03**, sending each token only to its chosen experts.

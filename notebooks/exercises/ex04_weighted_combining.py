# %% [markdown]
# # Exercises 04 — Weighted combining
#
# Companion to **notebook 04 (Weighted combining)**. `transformers` computes
# softmax -> top-k -> renormalise; the paper and `mistral-inference` compute top-k -> softmax.
# You will write the second order, a checker that decides whether two routings agree, and the
# weighted sum of the expert outputs.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import combining as ex
from moe_edu.routing import softmax_topk

# %% [markdown]
# ## Exercise 4.1 — top-k, then softmax
#
# The paper (eq. 2): $G(x) = \text{Softmax}(\text{TopK}(x W_g))$ — keep the `k` largest
# **logits**, then a softmax over just those `k` (in float32). Write `topk_softmax(logits, k)`
# returning `(weights (T, k) float32, experts (T, k) int64)`.


# %%
def topk_softmax(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (T, E) -> weights (T, k) float32, experts (T, k) int64."""
    ### BEGIN SOLUTION
    top_l, top_i = torch.topk(logits, k, dim=-1)  # (T, k), (T, k)
    return torch.softmax(top_l.float(), dim=-1), top_i  # (T, k), (T, k)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import combining as ex  # fetched afresh: grading calls the original checker

ex.check_topk_softmax(topk_softmax)

# %% [markdown]
# ## Exercise 4.2 — the order-equivalence check
#
# To *test* that both orders agree we need a careful comparison: two routings
# `(weights, experts)` may list the same experts in a different slot order. Write
# `same_routing(a, b, atol=1e-6)` returning a bool (Python, numpy, or a one-element bool tensor: the checker reads its value): `True` exactly when, for every
# token, both pick the same set of experts **and** give each expert the same weight (within `atol`).


# %%
def same_routing(a, b, atol: float = 1e-6) -> bool:
    """a, b: (weights (T, k), experts (T, k)) -> True if equal up to the order of the k slots."""
    ### BEGIN SOLUTION
    (wa, ea), (wb, eb) = a, b
    ea_sorted, ia = torch.sort(ea, dim=-1)  # (T, k), (T, k)
    eb_sorted, ib = torch.sort(eb, dim=-1)  # (T, k), (T, k)
    wa, wb = torch.gather(wa, -1, ia), torch.gather(wb, -1, ib)  # (T, k), (T, k)
    return bool(torch.equal(ea_sorted, eb_sorted) and torch.allclose(wa.float(), wb.float(), rtol=0.0, atol=atol))
    ### END SOLUTION


# %%
from moe_edu.course.exercises import combining as ex  # fetched afresh: grading calls the original checker

ex.check_same_routing(same_routing)

# %% [markdown]
# ## Both orders agree
#
# Why: with $p_i = e^{l_i}/Z$, renormalising the top-k probabilities divides by
# $\sum_{j \in \text{top-k}} e^{l_j}/Z$, and $Z$ cancels — what remains is the softmax of the
# top-k logits. Check it on random logits for several `k` with your functions (or the reference):

# %%
topk_softmax_fn = ex.use("topk_softmax", topk_softmax)
same_routing_fn = ex.use("same_routing", same_routing)

logits = 3 * torch.randn(32, 8)  # (T, E)
for k in (1, 2, 4, 8):
    agree = same_routing_fn(softmax_topk(logits, k), topk_softmax_fn(logits, k))
    print(f"k={k}: softmax->top-k->renorm equals top-k->softmax: {agree}")

# %% [markdown]
# ## Exercise 4.3 — combine the expert outputs
#
# $y_t = \sum_j w_{t,j}\, o_{t,j}$. Write `combine(expert_outputs, weights)`: `expert_outputs`
# `(T, k, H)` holds each token's `k` expert outputs, `weights` `(T, k)` float32. Sum in float32 and
# return `(T, H)` in the dtype of `expert_outputs`.


# %%
def combine(expert_outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """expert_outputs (T, k, H), weights (T, k) -> y (T, H) in expert_outputs.dtype."""
    ### BEGIN SOLUTION
    y = (expert_outputs.float() * weights.float()[..., None]).sum(dim=1)  # (T, H)
    return y.to(expert_outputs.dtype)  # (T, H)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import combining as ex  # fetched afresh: grading calls the original checker

ex.check_combine(combine)

# %% [markdown]
# ## k = E is a dense mixture
#
# With `k = E` every expert is used and the renormalisation divides by 1: the layer becomes an
# ordinary (dense) softmax-weighted mixture of all experts.

# %%
combine_fn = ex.use("combine", combine)

config = moe_edu.PRESETS["tiny"]
block = moe_edu.SparseMoeBlock(config).eval()
x = torch.randn(5, config.hidden_size)  # (T, H)
E = config.num_local_experts
with torch.no_grad():
    logits = block.gate(x).logits  # (T, E)
    weights, chosen = softmax_topk(logits, E)  # (T, E), (T, E)
    every = block.experts.dense(x)  # (E, T, H)
    outs = every.permute(1, 0, 2).gather(1, chosen[..., None].expand(-1, -1, x.shape[1]))  # (T, E, H)
    y_sparse = combine_fn(outs, weights)  # (T, H)
    y_dense = torch.einsum("te,eth->th", torch.softmax(logits, -1), every)  # (T, H)
print("k = E equals the dense mixture:", bool(torch.allclose(y_sparse, y_dense, atol=1e-6)))

# %% [markdown]
# ## Open question 4.4 — why renormalise?
#
# What would change if Mixtral used the top-k *probabilities* without renormalising them
# (as Switch Transformer does with k = 1)? Think about the scale of the output and what the
# router's gradient can learn.

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** Without renormalisation the weights sum to less than 1 (the mass of the unchosen
# experts is lost), so the MoE output shrinks whenever the router is uncertain, and its scale
# varies token by token; the layer would have to compensate elsewhere. Renormalising makes the
# output a convex combination of the chosen experts regardless of the router's confidence.
# The trade-off: with renormalisation and k = 1 the weight is always exactly 1, so the router
# gets no gradient through the weights — which is why Switch (k = 1) keeps the raw probability,
# while with k = 2 the relative weights of the two experts still carry a gradient.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Both routing orders give identical weights; the output is a convex combination of `k` expert
# outputs, and k = E recovers a dense mixture. Next: **exercises 05**, the whole Mixtral block.

# %% [markdown]
# # Exercises 09 — The MoE family: capacity and expert choice
#
# Companion to **notebook 09 (Mixtral's SMoE vs the MoE family)**. Mixtral is *dropless*: every
# token reaches its two experts. You will write the two routing rules it is most often compared
# with: **Switch top-1 with a capacity factor and token dropping**, and **expert-choice routing**,
# where the experts pick their tokens.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.
#
# The experts are a `moe_edu.Experts` module; `experts.expert(e, rows)` runs expert `e` on
# `rows` of shape `(n, H)` and returns `(n, H)`.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import math

import torch

from moe_edu.course.exercises import family as ex

# %% [markdown]
# ## Exercise 9.1 — Switch routing with capacity
#
# Switch Transformer (Fedus et al. 2021) sends each token to **one** expert, the most probable one,
# and scales that expert's output by the probability `p` (no renormalisation). Each expert has a buffer of
#
# $$C = \left\lceil \text{capacity\_factor} \cdot \frac{N}{E} \right\rceil \quad (\text{at most } N)$$
#
# rows. Tokens arrive in order; a token whose expert already holds `C` tokens is **dropped**.
#
# Write `switch_route(logits, capacity_factor)`: `logits` `(N, E)` → `weight` `(N,)` float32 (the
# chosen expert's softmax probability), `expert` `(N,)` int64, `keep` `(N,)` bool (False = dropped).


# %%
def switch_route(logits: torch.Tensor, capacity_factor: float):
    """logits (N, E) -> weight (N,) fp32, expert (N,) int64, keep (N,) bool."""
    ### BEGIN SOLUTION
    N, E = logits.shape
    probs = torch.softmax(logits.float(), dim=-1)  # (N, E)
    weight, expert = probs.max(dim=-1)  # (N,), (N,)
    C = min(N, math.ceil(capacity_factor * N / E))
    used = [0] * E
    keep = torch.zeros(N, dtype=torch.bool)  # (N,)
    for t in range(N):  # first come, first served
        e = int(expert[t])
        if used[e] < C:
            used[e] += 1
            keep[t] = True
    return weight, expert, keep
    ### END SOLUTION


# %%
from moe_edu.course.exercises import family as ex  # fetched afresh: grading calls the original checker

ex.check_switch_route(switch_route)

# %% [markdown]
# ## Exercise 9.2 — the Switch layer, dropped tokens included
#
# Write `switch_moe(x, experts, logits, capacity_factor)` → `(y, dropped)`: `x` `(N, H)`,
# `y` `(N, H)` with `y[t] = weight[t] · expert_{e_t}(x[t])` for kept tokens and **0** for dropped
# ones, and `dropped` the number of dropped tokens (a Python int). Use your `switch_route`.


# %%
def switch_moe(x, experts, logits, capacity_factor):
    """x (N, H), logits (N, E) -> y (N, H), dropped (int)."""
    route = ex.use("switch_route", switch_route)
    ### BEGIN SOLUTION
    weight, expert, keep = route(logits, capacity_factor)  # (N,), (N,), (N,)
    y = torch.zeros_like(x)  # (N, H)
    for e in range(experts.num_experts):
        rows = torch.nonzero(keep & (expert == e)).flatten()  # (n_e,)
        if rows.numel():
            y[rows] = (weight[rows, None] * experts.expert(e, x[rows])).to(y.dtype)
    return y, int((~keep).sum())
    ### END SOLUTION


# %%
from moe_edu.course.exercises import family as ex  # fetched afresh: grading calls the original checker

ex.check_switch_moe(switch_moe)

# %% [markdown]
# A dropped token is not lost: the layer computes `x + MoE(x)`, so it moves on unchanged. Here
# is the price of a small buffer on one popular expert (your functions, or the reference):

# %%
switch_moe_fn = ex.use("switch_moe", switch_moe)
experts = ex.make_experts(4, 8, 12, seed=0)
x = torch.randn(32, 8)  # (N, H)
logits = torch.randn(32, 4) + torch.tensor([1.5, 0.0, 0.0, 0.0])  # (N, E): expert 0 is popular
for factor in (0.5, 1.0, 1.25, 2.0, 4.0):
    y, dropped = switch_moe_fn(x, experts, logits, factor)
    print(f"capacity factor {factor:4.2f}: dropped {dropped:2d} of 32 tokens")

# %% [markdown]
# ## Exercise 9.3 — expert-choice routing
#
# Expert choice (Zhou et al. 2022) turns the table around. The scores are still a softmax over the
# experts, `S = softmax(logits)` `(N, E)`, but now **each expert** takes the `C` tokens it scores
# highest, with `C = ceil(capacity_factor · N / E)`, **at most `N`** (an expert cannot take more
# tokens than there are): every expert gets exactly `C` tokens.
#
# Write `expert_choice_route(logits, capacity_factor)` → `gate` `(E, C)` float32 (the chosen
# scores, best first) and `token` `(E, C)` int64 (which tokens).


# %%
def expert_choice_route(logits: torch.Tensor, capacity_factor: float):
    """logits (N, E) -> gate (E, C) fp32, token (E, C) int64."""
    ### BEGIN SOLUTION
    N, E = logits.shape
    C = min(N, math.ceil(capacity_factor * N / E))
    scores = torch.softmax(logits.float(), dim=-1)  # (N, E): softmax over experts
    gate, token = torch.topk(scores.t(), C, dim=-1)  # (E, C), (E, C): each expert picks down its column
    return gate, token
    ### END SOLUTION


# %%
from moe_edu.course.exercises import family as ex  # fetched afresh: grading calls the original checker

ex.check_expert_choice_route(expert_choice_route)

# %% [markdown]
# ## Exercise 9.4 — the expert-choice layer
#
# Write `expert_choice_moe(x, experts, logits, capacity_factor)` → `(y, unrouted)`:
# `y[t] = Σ_e gate[e, j] · expert_e(x[t])` over every expert `e` that picked token `t` (at slot `j`),
# and `unrouted` the number of tokens no expert picked (a Python int).


# %%
def expert_choice_moe(x, experts, logits, capacity_factor):
    """x (N, H), logits (N, E) -> y (N, H), unrouted (int)."""
    route = ex.use("expert_choice_route", expert_choice_route)
    ### BEGIN SOLUTION
    gate, token = route(logits, capacity_factor)  # (E, C), (E, C)
    y = torch.zeros_like(x)  # (N, H)
    for e in range(experts.num_experts):
        y.index_add_(0, token[e], (gate[e, :, None] * experts.expert(e, x[token[e]])).to(y.dtype))
    picked = torch.bincount(token.reshape(-1), minlength=x.shape[0])  # (N,)
    return y, int((picked == 0).sum())
    ### END SOLUTION


# %%
from moe_edu.course.exercises import family as ex  # fetched afresh: grading calls the original checker

ex.check_expert_choice_moe(expert_choice_moe)

# %% [markdown]
# Perfect balance, but not every token is served — and a token may get more than one expert:

# %%
route_fn = ex.use("expert_choice_route", expert_choice_route)
moe_fn = ex.use("expert_choice_moe", expert_choice_moe)
gate, token = route_fn(logits, 2.0)
per_token = torch.bincount(token.reshape(-1), minlength=32)  # (N,)
print("tokens per expert:", [int(row.numel()) for row in token])
print(
    "experts per token: min",
    int(per_token.min()),
    "max",
    int(per_token.max()),
    "mean",
    f"{per_token.float().mean():.2f}",
)
print(
    "tokens with no expert at factor 2:",
    moe_fn(x, experts, logits, 2.0)[1],
    "| at factor 1:",
    moe_fn(x, experts, logits, 1.0)[1],
)

# %% [markdown]
# ## Open question 9.5 — why does Mixtral not use expert choice?
#
# Expert choice balances the load perfectly without any auxiliary loss. Give one reason why it is
# awkward for a decoder-only language model that generates text one token at a time.
#
# <!-- BEGIN SOLUTION -->
# **Answer.** An expert chooses among *all* tokens of the batch, so whether token `t` is served
# depends on the tokens after it: routing is not causal. At generation time there is one new token
# per step, so "each expert picks its top C of N tokens" is either meaningless (N = 1) or leaks the
# future during training. Token choice (Mixtral) decides from the token alone, so training and
# generation route identically; the load is balanced with a small auxiliary loss instead.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# - Capacity `C = ceil(capacity_factor · N / E)` (at most `N`) fixes every expert's buffer; overflow is dropped
#   and passes through on the residual only. Mixtral keeps no buffer and drops nothing.
# - Expert choice is top-C down the columns instead of top-k along the rows: exactly `C` tokens per
#   expert, some tokens with none.
# - The library versions: `moe_edu.variants.build_variant("switch", config)` and `"expert_choice"` (notebook 09).

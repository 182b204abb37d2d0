# %% [markdown]
# # Exercises 03 — Sparse activation
#
# Companion to **notebook 03 (Sparse activation)**. A token runs only its `k` chosen experts; the
# other `E - k` cost nothing. You will count each expert's load, write the readable dispatch loop,
# then the sorted/grouped dispatch that real implementations use.
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

import torch

from moe_edu.course.exercises import sparse as ex

# %% [markdown]
# ## Exercise 3.1 — tokens per expert
#
# Write `tokens_per_expert(chosen, num_experts)`: `chosen` `(T, k)` holds expert ids; return an
# int64 tensor `(E,)` counting the `(token, slot)` assignments of each expert (0 for unused experts).


# %%
def tokens_per_expert(chosen: torch.Tensor, num_experts: int) -> torch.Tensor:
    """chosen (T, k) -> counts (E,) int64."""
    ### BEGIN SOLUTION
    return torch.bincount(chosen.reshape(-1), minlength=num_experts)  # (E,)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import sparse as ex  # fetched afresh: grading calls the original checker

ex.check_tokens_per_expert(tokens_per_expert)

# %% [markdown]
# ## Exercise 3.2 — the dispatch loop
#
# $$y_t = \sum_{j=1}^{k} w_{t,j}\, \text{expert}_{c_{t,j}}(x_t)$$
#
# Write `loop_dispatch(x, experts, weights, chosen)` with one pass **per expert** over the tokens
# that chose it: `x` `(T, H)`, `weights` `(T, k)` float32, `chosen` `(T, k)` int64 -> `y` `(T, H)`
# in `x`'s dtype (start from `torch.zeros_like(x)`). The number of experts is
# `E = experts.num_experts`; `experts.expert(e, rows)` runs expert `e` on rows `(n, H)`.
# Skip experts nobody chose.


# %%
def loop_dispatch(x, experts, weights, chosen):
    """x (T, H), weights (T, k), chosen (T, k) -> y (T, H)."""
    ### BEGIN SOLUTION
    y = torch.zeros_like(x)  # (T, H)
    for e in range(experts.num_experts):
        token, slot = torch.where(chosen == e)  # (n_e,), (n_e,)
        if token.numel() == 0:
            continue
        out = experts.expert(e, x[token])  # (n_e, H)
        y.index_add_(0, token, (out * weights[token, slot, None]).to(y.dtype))  # (T, H)
    return y
    ### END SOLUTION


# %%
from moe_edu.course.exercises import sparse as ex  # fetched afresh: grading calls the original checker

ex.check_loop_dispatch(loop_dispatch)

# %% [markdown]
# ## Exercise 3.3 — sort the assignments by expert
#
# Fast implementations first **sort** the `T*k` assignments by expert so every expert reads one
# contiguous block of rows. Write `sort_by_expert(chosen, num_experts)` returning
# `(order, counts)`: `order` `(T*k,)` indexes the flattened `chosen` so that experts appear in
# increasing order — **stable**, tokens keep their order inside a group — and `counts` `(E,)`;
# both int64 (`E = num_experts`; an expert nobody chose still gets a count of 0).


# %%
def sort_by_expert(chosen: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """chosen (T, k) -> order (T*k,), counts (E,)."""
    ### BEGIN SOLUTION
    flat = chosen.reshape(-1)  # (T*k,)
    return torch.argsort(flat, stable=True), torch.bincount(flat, minlength=num_experts)  # (T*k,), (E,)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import sparse as ex  # fetched afresh: grading calls the original checker

ex.check_sort_by_expert(sort_by_expert)

# %% [markdown]
# ## Exercise 3.4 — the grouped dispatch
#
# Now use the sort: gather the rows in expert order, run each expert once on its contiguous
# group, weight the outputs, and add them back to their tokens. Same signature and same result
# as the loop. (Your `sort_by_expert` is used when it passes, else the reference.)

# %%
sort_by_expert_fn = ex.use("sort_by_expert", sort_by_expert)


def grouped_dispatch(x, experts, weights, chosen):
    """x (T, H), weights (T, k), chosen (T, k) -> y (T, H), one contiguous group per expert."""
    ### BEGIN SOLUTION
    k = chosen.shape[1]
    order, counts = sort_by_expert_fn(chosen, experts.num_experts)  # (T*k,), (E,)
    token = order // k  # (T*k,)
    groups = x[token].split(counts.tolist())  # E groups of (n_e, H)
    out = torch.cat([experts.expert(e, g) for e, g in enumerate(groups)])  # (T*k, H)
    out = out * weights.reshape(-1)[order, None]  # (T*k, H)
    return torch.zeros_like(x).index_add_(0, token, out.to(x.dtype))  # (T, H)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import sparse as ex  # fetched afresh: grading calls the original checker

ex.check_grouped_dispatch(grouped_dispatch)

# %% [markdown]
# ## Your dispatch inside a tiny Mixtral block
#
# The block's own router picks the experts; your dispatch (or the reference) combines them, and
# we compare with the library block's output and count the expert loads.

# %%
loop_fn = ex.use("loop_dispatch", loop_dispatch)
grouped_fn = ex.use("grouped_dispatch", grouped_dispatch)
count_fn = ex.use("tokens_per_expert", tokens_per_expert)

config = moe_edu.PRESETS["tiny"]
block = moe_edu.SparseMoeBlock(config).eval()
x = torch.randn(1, 16, config.hidden_size)  # (B, T, H)
with torch.no_grad():
    y_lib, _ = block(x)  # (B, T, H)
    routing = block.route(x)
    weights, chosen = routing.weights, routing.expert_ids  # (T, k), (T, k)
    y_loop = loop_fn(x[0], block.experts, weights, chosen)  # (T, H)
    y_grouped = grouped_fn(x[0], block.experts, weights, chosen)  # (T, H)
print("tokens per expert:", count_fn(chosen, config.num_local_experts).tolist())
print("loop == library block:", bool(torch.allclose(y_loop, y_lib[0], atol=1e-5)))
print("grouped == loop:", bool(torch.allclose(y_grouped, y_loop, atol=1e-5)))

# %% [markdown]
# ## Open question 3.5 — dropless vs capacity
#
# Our dispatch is *dropless*: an expert takes every token routed to it. Switch Transformer instead
# gives each expert a fixed *capacity* and drops the overflow. Name one advantage of each.

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** A fixed capacity gives every expert the same static tensor shape: easy batching,
# predictable memory, and balanced work across devices in expert parallelism — at the price of
# dropped tokens (they skip the layer through the residual) when routing is unbalanced.
# Dropless routing never loses a token, so quality does not depend on the balance of a batch and
# inference is exact, but loads vary, so it needs variable-size (grouped) GEMMs and a busy expert
# can become the straggler.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Dispatch = group tokens by expert, run each expert once on its group, add the weighted results
# back. Next: **exercises 04**, the weights of that sum.

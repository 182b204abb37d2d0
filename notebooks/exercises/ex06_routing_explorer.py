# %% [markdown]
# # Exercises 06 — The routing explorer, by hand
#
# Companion to **notebook 06 (The routing explorer)**. The explorer colours each token by its
# first-choice expert, counts each expert's load per layer and shows a token's top-k weights. You
# will compute those three views yourself from a routing trace, then run them on the tiny
# Mixtral shipped with `moe_edu`.
#
# **How these exercises work**
#
# - Replace each `raise NotImplementedError()` with your code and run the cell.
# - Run the checker cell below it: `✓` when your function agrees with the library on every test
#   case, `✗` with the first failing case otherwise, or `not attempted` while the stub is untouched.
# - Stuck? `ex.hint("first_choices")` prints the hints (`ex.hint("first_choices", 1)` only the first).
# - Cells after an exercise use your function when it passes, else the library's reference (and
#   say so in one line), so the notebook always runs top to bottom.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import routing_explorer as ex

# %% [markdown]
# ## A routing trace
#
# `moe_edu.trace_routing(model, tokenizer, text)` runs the model once and keeps every layer's
# router logits: `trace.logits` is a float32 tensor `(L, T, E)` — layers, tokens, experts.
# `trace.tokens` holds the tokens as text. All three exercises take such a logits tensor, and
# the checkers also pass **bfloat16** logits (what a bf16 model's router would give): stay in torch
# (numpy has no bf16) and compare in float32.

# %%
model, tokenizer = moe_edu.load_pretrained()
trace = moe_edu.trace_routing(model, tokenizer, "def add(a, b):\n    return a + b\n")
L, T, E = trace.logits.shape
k = model.config.num_experts_per_tok
print(f"logits (L, T, E) = {(L, T, E)}, k = {k}, dtype {trace.logits.dtype}")

# %% [markdown]
# ## Exercise 6.1 — first choices
#
# The token view colours token `t` at layer `l` by its **first-choice** expert. Write
# `first_choices(logits)`: `(L, T, E)` logits → `(L, T)` int64 expert ids.


# %%
def first_choices(logits: torch.Tensor) -> torch.Tensor:
    """logits (L, T, E) -> (L, T) int64: the most probable expert of every token at every layer."""
    ### BEGIN SOLUTION
    return logits.float().argmax(dim=-1)  # (L, T)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import routing_explorer as ex  # fetched afresh: grading calls the original checker

ex.check_first_choices(first_choices)

# %% [markdown]
# ## Exercise 6.2 — per-layer loads
#
# The load chart counts, at every layer, how many tokens have expert `e` among their top `k`.
# Write `layer_loads(logits, k)`: `(L, T, E)` logits → `(L, E)` int64 counts; each row sums to
# `T * k`, and an expert nobody picked gets a 0.


# %%
def layer_loads(logits: torch.Tensor, k: int) -> torch.Tensor:
    """logits (L, T, E), k -> (L, E) int64 tokens per expert and layer."""
    ### BEGIN SOLUTION
    chosen = torch.topk(logits.float(), k, dim=-1).indices  # (L, T, k)
    hits = torch.zeros(logits.shape, dtype=torch.int64)  # (L, T, E)
    return hits.scatter_(-1, chosen, 1).sum(dim=1)  # (L, E)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import routing_explorer as ex  # fetched afresh: grading calls the original checker

ex.check_layer_loads(layer_loads)

# %% [markdown]
# ## Exercise 6.3 — one token's top-k weights
#
# Hovering over a token shows its experts and their renormalised weights. Write
# `token_topk(logits, layer, t, k)` → `(weights, experts)`: `weights` `(k,)` float32 summing to 1,
# `experts` `(k,)` int64, best first (Mixtral's softmax → top-k → renormalise).


# %%
def token_topk(logits: torch.Tensor, layer: int, t: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (L, T, E) -> weights (k,) float32, experts (k,) int64 of token t at `layer`."""
    ### BEGIN SOLUTION
    probs = torch.softmax(logits[layer, t].float(), dim=-1)  # (E,)
    top_p, experts = torch.topk(probs, k)  # (k,), (k,)
    return top_p / top_p.sum(), experts
    ### END SOLUTION


# %%
from moe_edu.course.exercises import routing_explorer as ex  # fetched afresh: grading calls the original checker

ex.check_token_topk(token_topk)

# %% [markdown]
# ## The shipped model, read by hand
#
# Your functions (or the references) on the trace above, checked against the trace's own
# methods, which the explorer draws from.

# %%
first_fn = ex.use("first_choices", first_choices)
loads_fn = ex.use("layer_loads", layer_loads)
topk_fn = ex.use("token_topk", token_topk)

first = first_fn(trace.logits)  # (L, T)
loads = loads_fn(trace.logits, k)  # (L, E)
print("first choices agree with trace.first_choices():", torch.equal(first, trace.first_choices()))
print("every layer's loads sum to T * k:", bool((loads.sum(dim=1) == T * k).all()))
weights, experts = topk_fn(trace.logits, 0, 0, k)
print(f"token 0 at layer 0: {len(experts.tolist())} experts, weights sum to 1: {abs(float(weights.sum()) - 1) < 1e-6}")

# %% [markdown]
# The actual ids and counts below depend on the trained weights; on another machine a token
# whose two best logits are nearly equal could flip, so this cell is not compared by nbval.

# %% tags=["nbval-ignore-output"]
for layer in range(L):
    print(f"layer {layer}: loads {loads[layer].tolist()}")
print("first choices at the last layer:", list(zip(trace.tokens, first[-1].tolist(), strict=False))[:8])

# %% [markdown]
# ## Open question 6.4 — a perfectly balanced layer
#
# Suppose a layer's loads come out perfectly even, `T * k / E` tokens for every expert, on
# this one text. Does that mean the router has learned nothing about the text? What would you
# look at next in the explorer to find out?

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** No. Even loads only say how *many* tokens each expert gets, not *which*. A router
# that sends every `def`, `(` and indentation token to the same two experts and every letter to
# others can still be perfectly balanced over a text, while a random router is balanced too and
# has learned nothing. Look at the token view (are the same or similar tokens coloured alike at
# this layer?), at consecutive-token repetition against the 1/E random rate, and at the loads
# per domain (code vs prose): structure shows up as consistency and as differences between
# texts, not in one text's totals.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# A trace's logits `(L, T, E)` hold everything the explorer shows: first choices are an argmax
# over the experts, loads are top-k hits summed over the tokens, and a token's weights are its
# top-k probabilities renormalised. Notebook 06 draws them; notebook 08 measures them per domain.

# %% [markdown]
# # Exercises 08 — What do experts learn?
#
# Companion to **notebook 08 (What do experts learn?)**. The Mixtral paper (§5, Table 5) measures
# how often two *consecutive* tokens are sent to the same expert, and compares it with what
# uniformly random routing would give. You will write that statistic and its random baseline,
# then run them on the tiny Mixtral shipped with `moe_edu`.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.notebook import setup

setup()

import math

import torch

from moe_edu.exercises import repetition as ex

# %% [markdown]
# ## Exercise 8.1 — consecutive repetition
#
# `chosen` is one text's routing at one layer: a `(T, k)` tensor of expert ids, column 0 the
# first choice. For the $T-1$ pairs of neighbouring tokens $(t-1, t)$, return two floats:
#
# - **first choice**: the share of pairs whose first-choice experts are equal;
# - **top-k overlap**: the share of pairs whose $k$ chosen experts share at least one expert
#   (the paper's "first or second choice" for $k = 2$).

# %%
def consecutive_repetition(chosen: torch.Tensor) -> tuple[float, float]:
    """chosen (T, k) -> (first-choice repeat rate, top-k overlap rate) over the T-1 neighbour pairs."""
    ### BEGIN SOLUTION
    prev, cur = chosen[:-1], chosen[1:]  # (T-1, k), (T-1, k)
    first = (prev[:, 0] == cur[:, 0]).float().mean()
    overlap = (prev[:, :, None] == cur[:, None, :]).any(-1).any(-1).float().mean()  # (T-1,) -> scalar
    return first.item(), overlap.item()
    ### END SOLUTION


# %%
ex.check_consecutive_repetition(consecutive_repetition);

# %% [markdown]
# ## Exercise 8.2 — the random baseline
#
# If every token picked its $k$ experts uniformly at random out of $E$, how often would two
# neighbours share at least one? The first-choice baseline is simply $1/E$ (12.5 % for 8 experts).
# Write `random_topk_overlap_rate(E, k)` exactly (no simulation).

# %%
def random_topk_overlap_rate(num_experts: int, top_k: int) -> float:
    """Probability that two independent uniformly random top-k sets of E experts intersect."""
    ### BEGIN SOLUTION
    return 1.0 - math.comb(num_experts - top_k, top_k) / math.comb(num_experts, top_k)
    ### END SOLUTION


# %%
ex.check_random_topk_overlap_rate(random_topk_overlap_rate);

# %% [markdown]
# ## Simulate, then measure the trained model
#
# A simulation of random routing should land near your baselines; the shipped tiny Mixtral
# (trained on Python code, English docstrings, arithmetic and four European languages) should not.

# %%
rep_fn = ex.use(consecutive_repetition, "consecutive_repetition")
base_fn = ex.use(random_topk_overlap_rate, "random_topk_overlap_rate")

g = torch.Generator().manual_seed(0)
random_routing = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(20000)])  # (T, 2)
first, overlap = rep_fn(random_routing)
print(f"simulated random routing: first choice {100 * first:.1f} % (exact {100 / 8:.1f} %), "
      f"overlap {100 * overlap:.1f} % (exact {100 * base_fn(8, 2):.1f} %)")

# %%
from moe_edu.analysis import route
from moe_edu.data.corpus import language_documents

model, tokenizer = moe_edu.load_pretrained()
text = language_documents("french")[5].text  # a held-out paragraph
chosen = route(model, tokenizer.encode(text))  # (L, T, k)
for layer in range(chosen.shape[0]):
    first, overlap = rep_fn(chosen[layer])
    print(f"layer {layer}: first choice {100 * first:5.1f} %, top-2 overlap {100 * overlap:5.1f} %")

# %% [markdown]
# ## Open question 8.3 — why neighbours share experts
#
# Mixtral's repetition rates are well above random at layers 15 and 31 but close to random at
# layer 0. Why would the *first* layer route neighbours almost independently, and deeper layers
# route them together?

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** The router of layer 0 sees little more than each token's own embedding (one
# attention layer has mixed in some context), so neighbours, being different tokens, are routed
# almost independently. Deeper routers read the residual stream, which accumulates information
# about the surrounding text (the sentence, the code block, the indentation level), so
# neighbouring positions carry similar vectors and tend to pick the same experts. The paper
# notes this "locality" matters for systems work: consecutive tokens hitting the same expert
# make caching experts and batching their work easier.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Repetition of first choices is compared with $1/E$, overlap of top-k sets with
# $1 - \binom{E-k}{k} / \binom{E}{k}$ (46.4 % for Mixtral's 8 experts, top-2). Notebook 08 runs
# both per domain and per layer on the shipped model, next to the paper's Table 5.

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
from moe_edu.course.notebook import setup

setup()

import math

import torch

from moe_edu.course.exercises import repetition as ex

# %% [markdown]
# ## Exercise 8.1 — consecutive repetition
#
# `chosen` is one text's routing at one layer: a `(T, k)` tensor of expert ids, column 0 the
# first choice. For the $T-1$ pairs of neighbouring tokens $(t-1, t)$, return two numbers (floats, or one-element tensors: the checker compares values):
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
from moe_edu.course.exercises import repetition as ex  # fetched afresh: grading calls the original checker

ex.check_consecutive_repetition(consecutive_repetition)

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
from moe_edu.course.exercises import repetition as ex  # fetched afresh: grading calls the original checker

ex.check_random_topk_overlap_rate(random_topk_overlap_rate)

# %% [markdown]
# ## Simulate, then measure the trained model
#
# A simulation of random routing should land near your baselines; the shipped tiny Mixtral
# (trained on Python code, English docstrings, arithmetic and four European languages) should not.

# %%
rep_fn = ex.use("consecutive_repetition", consecutive_repetition)
base_fn = ex.use("random_topk_overlap_rate", random_topk_overlap_rate)

g = torch.Generator().manual_seed(0)
random_routing = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(20000)])  # (T, 2)
first, overlap = rep_fn(random_routing)
print(
    f"simulated random routing: first choice {100 * first:.1f} % (exact {100 / 8:.1f} %), "
    f"overlap {100 * overlap:.1f} % (exact {100 * base_fn(8, 2):.1f} %)"
)

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
# In the paper's Table 5, Mixtral's layer 0 repeats first choices only 13.6–14.9 % of the time
# (random: 12.5 %), while layers 15 and 31 reach 19.7–28.4 %. The cell above shows something
# else for our tiny model: its layer 0 repeats the first choice 44.4 % of the time, far above
# random. Why can a *first* layer route neighbours together in a small model trained on a few
# narrow domains, and why would Mixtral's layer 0 do so much less than its deeper layers?

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** A router only sees the residual stream at its layer. At layer 0 that is little
# more than each token's own embedding plus one attention layer's mixing. In our tiny model the
# vocabulary of each domain (Python code, arithmetic, one language) is small and distinctive,
# so neighbouring tokens of the same text already have similar embeddings and pick the same
# expert: the router splits by domain, and a text stays in one domain. Mixtral's layer 0 serves
# a huge, mixed vocabulary where neighbours are different words, so it routes them almost
# independently. Deeper routers read a residual stream that has accumulated context (the
# sentence, the code block, the indentation level), so neighbouring positions carry similar
# vectors and tend to pick the same experts. The paper notes this locality matters for systems
# work: consecutive tokens hitting the same expert make caching experts easier.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Repetition of first choices is compared with $1/E$, overlap of top-k sets with the exact
# random baseline you derived in 8.2. Notebook 08 runs both per domain and per layer on the
# shipped model, next to the paper's Table 5.

# %% [markdown]
# # Exercises 01 — Gating
#
# Companion to **notebook 01 (Gating)**. You will write Mixtral's router yourself:
# a bias-free linear map from the hidden state to one logit per expert, then a softmax in float32.
#
# **How these exercises work**
#
# - Replace each `raise NotImplementedError()` with your code and run the cell.
# - Run the checker cell below it. It prints one line: `✓` when your function agrees with the
#   library on every test case, `✗` with the first failing case and the first difference
#   otherwise, or `not attempted` while the stub is untouched.
# - Stuck? `ex.hint("router_logits")` prints the hints (`ex.hint("router_logits", 1)` only the first).
# - Cells after an exercise use your function when it passes, else the library's reference, so
#   the notebook always runs top to bottom.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch
import torch.nn.functional as F

from moe_edu.course.exercises import gating as ex

# %% [markdown]
# ## Exercise 1.1 — router logits
#
# The seed article (§2, 路由網絡): *the router network decides, for every token, which experts process it.*
# In Mixtral the router is a single linear layer **without bias**, `W_g` of shape `(E, H)`:
#
# $$\text{logits} = x W_g^\top \in \mathbb{R}^{T \times E}$$
#
# Write `router_logits(x, w)` for `x` of shape `(T, H)` and `w` of shape `(E, H)`. Compute in
# **float32** (cast both inputs), whatever their dtype.


# %%
def router_logits(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (T, H), w (E, H) -> logits (T, E) in float32."""
    ### BEGIN SOLUTION
    return x.float() @ w.float().T  # (T, E)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import gating as ex  # fetched afresh: grading calls the original checker

ex.check_router_logits(router_logits)

# %% [markdown]
# A hint looks like this. Hints go from a nudge to a recipe: ask for them one at a time, since the
# last hint is nearly the solution.

# %%
ex.hint("router_logits", 1)

# %% [markdown]
# ## Exercise 1.2 — router probabilities
#
# The logits become a probability distribution **over the experts** for every token with a
# softmax. Write `router_probs(logits)`: `(T, E)` in, `(T, E)` float32 out, every row summing to 1,
# also for large logits (`exp` overflows float32 above about 88.7).


# %%
def router_probs(logits: torch.Tensor) -> torch.Tensor:
    """logits (T, E) -> probabilities (T, E) in float32, softmax over the experts."""
    ### BEGIN SOLUTION
    return torch.softmax(logits.float(), dim=-1)  # (T, E)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import gating as ex  # fetched afresh: grading calls the original checker

ex.check_router_probs(router_probs)

# %% [markdown]
# ## Your router on a tiny Mixtral block
#
# The next cell uses your two functions if they pass (else the reference) on a real
# `moe_edu.SparseMoeBlock` gate, and compares with the library's router.

# %%
router_logits_fn = ex.use("router_logits", router_logits)
router_probs_fn = ex.use("router_probs", router_probs)

config = moe_edu.PRESETS["tiny"]
block = moe_edu.SparseMoeBlock(config)
x = torch.randn(6, config.hidden_size)  # (T, H)
probs = router_probs_fn(router_logits_fn(x, block.gate.weight))  # (T, E)
lib_logits = block.gate(x).logits  # (T, E)
print("probs shape:", tuple(probs.shape), "| rows sum to 1:", bool(torch.allclose(probs.sum(-1), torch.ones(6))))
print("same as the library's router:", bool(torch.allclose(probs, torch.softmax(lib_logits, -1), atol=1e-6)))
print("first token's probabilities:", [round(p, 3) for p in probs[0].tolist()])

# %% [markdown]
# ## Open question 1.3 — why float32?
#
# Mixtral is usually run in bfloat16. Why do implementations compute the router's softmax
# (and often its logits) in float32? What could go wrong in bf16? Answer in two or three sentences.
#
# <!-- BEGIN SOLUTION -->
# **Answer.** bfloat16 keeps only 8 bits of mantissa (about 2–3 significant digits), so
# logits that differ slightly round to the same value and nearly tied experts swap or tie:
# the *discrete* top-k choice flips, which changes the output abruptly, and routing becomes
# noisy run to run. The softmax also exponentiates, amplifying rounding errors, and the
# renormalised weights and the load-balancing loss (sums of small probabilities) lose precision.
# The router is tiny (`E x H` weights), so computing it in fp32 costs almost nothing.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# The router is one bias-free matrix `(E, H)` and a softmax over experts in float32.
# Next: **exercises 02**, choosing the top-k experts from these probabilities.

# %% [markdown]
# # Exercises 07 — Load balancing
#
# Companion to **notebook 07 (Load balancing & training)**. A router left alone tends to
# collapse onto a few experts. You will write Switch Transformer's auxiliary load-balancing loss
# (the one `transformers` adds to Mixtral's training loss with `router_aux_loss_coef`) and
# ST-MoE's router z-loss.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import load_balancing as ex

# %% [markdown]
# ## Exercise 7.1 — the load-balancing loss
#
# $$\mathcal{L}_{\text{aux}} = E \sum_{e=1}^{E} f_e\, P_e$$
#
# - $f_e = \frac{1}{T}\,\#\{t : e \in \text{top-}k(t)\}$: the number of tokens that chose expert
#   $e$ among their top $k$ (top-k of the softmax), divided by the number of tokens $T$. Each
#   token makes $k$ choices, so $\sum_e f_e = k$ (it is *not* a share of the $T \cdot k$
#   assignments, which would sum to 1);
# - $P_e$: the mean router probability of expert $e$ over the $T$ tokens (softmax in float32).
#
# Write `load_balancing_loss(router_logits, num_experts, top_k)` for logits `(T, E)`, returning a
# 0-d float32 tensor.


# %%
def load_balancing_loss(router_logits: torch.Tensor, num_experts: int, top_k: int) -> torch.Tensor:
    """router_logits (T, E) -> scalar: E * sum_e f_e * P_e."""
    ### BEGIN SOLUTION
    probs = torch.softmax(router_logits.float(), dim=-1)  # (T, E)
    chosen = torch.topk(probs, top_k, dim=-1).indices  # (T, k)
    hits = torch.zeros_like(probs).scatter_(-1, chosen, 1.0)  # (T, E), k ones per row
    f = hits.mean(dim=0)  # (E,), sums to k
    P = probs.mean(dim=0)  # (E,), sums to 1
    return num_experts * torch.sum(f * P)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import load_balancing as ex  # fetched afresh: grading calls the original checker

ex.check_load_balancing_loss(load_balancing_loss)

# %% [markdown]
# ## Exercise 7.2 — the router z-loss
#
# ST-MoE keeps router logits small (large logits make the fp32 softmax saturate and training
# unstable): $\mathcal{L}_z = \frac{1}{T}\sum_t \big(\log \sum_e e^{l_{t,e}}\big)^2$.
# Write `router_z_loss(router_logits)` for logits `(T, E)`, a 0-d float32 tensor.


# %%
def router_z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """router_logits (T, E) -> scalar: mean over tokens of logsumexp(logits)^2."""
    ### BEGIN SOLUTION
    return torch.logsumexp(router_logits.float(), dim=-1).pow(2).mean()
    ### END SOLUTION


# %%
from moe_edu.course.exercises import load_balancing as ex  # fetched afresh: grading calls the original checker

ex.check_router_z_loss(router_z_loss)

# %% [markdown]
# ## Uniform routing gives k, collapse gives more
#
# Under perfectly uniform routing $f_e = k/E$ and $P_e = 1/E$, so the loss is exactly $k$. As the
# router concentrates on one expert ($f_0 \to 1$, $P_0 \to 1$) the loss grows towards $E$. Check with your
# function (or the reference), for E = 8, k = 2:

# %%
lb_fn = ex.use("load_balancing_loss", load_balancing_loss)
z_fn = ex.use("router_z_loss", router_z_loss)

T, E, k = 64, 8, 2
base = torch.randn(T, E)  # (T, E)
for bias in (0.0, 1.0, 3.0, 10.0):
    logits = 0.01 * base  # (T, E), nearly uniform
    logits[:, 0] += bias  # expert 0 increasingly preferred
    print(f"bias on expert 0 = {bias:>4}: aux loss {lb_fn(logits, E, k).item():.3f}, z-loss {z_fn(logits).item():.3f}")

# %% [markdown]
# ## Open question 7.3 — what the loss cannot see
#
# The loss uses the *hard* counts $f_e$ and the *soft* probabilities $P_e$. Which of the two
# carries the gradient, and why is the product needed rather than, say, $\sum_e f_e^2$?

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** $f_e$ comes from a top-k (an argmax-like, piecewise-constant choice), so it has no
# gradient; only $P_e$ is differentiable. $\sum_e f_e^2$ would measure imbalance but could not
# be trained. In $E \sum_e f_e P_e$, $f_e$ acts as a constant weight on $P_e$: the gradient
# lowers the probability of the experts that are currently overloaded (large $f_e$) most, which
# pushes tokens towards under-used experts. It is minimised (value k) when routing is uniform.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# The aux loss equals k under uniform routing and grows with collapse; the z-loss keeps logits
# small. Notebook 07 trains the tiny model with and without them.

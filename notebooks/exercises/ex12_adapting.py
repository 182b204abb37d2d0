# %% [markdown]
# # Exercises 12 — Adapting MoEs
#
# Companion to **notebook 12 (Adapting MoEs)**; exercise 12.3 builds on **notebook 09 §7**
# (the auxiliary-loss-free bias), which notebook 12 does not repeat. Three small pieces that change a trained model
# instead of training one from scratch: sparse upcycling (a dense FFN copied into every expert),
# pruning an expert (and re-routing its tokens), and DeepSeek-V3's bias update for balancing
# without an auxiliary loss.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import adapting as ex

# %% [markdown]
# ## Exercise 12.1 — upcycle a dense FFN
#
# A dense model here is a Mixtral with one expert (E = k = 1). Its FFN is stored like the
# experts: `gate_up` `(1, 2I, H)` (w1 and w3 fused) and `down` `(1, H, I)`. Write
# `upcycle_weights(gate_up, down, num_experts)` returning `(E, 2I, H)` and `(E, H, I)` tensors in
# which every expert is an exact copy of the dense FFN: new tensors, not views of the dense weights
# (experts that share memory cannot be trained apart; the checker looks).


# %%
def upcycle_weights(gate_up: torch.Tensor, down: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_up (1, 2I, H), down (1, H, I) -> (E, 2I, H), (E, H, I): E copies."""
    ### BEGIN SOLUTION
    return gate_up.repeat(num_experts, 1, 1), down.repeat(num_experts, 1, 1)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import adapting as ex  # fetched afresh: grading calls the original checker

ex.check_upcycle_weights(upcycle_weights)

# %% [markdown]
# Now use it: a dense block (one expert) and an 8-expert block with the copied experts and a
# **fresh random router**. Since the renormalised top-2 weights sum to 1 and both experts a
# token reaches are the same function, the two blocks agree on every token:

# %%
upcycle_fn = ex.use("upcycle_weights", upcycle_weights)
cfg = moe_edu.get_config("tiny")
torch.manual_seed(0)
dense = moe_edu.SparseMoeBlock(cfg.replace(num_local_experts=1, num_experts_per_tok=1)).eval()
moe = moe_edu.SparseMoeBlock(cfg).eval()  # random router and experts
with torch.no_grad():
    gate_up, down = upcycle_fn(dense.experts.gate_up_proj, dense.experts.down_proj, cfg.num_local_experts)
    moe.experts.gate_up_proj.copy_(gate_up)
    moe.experts.down_proj.copy_(down)
x = torch.randn(2, 16, cfg.hidden_size)  # (B, T, H)
with torch.no_grad():
    y_dense, y_moe = dense(x)[0], moe(x)[0]
    chosen = moe.route(x).expert_ids  # (B*T, k)
print("different tokens reach different experts:", len(torch.unique(chosen)) > 2)
print("max |y_moe - y_dense| < 1e-6:", (y_moe - y_dense).abs().max().item() < 1e-6)

# %% [markdown]
# ## Exercise 12.2 — prune an expert and renormalise
#
# Dropping expert `d` removes its router row and its weights. The tokens that had `d` in their
# top-k must take their next choice, and their weights must again sum to 1. Write
# `pruned_routing(logits, dropped, top_k)` for router logits `(T, E)`: weights `(T, k)` float32 and
# expert ids `(T, k)` in the **original** numbering (never `dropped`). Slot order does not matter.


# %%
def pruned_routing(logits: torch.Tensor, dropped: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (T, E) -> weights (T, k), expert_ids (T, k) chosen among the E-1 experts left."""
    ### BEGIN SOLUTION
    masked = logits.float().clone()  # (T, E)
    masked[:, dropped] = float("-inf")
    weights, expert_ids = torch.topk(torch.softmax(masked, dim=-1), top_k, dim=-1)  # (T, k), (T, k)
    return weights / weights.sum(dim=-1, keepdim=True), expert_ids
    ### END SOLUTION


# %%
from moe_edu.course.exercises import adapting as ex  # fetched afresh: grading calls the original checker

ex.check_pruned_routing(pruned_routing)

# %% [markdown]
# The library's `prune_experts` builds a model with E-1 experts per layer. Its routing is yours,
# with the experts after `d` renumbered one down:

# %%
from moe_edu.adapting.pruning import prune_experts

pruned_fn = ex.use("pruned_routing", pruned_routing)
torch.manual_seed(0)
small = moe_edu.MixtralForCausalLM(cfg.replace(vocab_size=128, num_hidden_layers=1)).eval()
pruned = prune_experts(small, [3])
h = torch.randn(1, 12, cfg.hidden_size)  # (1, T, H)
with torch.no_grad():
    lib = pruned.model.layers[0].mlp.route(h)
    w_lib, ids_lib = lib.weights, lib.expert_ids  # (T, k) each, ids in 0..6
    w_me, ids_me = pruned_fn(small.model.layers[0].mlp.route(h).logits, 3, 2)  # ids in 0..7, never 3
renumbered = ids_me - (ids_me > 3).long()  # (T, k)
same = torch.equal(torch.sort(renumbered, -1).values, torch.sort(ids_lib, -1).values)
print("expert 3 never chosen:", bool((ids_me != 3).all()), "| same experts as prune_experts:", same)
print("weights sum to 1:", torch.allclose(w_me.sum(-1), torch.ones(12)))

# %% [markdown]
# ## Exercise 12.3 — the auxiliary-loss-free bias update (DeepSeek-V3)
#
# The material is in **notebook 09 §7** (DeepSeek-V3's balancing without an auxiliary loss).
# Each expert has a bias $b_e$ that is added to its score only to choose the top k. After every
# batch, with the hard counts $c_e$ of that batch (integers), their mean over the experts
# $\bar c = \frac{1}{E}\sum_e c_e$ (a real number, not rounded) and a step $\gamma$ (the bias update speed):
#
# $$b_e \leftarrow b_e - \gamma \,\operatorname{sign}(c_e - \bar c)$$
#
# (overloaded experts become less attractive, underloaded ones more, an expert exactly at the mean
# keeps its bias). Write `bias_update(bias, load_counts, speed)` for `(E,)` tensors; return the new
# bias in the bias's dtype.


# %%
def bias_update(bias: torch.Tensor, load_counts: torch.Tensor, speed: float) -> torch.Tensor:
    """bias (E,), load_counts (E,) -> the new bias (E,)."""
    ### BEGIN SOLUTION
    load = load_counts.to(bias.dtype)  # (E,)
    return bias - speed * torch.sign(load - load.mean())
    ### END SOLUTION


# %%
from moe_edu.course.exercises import adapting as ex  # fetched afresh: grading calls the original checker

ex.check_bias_update(bias_update)

# %% [markdown]
# Run it on a router that prefers a few experts: scores from a skewed batch, the bias added only
# for the choice. The imbalance (max / mean load, 1 = even) falls with no loss and no gradient:

# %%
update_fn = ex.use("bias_update", bias_update)
g = torch.Generator().manual_seed(0)
scores = torch.softmax(torch.randn(512, 8, generator=g) + torch.randn(8, generator=g), dim=-1)  # (T, E)
bias = torch.zeros(8)
for step in range(301):
    counts = torch.bincount(torch.topk(scores + bias, 2, dim=-1).indices.reshape(-1), minlength=8)  # (E,)
    if step in (0, 300):
        imbalance = (counts.max() / counts.float().mean()).item()
        print(f"step {step:3d}: imbalance {imbalance:.2f}")
    bias = update_fn(bias, counts, 0.002)
print("balanced within 25 %:", imbalance < 1.25)

# %% [markdown]
# ## Open question 12.4 — why not just a bigger aux loss?
#
# The Switch loss also evens the load. Name one thing the bias does that the loss cannot, and one
# thing it costs.

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** The bias reads the *hard* counts and changes only which experts are chosen, so it
# adds no gradient that competes with the language-modelling loss and cannot be fooled by nearly
# flat probabilities (notebook 07's blind spot: the Switch loss is k whenever $P_e = 1/E$, whatever
# the hard choices). Its cost: it is a controller with its own step size (too large and the load
# oscillates, too small and it reacts slowly), it balances per batch rather than per sequence
# (DeepSeek-V3 keeps a very small sequence-wise loss for that), and a token's experts now depend on
# the batch history through $b$.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Upcycling is a copy plus a fresh router (exact at step 0); pruning is a masked logit plus the usual
# renormalised top-k; the aux-free bias is a sign controller on the hard load. Notebook 12 measures
# upcycling and pruning on the tiny model; the aux-free bias is taught and measured in notebook 09 §7.

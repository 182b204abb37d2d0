# %% [markdown]
# # Exercises 10 — Scaling out: expert parallelism by the numbers
#
# Companion to **notebook 10 (Scaling out)**. In expert parallelism each of `W` ranks (GPUs or
# processes) holds `E / W` of the experts; every token is sent, by an all-to-all, to the ranks
# that hold its chosen experts, and its outputs come back the same way. You will compute, for a
# given routing, how much work each rank gets, how much crosses the network, and how much of a
# step the ranks spend waiting for the busiest one.
#
# **How these exercises work**
#
# - Replace each `raise NotImplementedError()` with your code and run the cell.
# - Run the checker cell below it: `✓` when your function agrees with the library on every test
#   case, `✗` with the first failing case otherwise, or `not attempted` while the stub is untouched.
# - Stuck? `ex.hint("tokens_per_rank")` prints the hints (`ex.hint("tokens_per_rank", 1)` only the first).
# - Cells after an exercise use your function when it passes, else the library's reference (and
#   say so in one line), so the notebook always runs top to bottom.
#
# **Conventions** (as `moe_edu.parallel`): rank `r` owns the experts `r·E/W … (r+1)·E/W − 1`; the
# `T` tokens are split the same way, token `t` lives on rank `t // (T/W)`. `chosen` `(T, k)` holds
# each token's expert ids (int64).

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch

from moe_edu.course.exercises import scaling as ex

# %% [markdown]
# ## Exercise 10.1 — tokens per rank
#
# Write `tokens_per_rank(chosen, num_experts, world_size)` → `(W,)` int64: how many `(token, slot)`
# assignments the experts of each rank receive (a rank that receives nothing gets 0).


# %%
def tokens_per_rank(chosen: torch.Tensor, num_experts: int, world_size: int) -> torch.Tensor:
    """chosen (T, k) -> (W,) int64 assignments received by each rank's experts."""
    ### BEGIN SOLUTION
    owner = chosen.reshape(-1) // (num_experts // world_size)  # (T*k,)
    return torch.bincount(owner, minlength=world_size)  # (W,)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import scaling as ex  # fetched afresh: grading calls the original checker

ex.check_tokens_per_rank(tokens_per_rank)

# %% [markdown]
# ## Exercise 10.2 — the traffic matrix
#
# The all-to-all moves assignment rows from the rank that holds the token to the rank that holds
# the expert. Write `traffic(chosen, num_experts, world_size)` → `(W, W)` int64 with
# `[src, dst]` = the number of assignments whose token lives on `src` and whose expert lives on
# `dst`. The diagonal stays on its rank; everything else crosses the network.


# %%
def traffic(chosen: torch.Tensor, num_experts: int, world_size: int) -> torch.Tensor:
    """chosen (T, k) -> (W, W) int64 assignments sent from rank src (row) to rank dst (column)."""
    ### BEGIN SOLUTION
    T, _k = chosen.shape
    src = torch.arange(T).div(T // world_size, rounding_mode="floor")  # (T,)
    dst = chosen.div(num_experts // world_size, rounding_mode="floor")  # (T, k)
    pair = src[:, None] * world_size + dst  # (T, k)
    counts = torch.bincount(pair.flatten(), minlength=world_size**2)  # (W*W,)
    return counts.view(world_size, world_size)  # (W, W)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import scaling as ex  # fetched afresh: grading calls the original checker

ex.check_traffic(traffic)

# %% [markdown]
# ## Exercise 10.3 — efficiency under imbalance
#
# The experts of all ranks run in the same step, and the step ends when the most loaded rank is
# done. Write `parallel_efficiency(load)` for the work per rank `(W,)`: the share of the step's
# rank-time spent on useful work, a number in `(0, 1]` (a float or a one-element tensor) (1.0 when the loads are equal).


# %%
def parallel_efficiency(load: torch.Tensor) -> float:
    """load (W,) work per rank -> the share of the step spent on useful work, in (0, 1]."""
    ### BEGIN SOLUTION
    load = load.double()  # (W,)
    return (load.sum() / (len(load) * load.max())).item()
    ### END SOLUTION


# %%
from moe_edu.course.exercises import scaling as ex  # fetched afresh: grading calls the original checker

ex.check_parallel_efficiency(parallel_efficiency)

# %% [markdown]
# ## Balanced and skewed routing on 4 ranks
#
# Mixtral's shape: `E = 8` experts, `k = 2`, `W = 4` ranks (two experts each), `T = 1024` tokens,
# hidden size `H = 4096` in bf16 (2 bytes). A token row crosses the network twice (dispatch and
# combine), unless its expert is on its own rank. First a uniformly random router, then one
# where every token's first choice is expert 0.

# %%
per_rank_fn = ex.use("tokens_per_rank", tokens_per_rank)
traffic_fn = ex.use("traffic", traffic)
efficiency_fn = ex.use("parallel_efficiency", parallel_efficiency)

E, k, W, T, H = 8, 2, 4, 1024, 4096
g = torch.Generator().manual_seed(0)
uniform = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])  # (T, k)
skewed = uniform.clone()
skewed[:, 0] = 0  # everybody's first choice is expert 0 ...
skewed[:, 1] = torch.where(uniform[:, 1] == 0, uniform[:, 0], uniform[:, 1])  # ... and the second another
for name, routing in (("uniform", uniform), ("skewed", skewed)):
    load = per_rank_fn(routing, E, W)  # (W,)
    m = traffic_fn(routing, E, W)  # (W, W)
    remote = int(m.sum() - m.diagonal().sum())
    mib = 2 * remote * H * 2 / 2**20  # dispatch + combine, bf16
    print(
        f"{name:8s} tokens per rank {load.tolist()}, remote assignments {remote} of {T * k} "
        f"({2 * remote} rows, {mib:.1f} MiB per layer), efficiency {efficiency_fn(load):.3f}"
    )

# %% [markdown]
# With uniform routing about `(W−1)/W` = 75 % of the assignments leave their rank, whatever the
# balance: expert parallelism pays its all-to-all even when the router is perfect (here the skew
# happens to move as many rows). Under the skew, rank 0 receives every token at least once and the
# step waits for it: efficiency drops below 0.5. This
# is why load balancing matters more, not less, once experts are spread over devices — and why a
# capacity factor caps the busiest rank's work (at the price of dropped tokens).

# %% [markdown]
# ## Open question 10.4 — locality and expert parallelism
#
# The Mixtral paper (§5) finds that consecutive tokens often share experts, and says this
# locality helps caching but can also hurt expert parallelism. Using your functions, explain how
# the *same* property can help one and hurt the other.

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** A cache (e.g. offloading experts to CPU memory and keeping the recent ones on the
# GPU) wins when the next token needs the experts the last one used: repetition means hits. In
# expert parallelism, the tokens of one sequence are processed together; if neighbours pick the
# same experts, a contiguous block of tokens (one rank's share, or one whole batch of similar
# text) piles onto the few ranks holding those experts. `tokens_per_rank` then becomes uneven and
# `parallel_efficiency` falls below 1, because every rank waits for the over-subscribed one; the
# paper names exactly this risk (over-subscribing some experts under expert parallelism).
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# Which rank owns an expert is integer division; per-rank load is a histogram of owners; the
# traffic matrix counts (token rank, expert rank) pairs and its off-diagonal is what the
# all-to-all moves, twice; the busiest rank sets the pace, so imbalance costs efficiency. Notebook 10 runs the real
# all-to-all with `torch.distributed`.

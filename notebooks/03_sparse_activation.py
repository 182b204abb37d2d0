# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 · Sparse activation: running only the chosen experts (稀疏激活)
#
# > **稀疏激活（Sparse Activation）：每次僅激活少數專家，降低計算成本，提高效率。**
# > *"Sparse activation: only a few experts are activated each time, lowering compute cost and raising
# > efficiency."* — the seed, §2
#
# > **中文導讀**　稀疏啟用（sparse activation）的意思是：沒被選中的專家根本不會為那個 token 做計算。
# > 本章用三種方式寫出分派（dispatch）：逐專家迴圈、全部計算再遮罩的稠密版、以及先依專家排序再分組的版本，
# > 並確認三者數值相同；稠密版要多花 E/k = 4 倍的 FLOPs。接著比較無丟棄（dropless，
# > Mixtral 釋出的推論程式碼與 transformers 的做法）與容量因子（GShard、Switch）：專家的名額滿了，多出來的指派就被丟棄。
# > 被丟棄的指派不計算，token 通常還有另一個專家；兩個指派都被丟棄時，才只剩殘差連接帶它通過這一層。
#
# Notebook 02 ended with a `(T, E)` gate matrix that has $k$ non-zeros per row. The *mathematics* of an MoE layer
# would be happy to multiply every expert by its gate and add up — zeros included. Sparse activation is the
# *engineering* decision not to: an expert that a token did not choose is never run on that token. This notebook
# writes the **dispatch** step three ways, counts the FLOPs each really spends, times them, and then looks at what
# happens when experts get more tokens than they can hold.
#
# **Learning objectives.** After this notebook you can
#
# 1. write dispatch as a loop over experts, as a dense masked computation, and as a sort-and-group computation, and
#    show that all three give the same numbers;
# 2. count the FLOPs each one spends ($E/k$ times more for the dense one) and relate that to measured times;
# 3. explain *dropless* routing (Mixtral's released inference code and `transformers`) versus *capacity-based*
#    routing (GShard, Switch), compute a capacity and the fraction of dropped tokens.

# %%
import moe_edu
from moe_edu.course.notebook import format_tensor, setup

setup()

import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from moe_edu.capacity import capacity_dispatch
from moe_edu.course.plots import expert_load_bars, ratio_bars, shared_legend
from moe_edu.dispatch import DISPATCHES
from moe_edu.experts import Experts

# %% [markdown]
# ## 1. The ingredients
#
# $E$ experts, each a SwiGLU feed-forward network $E_e(x) = W_2^{(e)}\big(\mathrm{silu}(W_1^{(e)}x) \odot
# W_3^{(e)}x\big)$ (notebook 05 looks inside), stored as stacked weight tensors; tokens; and the router's choice
# `chosen (T, k)` with weights `weights (T, k)` (notebooks 01–02, renormalised as in notebook 04).

# %%
T, H, I, E, k = 16, 64, 224, 8, 2  # the tiny preset's widths
w1 = torch.randn(E, I, H) * 0.05  # (E, I, H) gate projections
w3 = torch.randn(E, I, H) * 0.05  # (E, I, H) up projections
w2 = torch.randn(E, H, I) * 0.05  # (E, H, I) down projections


def expert(e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e on a batch of rows: (n, H) -> (n, H)."""
    return (F.silu(x @ w1[e].T) * (x @ w3[e].T)) @ w2[e].T  # (n, I) -> (n, H)


x = torch.randn(T, H)  # (T, H)
probs = torch.softmax(x @ (torch.randn(E, H) * 0.3).T, dim=-1)  # (T, E)
top_p, chosen = torch.topk(probs, k, dim=-1)  # (T, k), (T, k)
weights = top_p / top_p.sum(-1, keepdim=True)  # (T, k)
print("chosen experts of the first 4 tokens:", chosen[:4].tolist())

# %% [markdown]
# The goal, for every token $t$: $\;y_t = \sum_{j=1}^{k} w_{t,j}\, E_{\text{chosen}_{t,j}}(x_t)$.
#
# ## 2. Three ways to dispatch
#
# ### (a) The loop over experts — the reference
#
# For each expert, find the tokens that chose it (`torch.where`), run the expert **once** on all of them as a batch,
# and add the weighted results back into their rows. An expert nobody chose is skipped entirely.


# %%
def loop_dispatch(x, weights, chosen):
    y = torch.zeros_like(x)  # (T, H)
    for e in range(E):
        token, slot = torch.where(chosen == e)  # (n_e,), (n_e,) which tokens chose e, in which top-k slot
        if len(token) == 0:
            continue  # sparse activation: nobody chose e, so e costs nothing
        y.index_add_(0, token, expert(e, x[token]) * weights[token, slot, None])  # (T, H)
    return y


y_loop = loop_dispatch(x, weights, chosen)
print("y:", tuple(y_loop.shape), " first row:", format_tensor(y_loop[0, :4]))

# %% [markdown]
# ### (b) Dense and masked — what sparsity saves
#
# Run **every** expert on **every** token, then multiply by the `(T, E)` gate matrix that is zero for unchosen
# experts. Simple, fully vectorised — and $E/k$ times the work, most of it multiplied by zero.


# %%
def dense_dispatch(x, weights, chosen):
    every = torch.stack([expert(e, x) for e in range(E)])  # (E, T, H) all experts on all tokens
    gates = torch.zeros(x.shape[0], E).scatter(1, chosen, weights)  # (T, E) k non-zeros per row
    return torch.einsum("te,eth->th", gates, every)  # (T, H)


y_dense = dense_dispatch(x, weights, chosen)
print("max |dense - loop| < 1e-6:", (y_dense - y_loop).abs().max().item() < 1e-6)

# %% [markdown]
# ### (c) Sort and group — how fast MoE kernels do it
#
# The loop calls `torch.where` once per expert (E passes over the data). Instead, flatten the $T \cdot k$
# (token, slot) **assignments**, sort them by expert id **once**, and the tokens of each expert become one
# contiguous block. Run one matmul per block, then scatter the results back. On a GPU the per-expert matmuls fuse
# into a single *grouped GEMM* (`torch.nn.functional.grouped_mm`, notebook 10).


# %%
def grouped_dispatch(x, weights, chosen):
    flat = chosen.reshape(-1)  # (T*k,) expert id of each assignment
    order = torch.argsort(flat, stable=True)  # (T*k,) assignments grouped by expert
    counts = torch.bincount(flat, minlength=E)  # (E,) assignments per expert
    token = order // k  # (T*k,) the token of each sorted assignment
    xs = x[token]  # (T*k, H) tokens, grouped by expert
    outs = [expert(e, g) for e, g in enumerate(xs.split(counts.tolist())) if len(g)]  # each (n_e, H)
    out = torch.cat(outs) * weights.reshape(-1)[order, None]  # (T*k, H)
    return torch.zeros_like(x).index_add_(0, token, out)  # (T, H)


y_grouped = grouped_dispatch(x, weights, chosen)
print("max |grouped - loop| < 1e-6:", (y_grouped - y_loop).abs().max().item() < 1e-6)

# %% [markdown]
# What the sort does, on the first four tokens: the assignments `(token, expert)` come out ordered by expert,
# tokens in their original order inside each group (that is what `stable=True` guarantees).

# %%
small = chosen[:4]  # (4, k)
order = torch.argsort(small.reshape(-1), stable=True)  # (4*k,)
print("assignments (token, expert):", [(i // k, int(small.reshape(-1)[i])) for i in range(small.numel())])
print("sorted by expert:           ", [(int(i) // k, int(small.reshape(-1)[i])) for i in order])

# %% [markdown]
# ## 3. Counting the FLOPs actually spent
#
# One expert on one token: three matmuls with $H \times I$ weights, 2 FLOPs per multiply-add, so $6HI$ FLOPs
# (ignoring the cheap `silu` and product). The loop and grouped versions run each expert only on its own tokens:
# $\sum_e n_e \cdot 6HI = Tk \cdot 6HI$. The dense version runs all $E$ on all $T$: $TE \cdot 6HI$.

# %%
counts = torch.bincount(chosen.reshape(-1), minlength=E)  # (E,) tokens per expert
per_token_expert = 6 * H * I
sparse_flops = int(counts.sum()) * per_token_expert
dense_flops = T * E * per_token_expert
print(f"tokens per expert: {counts.tolist()}  (sum = T*k = {T * k})")
print(f"loop / grouped: {sparse_flops:>12,} FLOPs")
print(f"dense masked:   {dense_flops:>12,} FLOPs")
print(f"dense / sparse = {dense_flops / sparse_flops:.1f} = E/k = {E // k}")
print(
    f"for Mixtral 8x7B, one layer, 1,000 tokens: sparse {1000 * k * 6 * 4096 * 14336 / 1e12:.2f} TFLOPs, "
    f"dense {1000 * E * 6 * 4096 * 14336 / 1e12:.2f} TFLOPs"
)

# %% [markdown]
# ## 4. Timing them side by side
#
# Now at a size where the work dominates the Python overhead: Mixtral's proportions at width 256 (the `small`
# preset), 256 tokens, one CPU thread, best of 3. The numbers below are **ratios to the grouped version** — absolute
# times depend on your machine (this cell's output is not checked by the tests). We time the library's versions
# (`moe_edu.dispatch.DISPATCHES`): the same three functions, written for stacked expert weights.

# %% tags=["nbval-ignore-output"]
cfg = moe_edu.PRESETS["small"]
experts_big = Experts(cfg.num_local_experts, cfg.hidden_size, cfg.intermediate_size)
torch.nn.init.normal_(experts_big.gate_up_proj, std=0.02)
torch.nn.init.normal_(experts_big.down_proj, std=0.02)
x_big = torch.randn(256, cfg.hidden_size)  # (T, H)
w_big, c_big = moe_edu.softmax_topk(x_big @ torch.randn(cfg.num_local_experts, cfg.hidden_size).T * 0.05, k)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


names = ["loop", "dense", "grouped"]
with torch.no_grad():
    seconds = {name: best_of(lambda d=DISPATCHES[name]: d(x_big, experts_big, w_big, c_big)) for name in names}
for name, s in seconds.items():
    print(f"{name:>8}: {s / seconds['grouped']:5.2f}x the grouped time")
fig = ratio_bars(
    list(seconds),
    [seconds[n] / seconds["grouped"] for n in seconds],
    ylabel="time / grouped",
    title="measured time, relative to grouped",
    highlight=names.index("grouped"),
)
plt.show()

# %% [markdown]
# Expect the dense version to take several times as long as the others — it does $E/k = 4$ times the FLOPs, though
# its one big batched matmul runs at a higher FLOP rate than many small ones, so the measured ratio is often a bit
# below 4 — and
# the loop to be close to grouped on a CPU (on a GPU the gap grows: the loop launches many small kernels and syncs
# with the host). The library versions are tested equal to each other, values and gradients:

# %%
with torch.no_grad():
    outs = {name: DISPATCHES[name](x_big, experts_big, w_big, c_big) for name in names}
for name in ("dense", "grouped"):
    print(f"{name} == loop: {torch.allclose(outs[name], outs['loop'], atol=1e-6)}")

# %% [markdown]
# ## 5. Dropless versus capacity: what if an expert is popular?
#
# Look at the load: routing does not spread tokens evenly, especially with an untrained or skewed router. Here 256
# tokens go through a router that happens to favour experts 2 and 5:

# %%
T2 = 256
u = torch.randn(H)
u = u / u.norm()  # (H,) a direction that all hidden states share (real ones have a non-zero mean too)
x2 = torch.randn(T2, H) + 1.5 * u  # (T, H)
W_skew = torch.randn(E, H) * 0.15  # (E, H)
W_skew[[2, 5]] += 0.8 * u  # (2, H) two experts that respond to the shared direction
weights2, chosen2 = moe_edu.softmax_topk(x2 @ W_skew.T, k)  # (T, k), (T, k)
load = torch.bincount(chosen2.reshape(-1), minlength=E)  # (E,)
print("assignments per expert:", load.tolist(), "| uniform share:", T2 * k // E)

# %% [markdown]
# **Mixtral's released inference code and `transformers`' implementation are dropless**: every assignment is
# processed, however unbalanced — the grouped dispatch just makes some groups bigger. That needs variable-sized
# matmuls (easy on a CPU, a grouped GEMM or block-sparse kernels on a GPU). (The paper does not describe how Mixtral
# was trained, so whether its training dropped tokens is not published.)
#
# **Capacity-based MoEs** (GShard, Switch Transformer) instead give every expert a fixed buffer of
#
# $$C = \left\lceil \text{capacity factor} \cdot \frac{T \cdot k}{E} \right\rceil$$
#
# slots, so all experts run the same-shaped matmul (good for TPUs and static shapes). Assignments beyond $C$ are
# **dropped**: that expert's contribution is simply missing, and the token passes through the layer on its
# residual connection alone. Which assignments win a slot? Here: first choices before second choices, in token order.
# In plain torch, a running count per expert gives every assignment its arrival position:

# %%
capacity_factor = 1.25
C = int(torch.ceil(torch.tensor(capacity_factor * T2 * k / E)))
slot_major = chosen2.t().reshape(-1)  # (k*T,) all first choices, then all second choices
onehot = F.one_hot(slot_major, E)  # (k*T, E)
position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # (k*T,) 0 for the first arrival at an expert, 1, 2, ...
kept = (position < C).reshape(k, T2).t()  # (T, k)
print(f"capacity C = ceil({capacity_factor} * {T2} * {k} / {E}) = {C}")
print(f"dropped assignments: {int((~kept).sum())} of {T2 * k} ({(~kept).float().mean():.1%})")
print(f"tokens that lost their first choice: {int((~kept[:, 0]).sum())}, lost both: {int((~kept).all(-1).sum())}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), sharey=True)
expert_load_bars(load, ax=axes[0], title="dropless (Mixtral): every assignment runs")
expert_load_bars(load, ax=axes[1], capacity=C, title=f"capacity factor {capacity_factor}: overflow dropped")
shared_legend(fig, ax=axes[1], ncol=4)  # one legend below both panels
plt.show()

# %% [markdown]
# `moe_edu.capacity.capacity_dispatch` is this cell as a function (a minimal version; notebook 09 compares the
# Switch and GShard variants). It returns the output, the `kept` mask and $C$. Check it against ours, and watch
# the dropped fraction fall as the capacity factor grows — at $E/k = 4$ nothing can be dropped and the result is
# exactly the dropless one:

# %%
experts_tiny = Experts(E, H, I)
with torch.no_grad():
    experts_tiny.gate_up_proj.copy_(torch.cat([w1, w3], dim=1))  # (E, 2I, H) our w1 and w3, fused
    experts_tiny.down_proj.copy_(w2)  # (E, H, I)
    lib = capacity_dispatch(x2, experts_tiny, weights2, chosen2, capacity_factor=1.25)
    print("same kept mask as ours:", torch.equal(lib.kept, kept), "| C:", lib.capacity)
    dropless = DISPATCHES["grouped"](x2, experts_tiny, weights2, chosen2)  # (T, H)
    for cf in (0.5, 1.0, 1.25, 2.0, 4.0):
        out = capacity_dispatch(x2, experts_tiny, weights2, chosen2, capacity_factor=cf)
        print(
            f"capacity factor {cf:>4}: C = {out.capacity:>3}, dropped {(~out.kept).float().mean():6.1%}, "
            f"equals dropless: {torch.allclose(out.y, dropless, atol=1e-6)}"
        )

# %% [markdown]
# The trade-off: a big capacity factor wastes compute on padding (empty slots are still multiplied), a small one
# drops tokens. A dropless layer avoids the dilemma; in training, a load-balancing loss (notebook 07 — `transformers`
# implements Switch's) keeps the groups from getting too uneven either way.

# %% [markdown]
# > **中文回顧**　分派的三種寫法數值相同，稠密版多花 E/k = 4 倍的 FLOPs；Mixtral 的推論程式碼與 transformers 都是無丟棄。
# > 容量因子限制每個專家的名額，多出來的指派被丟棄；只有兩個指派都被丟棄的 token，才只剩殘差連接。

# %% [markdown]
# ## Recap
#
# - **Dispatch** = route each token's $k$ assignments to their experts, run them, add the weighted results back.
# - Loop (reference), dense-masked ($E/k$ times the FLOPs), sorted/grouped (one sort, contiguous blocks, one GEMM
#   per expert, or one grouped GEMM) — identical numbers.
# - Sparse dispatch spends $Tk \cdot 6HI$ FLOPs per layer instead of $TE \cdot 6HI$: for Mixtral a factor of 4.
# - Mixtral's inference code and `transformers` are **dropless**. Capacity-based MoEs cap each expert at
#   $C = \lceil cf \cdot Tk/E \rceil$ and drop the overflow; the dropped token keeps only its residual.
#
# ## Check your understanding
#
# 1. In the loop version, why do we batch all of an expert's tokens into one call instead of looping over tokens?
#
# <details><summary>Answer</summary>
#
# One call per expert reads the expert's weights once and runs one large matmul on $n_e$ rows, instead of $n_e$
# matrix–vector products that each re-read the weights, plus $n_e$ Python iterations and kernel launches. Same
# FLOPs, far fewer bytes and launches.
#
# </details>
#
# 2. The dense version is $E/k$ times the FLOPs. Why might it still win for very small $T$ on a GPU?
#
# <details><summary>Answer</summary>
#
# With few tokens a GPU is limited by memory traffic and kernel launches, not by FLOPs. Once $T \cdot k \gtrsim E$
# every expert is hit anyway, so both versions read all the weights; the dense version then does its extra FLOPs
# almost for free in a few large batched kernels, with none of the `where`/gather/scatter bookkeeping or the host
# syncs that variable group sizes cause.
#
# </details>
#
# 3. What does `stable=True` in the argsort guarantee, and would the *result* change without it?
#
# <details><summary>Answer</summary>
#
# Equal keys keep their original order: inside each expert's group the assignments stay in token order (the
# printout above shows it). The output would not change mathematically — every assignment still lands on its own
# token's row — at most the float summation order, i.e. rounding in the last bits. Stability makes the grouping
# deterministic, which matters for capacity (who arrives first) and for reproducibility.
#
# </details>
#
# 4. With $T = 4096$, $k = 2$, $E = 8$ and capacity factor 1.0, what is $C$? What is the smallest load imbalance that
#    causes a drop?
#
# <details><summary>Answer</summary>
#
# $C = \lceil 1.0 \cdot 4096 \cdot 2 / 8 \rceil = 1024$, exactly the even share. Any imbalance drops something: one
# expert asked for 1,025 assignments (one more than its share) already loses one.
#
# </details>
#
# 5. A dropped assignment contributes nothing. Why is the token's hidden state still not lost?
#
# <details><summary>Answer</summary>
#
# The block sits on a residual connection, $h \leftarrow h + \mathrm{MoE}(h)$. A dropped assignment only removes one
# term from $\mathrm{MoE}(h)$ (all of it if every assignment of the token is dropped); $h$ itself passes on to the next
# layer unchanged.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex03_sparse_activation.ipynb`: count the tokens per expert (3.1), write the dispatch loop
# (3.2), sort the assignments by expert (3.3) and the grouped dispatch (3.4) — the checkers compare them with
# `moe_edu` on seeded inputs — run your dispatch inside a tiny Mixtral block, and answer an open question on
# dropless vs capacity routing (3.5).
#
# **Next:** [04 · Weighted combining](04_weighted_combining.ipynb) — the weights $w$ we have been using, derived.

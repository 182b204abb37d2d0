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
#    routing (GShard, Switch), compute a capacity and the fraction of dropped assignments, and say what a drop
#    costs a top-2 token (one term of its sum, or — only when both are dropped — everything but the residual);
# 4. follow a batch through the dispatch in a token-flow diagram drawn from a real routing, and see how
#    block-sparse kernels (MegaBlocks) stay dropless on fixed-size tiles.

# %%
import moe_edu
from moe_edu.course.notebook import format_tensor, setup

setup()

import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from moe_edu.block_sparse import block_layout, block_sparse_dispatch, block_topology
from moe_edu.capacity import capacity_dispatch
from moe_edu.course.plots import expert_load_bars, ratio_bars, shared_legend
from moe_edu.course.token_flow import (
    capacity_layout,
    draw_block_topology,
    draw_capacity_overflow,
    draw_token_flow,
    token_flow_layout,
)
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
# The whole journey, drawn from the router's real output for the first 8 tokens (`chosen[:8]`, `weights[:8]`;
# `moe_edu.course.token_flow` computes every position with the library's `sort_by_expert`, nothing is placed by
# hand). Read it left to right:
#
# 1. **tokens** — each token is one row of `x`;
# 2. **router** — its top-2 experts and renormalised weights: two *assignments* per token, in token order;
# 3. **sorted by expert** — the one `argsort`: the coloured lines are the permutation `order`, and the
#    assignments of one expert are now contiguous (tokens in their original order inside each group);
# 4. **one block per expert** — each expert runs once, one matmul on its block of rows; an expert nobody chose
#    does not run at all (sparse activation);
# 5. **un-permute** — each output row goes back to the row of the assignment it came from (`index_add_` with
#    `token`, or the inverse permutation), now multiplied by its weight;
# 6. **combine** — the $k$ weighted outputs of each token are added: $y_t = \sum_j w_{t,j} E_{e_{t,j}}(x_t)$.

# %%
fig = draw_token_flow(chosen[:8], weights[:8], E)
plt.show()
flow = token_flow_layout(chosen[:8], weights[:8], E)
print("rows of each expert's block:", flow.counts, " not run:", [e for e in range(E) if flow.counts[e] == 0])
print(
    "each block has as many rows as assignments routed to that expert:",
    flow.counts == torch.bincount(chosen[:8].reshape(-1), minlength=E).tolist(),
)
print(
    "the blocks' rows are the sorted assignments:",
    flow.order == torch.argsort(chosen[:8].reshape(-1), stable=True).tolist(),
)

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
print(f"dense / grouped time below the FLOP ratio E/k = 4 on this machine: {seconds['dense'] < 4 * seconds['grouped']}")
fig = ratio_bars(
    list(seconds),
    [seconds[n] / seconds["grouped"] for n in seconds],
    ylabel="time / grouped",
    title="measured time, relative to grouped",
    highlight=names.index("grouped"),
)
plt.show()

# %% [markdown]
# The *work* is not machine-dependent: count the FLOPs each version really executes with `torch`'s own counter
# (`torch.utils.flop_counter.FlopCounterMode` adds up every matmul it sees):

# %%
flops = {}
for name in names:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        DISPATCHES[name](x_big, experts_big, w_big, c_big)
    flops[name] = counter.get_total_flops()
print({name: f"{f:,}" for name, f in flops.items()})
T_big, H_big, I_big = x_big.shape[0], cfg.hidden_size, cfg.intermediate_size
print(
    "loop and grouped execute exactly T*k*6HI FLOPs:",
    flops["loop"] == flops["grouped"] == T_big * k * 6 * H_big * I_big,
)
combine_flops = 2 * T_big * E * H_big  # the (T, E) x (E, T, H) weighted sum of the dense version
print(
    f"dense executes E/k = {E // k} times the expert FLOPs, plus its 2*T*E*H combine:",
    flops["dense"] == E // k * flops["grouped"] + combine_flops,
)

# %% [markdown]
# So the dense version does exactly 4 times the arithmetic, and takes several times as long — but the *time* ratio
# printed above is not 4, and it is not the same on every machine. The dense version's one big batched matmul per
# expert runs at a higher FLOP rate than the grouped version's smaller, uneven ones plus its gather and scatter,
# which pulls the ratio below 4 on most CPUs (the line under the timings says whether it did on yours); a CPU with
# a large cache, or a thread count that suits the small matmuls, moves it. On a GPU with few tokens the dense
# version can even win (question 2). The loop is close to grouped on a CPU; on a GPU the gap grows, because the
# loop launches many small kernels and syncs with the host. The library versions are tested equal to each other,
# values and gradients:

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
# slots, so all experts run the same-shaped matmul (good for TPUs and static shapes). An *assignment* that arrives
# after its expert's $C$ slots are full is **dropped**: that expert is not computed for that token, and the term
# $w_{t,j}E_{e}(x_t)$ is simply missing from the token's sum — the other weights are *not* renormalised. Under
# top-2 a token has two assignments, so a drop usually costs it one of them and it keeps the other; only when
# **both** are dropped does the token pass through the layer on its residual connection alone. Which assignments
# win a slot? Here: first choices before second choices, in token order. In plain torch, a running count per
# expert gives every assignment its arrival position:

# %%
capacity_factor = 1.25
C = int(torch.ceil(torch.tensor(capacity_factor * T2 * k / E)))
slot_major = chosen2.t().reshape(-1)  # (k*T,) all first choices, then all second choices
onehot = F.one_hot(slot_major, E)  # (k*T, E)
position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # (k*T,) 0 for the first arrival at an expert, 1, 2, ...
kept = (position < C).reshape(k, T2).t()  # (T, k)
print(f"capacity C = ceil({capacity_factor} * {T2} * {k} / {E}) = {C}")
print(f"dropped assignments: {int((~kept).sum())} of {T2 * k} ({(~kept).float().mean():.1%})")
kept_per_token = kept.sum(-1)  # (T,) 2, 1 or 0 assignments left
cases = {"kept both": 2, "lost one": 1, "lost both": 0}
print("tokens that " + ", ".join(f"{name}: {int((kept_per_token == n).sum())}" for name, n in cases.items()))
print(f"tokens that lost their first choice: {int((~kept[:, 0]).sum())} (first choices queue first)")
print("the three cases cover all tokens:", sum(int((kept_per_token == n).sum()) for n in cases.values()) == T2)
print("one dropped assignment per token that lost one:", int((~kept).sum()) == int((kept_per_token == 1).sum()))

# %% [markdown]
# At this capacity factor every drop cost a token *one* of its two assignments: the counts above (and the check that
# the dropped assignments and the tokens that lost one are equally many) say that no token went through on its
# residual alone. A token that lost its second choice still gets $w_{t,1}E_{e_1}(x_t)$ — its first expert's term at
# its original weight. Tighter capacity produces all three cases. The picture shows the queues of the first 16
# tokens of the same router at capacity factor 0.75, $C = \lceil 0.75 \cdot 16 \cdot 2/8 \rceil = 3$: each
# expert's queue in arrival order (`t5·2` is token 5's second choice), the buffer of $C$ slots, the dropped overflow
# crossed out, and under it how many of its two assignments each token kept. Expert 2, the popular one, drops most;
# a token that kept 0 passes on its residual alone:

# %%
C16 = int(torch.ceil(torch.tensor(0.75 * 16 * k / E)))
fig = draw_capacity_overflow(chosen2[:16], E, C16)
plt.show()
queues = capacity_layout(chosen2[:16], E, C16)
outcomes = queues.outcome_counts()  # {2: tokens that kept both, 1: lost one, 0: lost both}
print(f"C for 16 tokens = {C16};", ", ".join(f"{n} of {k} kept: {c}" for n, c in outcomes.items()))
print("all three cases occur:", all(c > 0 for c in outcomes.values()))
overflow = [max(0, len(q) - C16) for q in queues.queues]  # (E,) dropped assignments per expert
print(f"dropped per expert: {overflow}; the popular expert 2 drops most:", max(overflow) == overflow[2])
slot_major16 = chosen2[:16].t().reshape(-1)  # (k*16,)
onehot16 = F.one_hot(slot_major16, E)  # (k*16, E)
kept16 = ((onehot16.cumsum(0) * onehot16).sum(-1) - 1 < C16).reshape(k, 16).t()  # (16, k) the same recipe as above
print("the drawn queues drop exactly the assignments our running count drops:", queues.kept == kept16.tolist())

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
        n_kept = out.kept.sum(-1)  # (T,)
        print(
            f"capacity factor {cf:>4}: C = {out.capacity:>3}, dropped {(~out.kept).float().mean():6.1%}, "
            f"tokens that lost one {int((n_kept == 1).sum()):>3}, lost both {int((n_kept == 0).sum()):>3}, "
            f"equals dropless: {torch.allclose(out.y, dropless, atol=1e-6)}"
        )
    one = int(torch.nonzero(lib.kept.sum(-1) == 1)[0])  # a token that lost one assignment at factor 1.25
    j = int(lib.kept[one].nonzero())  # the slot it kept
    alone = weights2[one, j] * experts_tiny.expert(int(chosen2[one, j]), x2[one : one + 1])  # (1, H) w * E(x)
    print(f"token {one} lost one assignment; its output is exactly its kept term w*E(x), not renormalised:",
          torch.allclose(lib.y[one : one + 1], alone, atol=1e-6))  # fmt: skip
    low = capacity_dispatch(x2, experts_tiny, weights2, chosen2, capacity_factor=0.5)
    both = low.kept.sum(-1) == 0  # (T,) tokens that lost both at factor 0.5
    print(f"at factor 0.5, {int(both.sum())} tokens lost both; their MoE output is exactly 0 (only the residual):",
          bool(both.any()) and bool((low.y[both] == 0).all()))  # fmt: skip

# %% [markdown]
# The table shows the three cases move with the factor: at 1.25 every unlucky token loses one assignment, at 1.0
# and 0.5 some lose both and leave the layer on their residual alone (the last two lines check both cases against
# the library's output). The trade-off: a big capacity factor wastes compute on padding (empty slots are still
# multiplied), a small one drops assignments, and eventually whole tokens. A dropless layer avoids the dilemma; in training, a load-balancing loss (notebook 07 — `transformers`
# implements Switch's) keeps the groups from getting too uneven either way.
#
# ### Dropless on fixed-size tiles: block-sparse matrices (MegaBlocks)
#
# A GPU kernel likes fixed-size tiles, and a capacity buffer was one way to get them. MegaBlocks (Gale et al.
# 2022, the Mixtral paper's ref. [13]) found another, which "never drops tokens": sort the assignments by expert as
# in §2(c), pad each expert's group only up to a multiple of a block size $b$ (never to a common $C$), and write
# the whole layer as **block-sparse** matrix products. Stack every expert's gate/up weights side by side into one
# $(H, E \cdot 2I)$ matrix; of the product (padded rows) × (stacked weights), only the $b \times b$ blocks where a
# row block and a column block belong to the same expert are non-zero — a block-diagonal pattern whose blocks have
# the height of each expert's load. A block-sparse kernel computes only those. `moe_edu.block_sparse` writes it
# with one batched matmul per row block (a readable stand-in for the GPU kernel), on the same 256 skewed tokens:

# %%
b = 16  # block size (rows and columns) of this demo
lay = block_layout(load, b)
print("assignments per expert:       ", load.tolist())
print(f"rows, padded to multiples of {b}:", lay.padded.tolist())
pad_rows = int((lay.padded - load).sum())
print(f"padding: {pad_rows} rows, below one block per expert (< E*b = {E * b}):", pad_rows < E * b)
C_none = int(load.max())  # the smallest capacity that drops nothing: the busiest expert's load
print(
    f"a capacity layer that drops nothing needs C = {C_none} (factor {C_none * E / (T2 * k):.2f}): "
    f"{E * C_none} slots, {E * C_none - T2 * k} of them padding"
)
topology = block_topology(load, b, 2 * I)  # (R/b, E*2I/b)
print(f"first-layer blocks computed: {int(topology.sum())} of {topology.numel()} ({topology.float().mean():.1%})")
print(
    "each row block meets exactly its own expert's columns (1/E of all blocks):",
    bool((topology.sum(1) == 2 * I // b).all()),
)
print("less padding than the drop-free capacity:", pad_rows < E * C_none - T2 * k)
with torch.no_grad():
    y_blocks = block_sparse_dispatch(x2, experts_tiny, weights2, chosen2, block=b)  # (T, H)
print("block-sparse == dropless grouped:", torch.allclose(y_blocks, dropless, atol=1e-6))
fig = draw_block_topology(load, b, 2 * I)
plt.show()

# %% [markdown]
# Every row block meets only its own expert's 28 column blocks, so the fraction of blocks computed is one
# expert's columns out of $E$ — the sparsity of the layer, without a single dropped assignment and with less
# padding than any capacity that would drop nothing. (The block size is a kernel choice; the bigger it is, the
# more padding per expert, up to $b - 1$ rows.)

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
#   $C = \lceil cf \cdot Tk/E \rceil$ and drop the overflow. A dropped *assignment* is not computed and its term is
#   missing (the other weight is not renormalised); under top-2 the token usually keeps its other expert, and only
#   when both are dropped does the token pass on its residual alone.
# - **Block-sparse** (MegaBlocks): dropless on fixed-size tiles — pad each expert's group to a multiple of the block
#   size only, and compute the block-diagonal non-zero blocks of one big product.
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
# 6. The block-sparse layer above padded 80 rows; a capacity layer that drops nothing needed 432 empty slots. When
#    would the two pad the same, and what does a larger block size $b$ cost?
#
# <details><summary>Answer</summary>
#
# Capacity pads every expert up to the *busiest* expert's load, so its padding is $E\cdot\max_e n_e - Tk$: zero only
# if the load is perfectly even (and then block-sparse pads at most the rounding to $b$). Block-sparse pads each
# expert only to the next multiple of $b$, under $b$ rows each, however uneven the load. A larger $b$ makes bigger,
# faster tiles for the kernel but up to $b-1$ wasted rows per expert — with many small experts or few tokens, that
# padding becomes a real share of the work.
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

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 · Top-k selection: choosing the experts (選擇專家)
#
# > **根據分數選擇前 k 個最相關的專家（通常 k=2 或 3）。僅選中的專家會被激活參與當前輸入的計算。**
# > *"Based on the scores, choose the k most relevant experts (usually k = 2 or 3). Only the chosen experts are
# > activated for the current input."* — the seed, §2
#
# > *"G(x) := Softmax(TopK(x · W_g))"* — Mixtral paper, eq. (2)
#
# > **中文導讀**　路由網路替每個 token 算出 8 個專家的機率後，只保留機率最高的前 k 個專家：Mixtral 用 k = 2，
# > 種子文章說「通常 k=2 或 3」。本章用 `torch.topk` 選出專家，並以三種方法建立 (T, E) 的布林遮罩；比較 k = 1、2、
# > 3 的計算成本（啟用參數）與保留的機率質量。機率完全相同（平手）時選誰由實作決定，bf16 讓平手常見，
# > 需要可重現時可用穩定排序決定。最後看梯度：重新正規化後，沒被選中的專家，其 logit 的梯度為 0，而 k = 1 時路由網路完全收不到梯度。
#
# The router of notebook 01 gives every token a probability for each of the $E$ experts. Now we keep only the best
# $k$. Mixtral uses $k = 2$; the seed says "usually 2 or 3". This notebook makes the choice concrete: `torch.topk`,
# the boolean mask it defines, what $k$ costs and buys, what happens on ties, and — the subtle part — what a hard
# selection does to gradients.
#
# **Learning objectives.** After this notebook you can
#
# 1. use `torch.topk` and turn its indices into a `(T, E)` mask three different ways;
# 2. compare $k = 1, 2, 3$ by cost (active parameters) and by how much router probability they keep;
# 3. explain why ties are implementation-defined and how to break them deterministically;
# 4. say which router logits receive a gradient after top-k — and why Mixtral's $k = 2$ is the smallest $k$ at
#    which a renormalised router can learn at all.

# %%
import moe_edu
from moe_edu.course.notebook import format_tensor, setup

setup()

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

# %% [markdown]
# ## 1. `torch.topk`
#
# We take router probabilities for 5 tokens over $E = 8$ experts (the recipe of notebook 01).

# %%
T, H, E, k = 5, 64, 8, 2
X = torch.randn(T, H)  # (T, H)
W_g = torch.randn(E, H) * 0.3  # (E, H)
logits = X @ W_g.T  # (T, E)
probs = torch.softmax(logits.float(), dim=-1)  # (T, E)
print(format_tensor(probs))

# %% [markdown]
# `torch.topk(probs, k, dim=-1)` returns the $k$ largest values of each row, **sorted in decreasing order**, and
# their positions — the expert ids:

# %%
top_p, top_i = torch.topk(probs, k, dim=-1)  # (T, k), (T, k)
print("top-k probabilities:")
print(format_tensor(top_p))
print("top-k experts:")
print(format_tensor(top_i))

# %% [markdown]
# The same, by hand: sort each row and keep the first $k$. (`topk` is cheaper: it does not sort the rest.)

# %%
sorted_p, sorted_i = torch.sort(probs, dim=-1, descending=True)  # (T, E), (T, E)
print("equal to sort + slice:", torch.equal(sorted_i[:, :k], top_i) and torch.equal(sorted_p[:, :k], top_p))

# %% [markdown]
# ## 2. Masks: which (token, expert) pairs are active
#
# Later steps need the choice in different shapes. The `(T, E)` boolean **mask** has exactly $k$ `True`s per row.
# Three equivalent ways to build it:

# %%
mask_scatter = torch.zeros(T, E, dtype=torch.bool).scatter(1, top_i, True)  # (T, E)
mask_onehot = F.one_hot(top_i, E).sum(dim=1).bool()  # (T, k, E) -> (T, E)
kth = top_p[:, -1:]  # (T, 1) the k-th largest probability of each row
mask_threshold = probs >= kth  # (T, E) (assumes no ties at the k-th place; see section 4)
print(format_tensor(mask_scatter))
print("three masks agree:", torch.equal(mask_scatter, mask_onehot) and torch.equal(mask_scatter, mask_threshold))
print("True per row:", mask_scatter.sum(-1).tolist())

# %% [markdown]
# Applied to the probabilities, the mask gives the **sparse gate matrix**: $k$ non-zeros per row. Sparse activation
# (notebook 03) is nothing more than *not computing* the experts where this matrix is zero.

# %%
gates = probs.masked_fill(~mask_scatter, 0.0)  # (T, E)
print(format_tensor(gates))

# %% [markdown]
# The transposed view — for each expert, which tokens chose it — is what dispatch needs:

# %%
for e in range(E):
    print(f"expert {e}: tokens {torch.where(mask_scatter[:, e])[0].tolist()}")

# %% [markdown]
# ## 3. k = 1, 2, 3: what each costs and keeps
#
# Switch Transformer used $k = 1$; GShard and Mixtral $k = 2$; the seed mentions 3. Two numbers per choice:
#
# - **cost**: active parameters per token (notebook 00's formula, with $k$ changed);
# - **coverage**: how much of the router's probability mass the chosen experts hold before renormalising — how
#   much of "what the router wanted" survives.
#
# For coverage we use a sharper router and more tokens, so the numbers mean something.

# %%
config = moe_edu.PRESETS["mixtral-8x7b"]
X_many = torch.randn(1000, H)  # (T, H)
p_many = torch.softmax(X_many @ (torch.randn(E, H) * 0.3).T, dim=-1)  # (T, E)
print(" k | active params (8x7B) | FLOPs vs k=2 | mean coverage of router mass")
ks = list(range(1, E + 1))
coverage = []
for kk in ks:
    active = moe_edu.count_parameters(config.replace(num_experts_per_tok=kk)).active
    cost = active / moe_edu.count_parameters(config).active
    cov = torch.topk(p_many, kk, dim=-1).values.sum(-1).mean().item()
    coverage.append(cov)
    if kk <= 3 or kk == E:
        print(f"{kk:>2} | {active / 1e9:>17.2f}B | {cost:>11.2f}x | {cov:.4f}")

# %%
actives = [moe_edu.count_parameters(config.replace(num_experts_per_tok=kk)).active / 1e9 for kk in ks]
fig, ax1 = plt.subplots(figsize=(6.4, 3.4))
ax1.plot(ks, actives, "o-", color="#f4a259", label="active parameters (B)")
ax1.set_xlabel("k (experts per token)")
ax1.set_ylabel("active parameters (billions)")
ax2 = ax1.twinx()
ax2.plot(ks, coverage, "s--", color="#219ebc", label="router mass kept")
ax2.set_ylabel("mean router probability kept")
ax2.set_ylim(0, 1.05)
ax1.axvline(2, color="#999999", lw=0.8, ls=":")
ax1.set_title("cost grows linearly in k; the kept probability saturates")
fig.legend(loc="lower right", bbox_to_anchor=(0.88, 0.18), fontsize=8, frameon=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# Cost is linear in $k$ (each extra expert adds $3HI$ parameters per layer), while the router mass kept has
# diminishing returns. Mixtral sets $k = 2$ (the paper states the choice without justifying it); $k = 1$ has a
# further problem, shown in section 5.

# %% [markdown]
# ## 4. Ties
#
# What if two experts have *exactly* the same probability at the $k$-th place? `torch.topk` promises nothing about
# which one it returns — the order of equal elements is implementation-defined and can differ between CPU and GPU
# kernels or between torch versions:

# %%
tied = torch.tensor([[0.1, 0.3, 0.3, 0.3]])  # (1, 4) three-way tie for first place
uniform = torch.full((1, E), 1.0 / E)  # (1, E) a router that has not learned anything yet
picks_tied = torch.topk(tied, 2, dim=-1).indices[0].tolist()
picks_uniform = torch.topk(uniform, 2, dim=-1).indices[0].tolist()

# %% [markdown]
# Which two it picks is exactly the implementation detail that differs between machines, so the next cell is not
# compared by the tests (your picks may differ); the line after it is true everywhere.

# %% tags=["nbval-ignore-output"]
print("topk picks:", picks_tied, "(some two of experts 1, 2, 3)")
print("on a uniform row:", picks_uniform)

# %%
print("two distinct experts from the tied ones:", len(set(picks_tied)) == 2 and set(picks_tied) <= {1, 2, 3})

# %% [markdown]
# In fp32 exact ties are rare (logits are continuous). In **bf16** they are not — bf16 has only 128 values per
# power of two — especially early in training, when the router is nearly uniform and all probabilities sit close
# to $1/E$. Count rows of 1,000 tokens whose 2nd and 3rd probabilities are *equal*, for a router at its
# initialisation (std 0.02, as in `transformers`):

# %%
p_init = torch.softmax(X_many @ (torch.randn(E, H) * 0.02).T, dim=-1)  # (T, E) a freshly initialised router
ties = {}
for name, p in (("fp32", p_init), ("bf16", p_init.bfloat16())):
    s = torch.sort(p.float(), dim=-1, descending=True).values  # (T, E)
    ties[name] = int((s[:, 1] == s[:, 2]).sum())

# %% [markdown]
# The bf16 count depends on the last bits of the fp32 matrix product (your CPU's kernels), so it is not compared
# by the tests; the check below it holds everywhere.

# %% tags=["nbval-ignore-output"]
for name, n in ties.items():
    print(f"{name}: {n:>3} of {len(p_init)} tokens tie for the 2nd place")

# %%
print("no fp32 ties, and more than 1 % of tokens tied in bf16:", ties["fp32"] == 0 and ties["bf16"] > 10)

# %% [markdown]
# That is one more reason to route in fp32 (notebook 01). Where you need determinism — tests, exercises,
# reproducible demos — break ties explicitly, e.g. *lowest expert id wins* with a stable sort:


# %%
def topk_stable(p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k where equal values keep index order (lowest expert id first)."""
    values, indices = torch.sort(p, dim=-1, descending=True, stable=True)  # (T, E), (T, E)
    return values[:, :k], indices[:, :k]  # (T, k), (T, k)


print("stable, tied row:  ", topk_stable(tied, 2)[1].tolist())
print("stable, uniform row:", topk_stable(uniform, 2)[1].tolist())
print("agrees with topk when there are no ties:", torch.equal(topk_stable(probs, k)[1], top_i))

# %% [markdown]
# ## 5. What top-k does to gradients
#
# `topk` returns *values* and *indices*. The indices are integers: no gradient flows through the choice itself. The
# values are ordinary entries of `probs`, so gradient flows into the chosen entries — and from there back into
# **all** logits, because every softmax entry depends on every logit through the normaliser.
#
# Mixtral then **renormalises** the $k$ values to sum to 1 (notebook 04). Watch what that does. We take one token,
# use the weights in a stand-in loss $\sum_i w_i c_i$ (as if $c_i$ were each expert's contribution to the loss), and
# look at the gradient on each logit.


# %%
def logit_grads(k: int, renormalise: bool) -> torch.Tensor:
    l = logits[0].clone().requires_grad_(True)  # (E,)
    p = torch.softmax(l, dim=-1)  # (E,)
    w, _idx = torch.topk(p, k)  # (k,), (k,)
    if renormalise:
        w = w / w.sum()  # (k,)
    c = torch.arange(1.0, k + 1)  # (k,) stand-in for each chosen expert's effect on the loss
    (w * c).sum().backward()
    return l.grad  # (E,)


chosen0 = torch.topk(probs[0], 3).indices.tolist()
print("token 0's experts, best first:", chosen0)
for k_, renorm in ((2, False), (2, True), (1, False), (1, True)):
    g = logit_grads(k_, renorm)
    unchosen = [e for e in range(E) if e not in chosen0[:k_]]
    print(
        f"k={k_}, renormalise={renorm!s:5}: |grad| on chosen {g[chosen0[:k_]].abs().max():.4f}, "
        f"on unchosen {g[unchosen].abs().max():.4f}"
    )

# %% [markdown]
# Read the four lines:
#
# - **Without renormalising**, every logit gets a gradient: lowering an unchosen expert's logit raises the chosen
#   experts' probabilities.
# - **With renormalising**, the $k$ weights are $\mathrm{softmax}$ of the $k$ chosen logits alone (notebook 04
#   proves it), so **unchosen experts get exactly zero gradient**. The router learns only to re-balance the
#   experts it already picked.
# - **$k = 1$ with renormalising** gives a weight that is always exactly 1: *no gradient reaches the router at all*.
#   That is why Switch Transformer ($k = 1$) multiplies by the raw probability instead, and why $k = 2$ is the
#   smallest $k$ for which Mixtral's renormalised router can learn.
#
# The selection itself is a step function. Sweep one logit and watch expert 0's final weight: zero until it enters
# the top-2, then a jump — no gradient can "see" that jump coming.

# %%
sweep = torch.linspace(-4, 6, 201)  # (S,) values for expert 0's logit
row = logits[0].clone()  # (E,)
w0 = []
for v in sweep.tolist():
    row[0] = v
    p = torch.softmax(row, dim=-1)  # (E,)
    w, idx = torch.topk(p, 2)  # (2,), (2,)
    w = w / w.sum()  # (2,)
    w0.append(float(w[idx == 0].sum()))
fig, ax = plt.subplots(figsize=(6.4, 3.0))
ax.plot(sweep.tolist(), w0, color="#f4a259", lw=2)
ax.set_xlabel("logit of expert 0 (others fixed)")
ax.set_ylabel("expert 0's weight after top-2")
ax.set_title("top-k is a step: the weight jumps when the expert enters the top-2")
plt.show()
jump = next(i for i in range(1, len(w0)) if w0[i - 1] == 0.0 and w0[i] > 0.0)
print(f"expert 0 enters the top-2 at logit {sweep[jump]:.2f} with weight {w0[jump]:.4f}")

# %% [markdown]
# ## 6. The library
#
# `moe_edu.softmax_topk(logits, k)` is sections 1 and 5 in one function (softmax in fp32, top-k, renormalise), the
# order `transformers` uses; `moe_edu.TopKRouter` wraps it with the gate matrix.

# %%
lib_w, lib_i = moe_edu.softmax_topk(logits, k)  # (T, k), (T, k)
print("same experts:", torch.equal(lib_i, top_i))
print("same weights:", torch.allclose(lib_w, top_p / top_p.sum(-1, keepdim=True)))

# %% [markdown]
# > **中文回顧**　`torch.topk` 為每個 token 選出前 k 個專家，(T, E) 遮罩每列有 k 個 1；計算成本隨 k 線性成長，Mixtral 用 k = 2。
# > 梯度只經過選中的機率值、不經過索引：重新正規化後只有被選中的 logit 有梯度，k = 1 時路由網路收不到梯度。

# %% [markdown]
# ## Recap
#
# - `torch.topk(probs, k, dim=-1)` → values `(T, k)` sorted high to low, expert ids `(T, k)`.
# - The `(T, E)` mask (scatter / one-hot / threshold) has $k$ ones per row; `probs * mask` is the sparse gate matrix.
# - Cost grows linearly in $k$; kept router probability saturates. Mixtral: $k = 2$.
# - Ties are implementation-defined; bf16 makes them common; a stable sort breaks them deterministically.
# - Gradients flow through the *values*, never the *indices*. After renormalisation only the chosen logits get a
#   gradient, and with $k = 1$ none do.
#
# ## Check your understanding
#
# 1. `top_i` has shape `(T, k)`. What is the shape of `F.one_hot(top_i, E)`, and why do we sum over dim 1?
#
# <details><summary>Answer</summary>
#
# `(T, k, E)`: one one-hot row per chosen slot. Summing over dim 1 (the $k$ slots) merges a token's $k$ one-hot rows
# into one `(T, E)` row with $k$ ones — the experts are distinct, so no entry exceeds 1.
#
# </details>
#
# 2. Why does `probs >= kth` give more than $k$ `True`s in a row with a tie, while the scatter mask never does?
#
# <details><summary>Answer</summary>
#
# The threshold keeps *every* entry equal to the $k$-th largest value, so all tied experts pass. The scatter mask
# writes `True` only at the $k$ indices `topk` returned, exactly $k$ per row, whichever tied expert it picked.
#
# </details>
#
# 3. Going from $k = 2$ to $k = 3$ in Mixtral 8x7B adds how many active parameters? (Hint: one expert, 32 layers.)
#
# <details><summary>Answer</summary>
#
# $32 \times 3 \times 4096 \times 14336$ = 5,637,144,576 ≈ 5.64B: the table's 12.88B becomes 18.52B (1.44× the
# FLOPs).
#
# </details>
#
# 4. With renormalised $k = 2$ weights, can the router ever learn to pick an expert it currently never picks? What
#    else in training could push it there? (Notebook 07 answers this.)
#
# <details><summary>Answer</summary>
#
# Not through the weights: after renormalising, unchosen experts get exactly zero gradient (section 5), so nothing
# raises a never-chosen expert's logit. It can still happen indirectly — the inputs to the router change as the rest
# of the model trains — and directly through an auxiliary loss: the load-balancing loss uses the softmax over *all*
# $E$ experts, so it gives every logit a gradient and pushes probability towards under-used experts. Noisy top-k
# (notebook 09) explores by adding noise to the logits.
#
# </details>
#
# 5. Why does Switch Transformer not renormalise its $k = 1$ weight?
#
# <details><summary>Answer</summary>
#
# A renormalised single weight is always exactly 1, a constant: no gradient reaches the router at all (the last line
# of section 5 shows 0 on every logit). Multiplying the expert's output by the raw probability keeps the gate
# differentiable, so the router learns from how much the chosen expert helped.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex02_topk_selection.ipynb`: build the `(T, E)` top-k mask (2.1) and the renormalised top-k
# weights in float32 (2.2) — the checkers try $k$ = 1, 2, 3 and bf16 logits — count how many tokens each expert gets
# for $k$ = 1, 2, 3, and answer an open question on ties (2.3: what `topk` does with equal values, and when that
# matters).
#
# **Next:** [03 · Sparse activation](03_sparse_activation.ipynb) — running only the chosen experts.

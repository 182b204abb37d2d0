# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 · Weighted combining (加權輸出 / 加權融合)
#
# > **加權輸出：各專家獨立處理數據，最後加權融合結果。**
# > *"Weighted output: each expert processes the data independently, and the results are finally fused with
# > weights."* — the seed, §2
#
# > $$y = \sum_{i=0}^{n-1} \mathrm{Softmax}(\mathrm{Top2}(x \cdot W_g))_i \cdot \mathrm{SwiGLU}_i(x)$$
# > — Mixtral paper, eq. (3)
#
# > **中文導讀**　被選中的專家各自輸出一個向量，這一層的輸出是它們的加權總和（加權融合）。權重有兩種寫法：
# > 先對全部專家做 softmax、取前 k 個再重新正規化（transformers 的做法），
# > 或先取前 k 個 logit 再做 softmax（論文公式與 Mistral 的程式碼），本章證明兩者完全相等。
# > k = 2 時權重只取決於兩個 logit 的差，正是這個差的 sigmoid，輸出落在兩個專家輸出之間的線段上；
# > k = E 時則變成所有專家都參與的稠密混合（類似集成學習）。
#
# Each chosen expert returns a vector; the layer returns their **weighted sum**. This notebook pins down the
# weights. There are two ways to write them — *softmax, then top-k, then renormalise* (what `transformers` does)
# and *top-k of the logits, then softmax* (what the paper's formula and Mistral's reference code do) — and we prove
# they are the same. Then we look at the two extremes: $k = E$ (every expert, a dense mixture) and what the weights
# look like for Mixtral's $k = 2$.
#
# **Learning objectives.** After this notebook you can
#
# 1. compute renormalised top-k weights and say why they sum to 1;
# 2. prove that softmax → top-k → renormalise equals top-k → softmax, and check it numerically;
# 3. show that $k = E$ turns the sparse layer into a dense (soft-gated) mixture of experts;
# 4. explain 加權融合 geometrically: the output is a convex combination of the chosen experts' outputs, and for
#    $k = 2$ the split is a sigmoid of the logit gap.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import matplotlib.pyplot as plt
import torch

from moe_edu.dispatch import DISPATCHES
from moe_edu.experts import Experts

# %% [markdown]
# ## 1. Renormalised top-k weights
#
# From notebook 02: probabilities over all $E$ experts, keep the $k$ largest. Those $k$ numbers do not sum to 1 —
# they hold only part of the router's mass — so Mixtral divides by their sum:
#
# $$w_{t,j} = \frac{p_{t,i_j}}{\sum_{j'=1}^{k} p_{t,i_{j'}}}, \qquad \sum_j w_{t,j} = 1.$$

# %%
T, H, E, k = 6, 64, 8, 2
X = torch.randn(T, H)  # (T, H)
W_g = torch.randn(E, H) * 0.3  # (E, H)
logits = X @ W_g.T  # (T, E)

probs = torch.softmax(logits, dim=-1)  # (T, E)
top_p, top_i = torch.topk(probs, k, dim=-1)  # (T, k), (T, k)
w_renorm = top_p / top_p.sum(-1, keepdim=True)  # (T, k)
print("kept mass before:", [f"{s:.3f}" for s in top_p.sum(-1).tolist()])
print("weights after:   ", [[round(v, 4) for v in row] for row in w_renorm.tolist()])
print("sums after:      ", [f"{s:.4f}" for s in w_renorm.sum(-1).tolist()])

# %% [markdown]
# Without renormalising, the output of a token whose router is unsure (mass spread over many experts) would be
# *shrunk* towards zero — its scale would depend on the router's confidence. Renormalising makes the block's output
# a proper average of the chosen experts. (Not every MoE does this: Switch Transformer's $k = 1$ uses the raw
# probability, see notebook 02; some later models make it a config flag, `norm_topk_prob`.)

# %% [markdown]
# ## 2. Two orders, one answer — the proof
#
# **Claim.** For logits $l \in \mathbb{R}^E$, let $S$ be the index set of the $k$ largest logits. Then
#
# $$\underbrace{\frac{\mathrm{softmax}(l)_i}{\sum_{j \in S} \mathrm{softmax}(l)_j}}_{\text{softmax} \to \text{top-}k
# \to \text{renormalise}} \;=\; \underbrace{\mathrm{softmax}(l_S)_i}_{\text{top-}k \to \text{softmax}}
# \qquad \text{for every } i \in S.$$
#
# **Proof.**
#
# 1. *Same experts.* $\exp$ is strictly increasing and every softmax entry has the same denominator
#    $Z = \sum_{j=1}^{E} e^{l_j}$, so $\mathrm{softmax}(l)_i > \mathrm{softmax}(l)_j \iff l_i > l_j$. The $k$
#    largest probabilities sit at the $k$ largest logits: both orders choose the same set $S$.
# 2. *Same weights.* For $i \in S$,
#    $$\frac{e^{l_i}/Z}{\sum_{j \in S} e^{l_j}/Z} = \frac{e^{l_i}}{\sum_{j \in S} e^{l_j}} = \mathrm{softmax}(l_S)_i,$$
#    because $Z$ cancels. $\blacksquare$
#
# The unchosen logits disappear from the weights entirely — which is also why they get no gradient (notebook 02).
# (With ties at the $k$-th place, "the set $S$" is whatever the tie-break picks; both orders agree as long as they
# break ties the same way.)

# %% [markdown]
# **The numeric check** — on 10,000 tokens, in float32:

# %%
L = torch.randn(10_000, E) * 2.0  # (T, E) logits of a fairly confident router

p_all = torch.softmax(L, dim=-1)  # (T, E) order A: softmax over all experts ...
a_val, a_idx = torch.topk(p_all, k, dim=-1)  # (T, k) ... top-k ...
a_w = a_val / a_val.sum(-1, keepdim=True)  # (T, k) ... renormalise

b_logit, b_idx = torch.topk(L, k, dim=-1)  # (T, k) order B: top-k of the logits ...
b_w = torch.softmax(b_logit, dim=-1)  # (T, k) ... softmax over those k

print("same experts chosen:", torch.equal(a_idx, b_idx))
err = (a_w - b_w).abs().max().item()
print(f"max |weight difference| < 1e-6: {err < 1e-6}  (what is left is float32 rounding)")

# %% [markdown]
# Order B is also cheaper (a softmax over $k$ numbers instead of $E$) and needs no extra division. The library has
# both, `moe_edu.softmax_topk` (transformers' order) and `moe_edu.topk_softmax` (Mistral's), tested equal:

# %%
lw_a, li_a = moe_edu.softmax_topk(L, k)  # (T, k), (T, k)
lw_b, li_b = moe_edu.topk_softmax(L, k)  # (T, k), (T, k)
print("library, same experts:", torch.equal(li_a, li_b), "| same weights:", torch.allclose(lw_a, lw_b, atol=1e-6))
print("library == ours:", torch.equal(li_a, a_idx) and torch.allclose(lw_a, a_w))

# %% [markdown]
# ## 3. For k = 2 the split is a sigmoid of the logit gap
#
# With two experts, order B gives $w_1 = \frac{e^{l_1}}{e^{l_1} + e^{l_2}} = \sigma(l_1 - l_2)$: **only the gap
# between the two chosen logits matters.** Equal logits → a 50/50 average; a gap of 2 → about 88/12.

# %%
gap = b_logit[:, 0] - b_logit[:, 1]  # (T,) first minus second chosen logit, >= 0
print("w_1 == sigmoid(l_1 - l_2):", torch.allclose(b_w[:, 0], torch.sigmoid(gap), atol=1e-6))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
g = torch.linspace(0, 6, 100)
axes[0].plot(g.tolist(), torch.sigmoid(g).tolist(), color="#f4a259", lw=2)
axes[0].set_xlabel("logit gap  l1 - l2")
axes[0].set_ylabel("weight of the first expert")
axes[0].set_title("k = 2: w1 = sigmoid(l1 - l2)")
axes[1].hist(b_w[:, 0].tolist(), bins=40, range=(0.5, 1.0), color="#219ebc", edgecolor="white")
axes[1].set_xlabel("weight of the first expert")
axes[1].set_ylabel("tokens")
axes[1].set_title("over 10,000 tokens")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. 加權融合 — the weighted sum, in plain torch
#
# Now the combining itself. Tiny experts, the weights of section 1, and for each token
# $y_t = \sum_{j} w_{t,j}\, E_{i_{t,j}}(x_t)$, written as directly as possible:

# %%
I = 224
experts = Experts(E, H, I)
torch.nn.init.normal_(experts.gate_up_proj, std=0.05)
torch.nn.init.normal_(experts.down_proj, std=0.05)

with torch.no_grad():
    y = torch.zeros(T, H)  # (T, H)
    for t in range(T):
        for j in range(k):
            e = int(top_i[t, j])
            y[t] += w_renorm[t, j] * experts.expert(e, X[t : t + 1])[0]  # (H,)
    y_lib = DISPATCHES["grouped"](X, experts, w_renorm, top_i)  # (T, H)
print("plain double loop == library dispatch:", torch.allclose(y, y_lib, atol=1e-6))

# %% [markdown]
# Because the weights are non-negative and sum to 1, $y_t$ is a **convex combination**: it lies on the segment
# between the two chosen experts' outputs, at the point the weights say. A picture of one token, projected to 2-D
# (any linear projection keeps convex combinations convex):

# %%
with torch.no_grad():
    outs = experts.dense(X[:1])[:, 0]  # (E, H) every expert's answer for token 0
    centred = outs - outs.mean(0)  # (E, H)
    _, _, V = torch.linalg.svd(centred, full_matrices=False)  # (E, H)
    proj = V[:2].T  # (H, 2) the 2-D view that shows the experts' spread best
    pts = (outs @ proj).tolist()  # (E, 2)
    y0 = (y[0] @ proj).tolist()  # (2,)
    y_dense = (torch.softmax(logits[0], -1) @ outs @ proj).tolist()  # (2,) k = E: all experts, all weights

from moe_edu.course.palette import EXPERT_PALETTE
from moe_edu.course.plots import legend_outside

fig, ax = plt.subplots(figsize=(5.6, 4.2))
chosen0 = top_i[0].tolist()
for e, (px, py) in enumerate(pts):  # each expert in its course colour; names and weights in the legend
    on = e in chosen0
    label = f"E{e}" + (f"  chosen, w = {w_renorm[0, chosen0.index(e)]:.2f}" if on else "")
    size, edge = (110, 1.8) if on else (45, 0.6)
    ax.scatter(px, py, s=size, color=EXPERT_PALETTE[e], edgecolor="#333333", lw=edge, zorder=3, label=label)
a, b = (pts[i] for i in chosen0)
ax.plot([a[0], b[0]], [a[1], b[1]], color="#333333", lw=1.2, ls="--", zorder=2)
ax.scatter(*y0, marker="*", s=220, color="#c0392b", zorder=4, label="y, top-2 (Mixtral)")
ax.scatter(*y_dense, marker="P", s=120, color="#023047", zorder=4, label="y, k = E (dense mixture)")
ax.set_title("token 0: the output is a weighted average of expert outputs")
legend_outside(ax)
ax.margins(0.12)  # no marker on the frame
ax.set_xticks([])
ax.set_yticks([])
plt.show()

# %% [markdown]
# ## 5. k = E: the dense mixture of experts
#
# Set $k = E$. Top-$E$ keeps everything, renormalising divides by 1, and the layer becomes
# $y = \sum_{e=1}^{E} \mathrm{softmax}(l)_e\, E_e(x)$ — the classic dense, soft-gated mixture of experts (Jacobs et
# al., 1991) and the seed's 集成學習 (ensemble) view: every expert votes, weighted by the gate. Sparse MoE is this
# sum with all but $k$ terms dropped. (Not to be confused with *Soft MoE*, Puigcerver et al. 2023: there the name
# means something else — every expert slot processes a weighted average of tokens.)

# %%
w_all, i_all = moe_edu.softmax_topk(logits, E)  # (T, E), (T, E)
with torch.no_grad():
    y_sparse_kE = DISPATCHES["grouped"](X, experts, w_all, i_all)  # (T, H) the sparse code with k = E
    y_soft = torch.einsum("te,eth->th", torch.softmax(logits, -1), experts.dense(X))  # (T, H) soft mixture
print(
    "renormalised top-E weights == softmax:",
    torch.allclose(torch.zeros(T, E).scatter(1, i_all, w_all), torch.softmax(logits, -1), atol=1e-6),
)
print("sparse block with k = E == dense soft mixture:", torch.allclose(y_sparse_kE, y_soft, atol=1e-6))

# %% [markdown]
# How far is Mixtral's $k = 2$ output from the dense mixture? It depends on how much mass the top two hold:

# %%
with torch.no_grad():
    for kk in (1, 2, 3, 4, E):
        wk, ik = moe_edu.softmax_topk(logits, kk)  # (T, kk), (T, kk)
        yk = DISPATCHES["grouped"](X, experts, wk, ik)  # (T, H)
        rel = ((yk - y_soft).norm(dim=-1) / y_soft.norm(dim=-1)).mean()
        print(f"k = {kk}: mean relative distance to the dense mixture {rel:.3f}")

# %% [markdown]
# The sparse output is *not* an approximation the model tries to keep close to the dense one: a model trained with
# top-2 routing learns experts that are useful in pairs. (The paper does not publish how Mixtral was trained; what
# is documented is that it routes with $k = 2$.) The table just shows how different the two layers are for an
# untrained router.

# %% [markdown]
# ## 6. The library block uses either order
#
# `moe_edu.SparseMoeBlock(config, routing_order=...)` accepts both orders; the outputs agree.

# %%
cfg = moe_edu.PRESETS["tiny"]
block_a = moe_edu.SparseMoeBlock(cfg, routing_order="softmax_topk")
block_b = moe_edu.SparseMoeBlock(cfg, routing_order="topk_softmax")
block_b.load_state_dict(block_a.state_dict())
x_in = torch.randn(2, 5, cfg.hidden_size)  # (B, T, H)
with torch.no_grad():
    ya, _ = block_a(x_in)  # (B, T, H)
    yb, _ = block_b(x_in)  # (B, T, H)
print("softmax->top-k->renorm block == top-k->softmax block:", torch.allclose(ya, yb, atol=1e-6))

# %% [markdown]
# > **中文回顧**　先 softmax、取前 k 個再重新正規化，和先取前 k 個 logit 再 softmax 完全相等：輸出是被選中專家輸出的加權融合，權重加總為 1。
# > k = 2 時權重是兩個 logit 之差的 sigmoid；k = E 時就是所有專家都參與的稠密混合。

# %% [markdown]
# ## Recap
#
# - Mixtral's weights: top-$k$ of the softmax, **renormalised** to sum to 1 — a convex combination of $k$ experts.
# - softmax → top-k → renormalise **=** top-k → softmax: same experts (softmax preserves order), same weights (the
#   normaliser $Z$ cancels). Checked to float32 rounding.
# - For $k = 2$: $w_1 = \sigma(l_1 - l_2)$; only the gap between the two chosen logits matters.
# - $k = E$ gives the dense (soft-gated) mixture $\sum_e \mathrm{softmax}(l)_e E_e(x)$: sparse MoE = that sum with
#   all but $k$ terms skipped.
#
# ## Check your understanding
#
# 1. Where exactly in the proof do we use that $\exp$ is increasing? Would the claim hold for any positive
#    function $f$ in place of $\exp$?
#
# <details><summary>Answer</summary>
#
# Only in step 1 (same experts): because $\exp$ is strictly increasing, the $k$ largest probabilities sit at the
# $k$ largest logits. Step 2 (the normaliser cancels) works for any positive $f$. So the claim holds for any positive,
# strictly increasing $f$; for a positive $f$ that is not increasing, "top-k of the logits" and "top-k of $f$" can
# pick different experts.
#
# </details>
#
# 2. Adding 3.0 to *all* logits of a token: what happens to the chosen experts and to their weights?
#
# <details><summary>Answer</summary>
#
# Nothing. The order of the logits is unchanged, so the same experts are chosen, and softmax is shift-invariant
# (for $k = 2$: the gap $l_1 - l_2$ is unchanged), so the weights are identical.
#
# </details>
#
# 3. A token's two chosen logits are 1.2 and 1.2. Its other six are $-5$. What are the weights? What if the other
#    six were 1.1?
#
# <details><summary>Answer</summary>
#
# 0.5 and 0.5 in both cases: $w_1 = \sigma(1.2 - 1.2) = 0.5$, and the unchosen logits drop out of the weights
# entirely. What changes is the mass kept before renormalising: almost 1 in the first case, only
# $2e^{1.2}/(2e^{1.2} + 6e^{1.1}) \approx 0.27$ in the second.
#
# </details>
#
# 4. With $k = 2$, the output always lies on a segment between two points. Where does it lie with $k = 3$?
#
# <details><summary>Answer</summary>
#
# In the triangle spanned by the three chosen experts' outputs (their convex hull): the weights are non-negative and
# sum to 1, so the output is a convex combination of three points.
#
# </details>
#
# 5. Why is order B (top-k → softmax) cheaper, and why might a library still use order A?
#
# <details><summary>Answer</summary>
#
# Order B exponentiates and normalises only $k$ numbers and needs no extra division. Order A computes the softmax
# over all $E$ experts, which a library often needs anyway: the load-balancing loss uses the full probabilities
# $P_e$, and models that do *not* renormalise (e.g. a `norm_topk_prob=False` flag, DeepSeekMoE) need the raw top-k
# probabilities — one code path serves both.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex04_weighted_combining.ipynb`: write the top-k → softmax order (4.1), a `same_routing`
# function that checks two routings agree (4.2, used to verify the order identity), and the weighted combination
# of expert outputs (4.3) — the checkers compare them with `moe_edu` — see $k = E$ give the dense mixture, and answer
# an open question on why Mixtral renormalises (4.4).
#
# **Next:** [05 · The Mixtral SMoE block](05_mixtral_smoe_block.ipynb) — putting it all together.

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 · Gating: the router network (路由網絡)
#
# > **路由網絡（Gating Network）：使用前饋神經網路計算專家權重，動態選擇適合的專家。**
# > *"The gating network uses a feed-forward network to compute expert weights and dynamically picks suitable
# > experts."* — the seed, §2
#
# > *"The output of the MoE module for a given input x is determined by the weighted sum of the outputs of the
# > expert networks, where the weights are given by the gating network's output."* — Mixtral paper, §2.1
#
# > **中文導讀**　Mixtral 的路由網路（門控網路）只是一個沒有偏差項的線性層：每個 token 乘上權重矩陣 $W_g$，
# > 得到 8 個專家各一個相關性分數（logit），再經 softmax 變成機率。本章說明為什麼不需要偏差項、
# > softmax 的兩個性質（每列加總為 1、整列加上同一常數不變），以及 bf16 精度會讓約 0.5% 的 token 換了專家：
# > 在 fp32 計算 logit 可去掉累加誤差，而只把 softmax 改成 fp32 不會改變選到哪些專家。
# > 最後用熱圖與溫度觀察路由有多「果斷」。
#
# In Mixtral the "feed-forward network" of the gate is as small as it can be: **one matrix, no bias**. This notebook
# builds it, looks at what it outputs, and explains two details that matter in practice: the precision of the
# router (fp32 logits are not the same thing as an fp32 softmax), and the scale of the router's weights, which acts
# like a temperature.
#
# **Learning objectives.** After this notebook you can
#
# 1. write Mixtral's router in one line of torch and say why it has no bias;
# 2. turn logits into probabilities and state two properties of softmax that the next notebooks rely on;
# 3. explain — with a measured example — how bf16 changes the router's choices, and why computing the *logits* in
#    fp32 helps while an fp32 *softmax* alone cannot change which experts are chosen;
# 4. read a heatmap of router probabilities;
# 5. predict how a temperature (or the size of the router's weights) sharpens or flattens the routing.

# %%
import moe_edu
from moe_edu.course.notebook import format_tensor, setup

setup()

import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from moe_edu.course.palette import expert_colors
from moe_edu.course.plots import router_heatmap

# %% [markdown]
# ## 1. The router is a bias-free linear layer
#
# For a batch of $T$ token vectors $x_t \in \mathbb{R}^H$ and $E$ experts, the router has a single weight matrix
# $W_g \in \mathbb{R}^{E \times H}$ and computes one **logit** (相關性分數, relevance score) per expert:
#
# $$\text{logits} = X W_g^\top \in \mathbb{R}^{T \times E}.$$
#
# Row $e$ of $W_g$ is a learned "key" for expert $e$: the logit is the dot product of the token with that key.
# We use the course's tiny width ($H = 64$) and Mixtral's $E = 8$.

# %%
T, H, E = 6, 64, 8
X = torch.randn(T, H)  # (T, H) six token vectors
W_g = torch.randn(E, H) * 0.3  # (E, H) one row ("key") per expert

logits = X @ W_g.T  # (T, E)
print("logits shape:", tuple(logits.shape))
print(format_tensor(logits))

# %% [markdown]
# That is exactly `nn.Linear(H, E, bias=False)` — the module `transformers` and `moe_edu` use:

# %%
gate = torch.nn.Linear(H, E, bias=False)
with torch.no_grad():
    gate.weight.copy_(W_g)
print("nn.Linear(bias=False) equals X @ W_g.T:", torch.equal(gate(X), logits))

# %% [markdown]
# **Why no bias?** A bias $b_e$ would add the same constant to expert $e$'s logit for *every* token: a fixed
# preference that has nothing to do with the input. The whole point of a router is the opposite — 動態路由 (dynamic
# routing): the choice should depend on the token. The RMSNorm before the block cannot supply one either: it has a
# learned scale but no shift. A fixed preference can still arise from the data — hidden states are not centred, so a
# direction shared by all tokens gives each expert a roughly constant offset through $W_g$ — but there is no
# parameter for it. And a bias added to *all* experts equally does nothing at all, as the next section shows.
#
# The one place a per-expert bias earns its keep is load balancing: DeepSeek-V3 (2024) adds a bias to each expert's
# score **for selection only** (the combine weights ignore it), raising it for under-loaded experts and lowering it
# for over-loaded ones, instead of an auxiliary loss.

# %% [markdown]
# ## 2. From logits to probabilities: softmax
#
# $$p_{t,e} = \frac{\exp(\text{logit}_{t,e})}{\sum_{j=1}^{E} \exp(\text{logit}_{t,j})}$$
#
# Two properties we will use again and again:
#
# - every row is a probability distribution: entries in $(0, 1)$ that sum to 1;
# - adding the same constant $c$ to every logit of a row changes nothing ($e^{l+c} = e^c e^l$, and $e^c$ cancels).

# %%
probs = torch.softmax(logits, dim=-1)  # (T, E)
print("row sums:", [f"{s:.4f}" for s in probs.sum(-1).tolist()])
print("shift-invariant:", torch.allclose(torch.softmax(logits + 5.0, dim=-1), probs))
print("token 0:", [f"{p:.3f}" for p in probs[0].tolist()])

# %% [markdown]
# ## 3. Router precision: fp32 logits vs an fp32 softmax
#
# Large models run in **bfloat16**: 8 exponent bits (the range of fp32) but only **8 significant bits** — about
# 2–3 decimal digits. That is fine for activations, whose errors average out, but the router makes a *discrete*
# decision from small differences between logits. Switch Transformer (Fedus et al., 2021) introduced *selective
# precision* for **training stability**: it casts the router's input to float32 so that the softmax's exponentials,
# which amplify rounding errors, are computed in float32, and casts the result back. Two different things are
# called "an fp32 router":
#
# - **an fp32 softmax** — `transformers`' Mixtral computes the logits in the model's dtype (`F.linear` in bf16) and
#   only then `softmax(router_logits.float())`. Softmax is monotone (a larger logit always gets a larger
#   probability), so an fp32 softmax **cannot change which experts are chosen**: the choice is already fixed by the
#   bf16 logits. It makes the weights accurate and makes them sum to 1.
# - **fp32 logits** — `moe_edu.TopKRouter` (`fp32=True`) casts the input and $W_g$ to fp32 *before* the matmul, so
#   the logits are accumulated and rounded in fp32. The inputs are still whatever the model feeds in (bf16 hidden
#   states in a bf16 model).
#
# First, what bf16 can represent: between 0.25 and 0.5 the gap between neighbouring bf16 numbers is $2^{-9} \approx 0.002$.

# %%
for value in (0.3335, 0.3340, 0.3345):
    print(f"{value} -> bf16 {torch.tensor(value).bfloat16().item():.6f}")
print("bf16 spacing in [0.25, 0.5):", 2.0 ** (math.floor(math.log2(0.35)) - 7))

# %% [markdown]
# Three different probabilities, one bf16 number. Now a realistic case: Mixtral's width $H = 4096$, a trained-like
# router, 2,000 tokens. We compute the logits once in fp32 and once in bf16 (inputs and weights rounded to bf16, as
# in a bf16 model) and ask: how often does the **choice of the top-2 experts** change?

# %%
H_big, T_big = 4096, 2000
X_big = torch.randn(T_big, H_big)  # (T, H)
W_big = torch.randn(E, H_big) / math.sqrt(H_big)  # (E, H) logits of order 1
logits32 = X_big @ W_big.T  # (T, E)
logits16 = X_big.bfloat16() @ W_big.bfloat16().T  # (T, E) in bf16
top32 = torch.topk(logits32, 2, dim=-1).indices.sort(-1).values  # (T, 2)
top16 = torch.topk(logits16.float(), 2, dim=-1).indices.sort(-1).values  # (T, 2)
changed = (top32 != top16).any(-1)  # (T,)
p16 = torch.softmax(logits16, dim=-1)  # (T, E) softmax computed in bf16
off = (p16.float().sum(-1) - 1).abs() > 1e-3  # (T,) rows whose bf16 probabilities miss 1
rate = changed.float().mean().item()

# %% [markdown]
# The exact counts depend on your CPU's bf16 kernels (how they round and accumulate), so the next cell is not
# compared by the tests and your numbers will differ a little; the line after it holds on every machine.

# %% tags=["nbval-ignore-output"]
print(f"max |logit error| in bf16: {(logits16.float() - logits32).abs().max():.3f}")
print(f"tokens whose top-2 experts change: {int(changed.sum())} of {T_big} ({rate:.1%})")
print(f"bf16 softmax rows that do not sum to 1 (|sum-1| > 1e-3): {int(off.sum())} of {T_big}")

# %%
print("0.1 % < tokens whose top-2 changes < 2 %:", 0.001 < rate < 0.02)
print("10 % < bf16 softmax rows off by more than 1e-3 < 40 %:", 0.10 < off.float().mean().item() < 0.40)

# %% [markdown]
# About half a percent of tokens go to a different expert only because of rounding. Two sources are mixed in that
# number: rounding the inputs and weights to bf16, and accumulating and rounding the logits in bf16. fp32 logits
# remove the second; the first is the price of a bf16 model and stays. An fp32 softmax on top of bf16 logits removes
# neither — it only fixes the rows that do not sum to 1. Half a percent sounds small, but it happens independently
# in each of Mixtral's 32 layers, on every forward pass, and differently on different hardware:

# %% tags=["nbval-ignore-output"]
print(
    f"P(a token's routing differs in at least one of 32 layers) = 1 - (1 - {rate:.4f})^32 = {1 - (1 - rate) ** 32:.1%}"
)

# %%
print(
    "at 0.1 % to 2 % per layer, 3 % to 48 % of tokens differ somewhere in 32 layers:",
    0.03 < 1 - (1 - rate) ** 32 < 0.48,
)

# %% [markdown]
# During training that is noise in a discrete decision; computing the logits in fp32 removes the part caused by
# bf16 accumulation, at a negligible cost ($E \times H$ is tiny next to the experts). The router's weights can stay
# in bf16 storage; what matters is the precision of the *computation*.

# %% [markdown]
# ## 4. A picture: router probabilities for a batch of tokens
#
# Random tokens make a boring picture. Real hidden states are *structured*: tokens of the same kind (code, maths,
# French …) lie close together. We fake that with three clusters of token vectors and look at how one router
# distributes them. Each row is one token; the blue frames mark its top-2 experts (next notebook's subject).

# %%
words = [
    "def",
    "return",
    "import",
    "lambda",  # "code"
    "sum",
    "integral",
    "pi",
    "sqrt",  # "maths"
    "le",
    "chat",
    "est",
    "noir",
]  # "French"
centres = torch.randn(3, H) * 1.0  # (3, H) one centre per domain
X_words = centres.repeat_interleave(4, dim=0) + 0.6 * torch.randn(len(words), H)  # (12, H)
router = torch.randn(E, H) * 0.15  # (E, H)
p_words = torch.softmax((X_words @ router.T).float(), dim=-1)  # (12, E)
chosen = torch.topk(p_words, 2, dim=-1).indices  # (12, 2)
fig = router_heatmap(p_words, tokens=words, chosen=chosen, title="router probabilities (structured tokens)")
plt.show()

# %% [markdown]
# Mostly, tokens of one "domain" get similar rows and share experts. Nothing here was trained — a random router
# already maps similar inputs to similar distributions, because the logits are linear in the input. But look for
# the exceptions, which the next cell lists: a token's first choice is not always its cluster's usual one.

# %%
clusters = {"code": range(0, 4), "maths": range(4, 8), "French": range(8, 12)}
first = chosen[:, 0].tolist()  # (12,) first choices
usual = {}
for name, rows in clusters.items():
    firsts = [first[i] for i in rows]
    usual[name] = max(sorted(set(firsts)), key=firsts.count)  # the cluster's most common first choice
    odd = [f"{words[i]!r} -> e{first[i]} ({p_words[i, first[i]]:.2f})" for i in rows if first[i] != usual[name]]
    print(f"{name:6s}: first choices {firsts}, most often e{usual[name]}; exceptions: {', '.join(odd) or 'none'}")
french_shared = set.intersection(*(set(chosen[i].tolist()) for i in clusters["French"]))
print("expert in every French token's top-2:", sorted(french_shared))
print(
    "'chat' (French) goes first to the code cluster's usual expert:",
    first[words.index("chat")] == usual["code"] != usual["French"],
)

# %% [markdown]
# Every code token goes first to e4 and three of the four maths tokens to e1, but "pi" goes first to e2 (e1 is its
# second choice), and the French cluster is split: "chat" goes first to e4 — the *code* cluster's expert — with
# 0.69, although every French token still has e0 among its top 2. **Linear routing is not clustering.** The router
# does not ask "which centre is this token near?"; it scores the token against $E$ fixed directions (the rows of
# $W_g$) and picks the largest dot products. A token's own offset from its centre (here the 0.6-scaled noise) can
# point along another expert's direction, and then it goes there, whatever its neighbours do. Nearby inputs give
# nearby probabilities, but "nearby" is measured in the router's 8 directions, not by cluster membership.
# Whether *trained* Mixtral experts specialise by domain is a different question (surprisingly, mostly not: the
# paper's §5 finds no obvious topic specialisation, and routing that looks aligned with syntax; notebook 08
# repeats that analysis).

# %% [markdown]
# ## 5. Temperature: how peaked is the routing?
#
# Dividing the logits by a temperature $\tau$ before the softmax sharpens ($\tau < 1$) or flattens ($\tau > 1$) the
# distribution. Mixtral has no explicit $\tau$, but it does not need one: scaling $W_g$ by $1/\tau$ is the same
# thing, so **the norm of the router's weights is a learned inverse temperature**.

# %%
temps = [0.25, 1.0, 4.0]
fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharey=True)
for ax, tau in zip(axes, temps, strict=False):
    p = torch.softmax(logits[0] / tau, dim=-1)  # (E,)
    ax.bar(range(E), p.tolist(), color=expert_colors(E), edgecolor="#333333")  # expert e: its course colour
    ax.set_title(f"tau = {tau}")
    ax.set_xticks(range(E), [f"e{e}" for e in range(E)], fontsize=8)
axes[0].set_ylabel("probability")
fig.tight_layout()
plt.show()

# %% [markdown]
# The entropy $-\sum_e p_e \log p_e$ measures it in one number: $\log E = 2.0794$ for a uniform router, 0 for a
# one-hot one.


# %%
def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)  # (T,)


for tau in (0.1, 0.25, 1.0, 4.0, 100.0):
    print(f"tau = {tau:>5}: mean entropy {entropy(torch.softmax(logits / tau, dim=-1)).mean():.4f}")
print(f"log E = {math.log(E):.4f}")

# %% [markdown]
# **At initialisation the router is nearly uniform.** `transformers` initialises every weight with std 0.02. With
# unit-size inputs the logits are then tiny, the probabilities all close to $1/8$, and the choice of experts is
# almost random — the router has to *learn* to be decisive. That is one reason MoE training needs the
# load-balancing loss of notebook 07.

# %%
W_init = torch.randn(E, H) * 0.02  # (E, H) transformers' initialisation
p_init = torch.softmax(X @ W_init.T, dim=-1)  # (T, E)
print(
    f"at init: probabilities in [{p_init.min():.3f}, {p_init.max():.3f}], "
    f"mean entropy {entropy(p_init).mean():.4f} (uniform: {math.log(E):.4f})"
)

# %% [markdown]
# ## 6. The same router in `moe_edu`
#
# `moe_edu.TopKRouter` is this notebook in one module: a bias-free `(E, H)` weight, logits in fp32, softmax in fp32,
# then top-k (notebook 02) and renormalisation (notebook 04). It returns `(logits, weights, experts)`.
# We load our $W_g$ into it and compare.

# %%
lib_router = moe_edu.TopKRouter(hidden_size=H, num_experts=E, top_k=2)
with torch.no_grad():
    lib_router.weight.copy_(W_g)
lib = lib_router(X)  # a Routing
lib_logits, lib_weights, lib_experts = lib.logits, lib.weights, lib.expert_ids  # (T, E), (T, 2), (T, 2)
print(lib_router)
print("logits equal:", torch.allclose(lib_logits, logits))
print("logits dtype:", lib_logits.dtype, "| weights dtype:", lib_weights.dtype)
print("experts of token 0:", lib_experts[0].tolist(), "weights:", [f"{w:.4f}" for w in lib_weights[0].tolist()])

# %% [markdown]
# Inside a full Mixtral block the router is the `gate` attribute — the same name `transformers` uses — so
# `block.gate.weight` is what a checkpoint's `...block_sparse_moe.gate.weight` loads into (notebook 05).

# %%
block = moe_edu.SparseMoeBlock(moe_edu.PRESETS["tiny"])
print("block.gate.weight:", tuple(block.gate.weight.shape), "| has bias:", hasattr(block.gate, "bias"))

# %% [markdown]
# > **中文回顧**　路由網路是一個沒有偏差項的線性層，softmax 把每個 token 的 8 個相關性分數變成機率；bf16 會讓每層約 0.5% 的 token 換了專家，在 fp32 計算 logit 可去掉累加誤差。
# > 權重矩陣 $W_g$ 的大小就像溫度的倒數：初始化時路由幾乎是均勻的。

# %% [markdown]
# ## Recap
#
# - The router (路由網絡 / 門控網絡) is one bias-free linear layer: `logits = x @ W_g.T`, shape `(T, E)`.
# - Softmax turns each row into a distribution; it ignores constant shifts, which is why a shared bias is useless
#   and a per-expert bias would be input-independent.
# - bf16 inputs, weights and accumulation flip the top-2 choice of ~0.5 % of tokens per layer (~16 % of tokens
#   somewhere in 32 layers). **fp32 logits** (moe_edu) remove the accumulation part; an **fp32 softmax** alone
#   (transformers) changes no choice — softmax is monotone — but gives accurate weights that sum to 1. Switch's
#   reason for an fp32 router was training stability.
# - The scale of $W_g$ is an inverse temperature; at init (std 0.02) routing is nearly uniform.
# - `moe_edu.TopKRouter` and `SparseMoeBlock.gate` are exactly this.
#
# ## Check your understanding
#
# 1. What are the shapes of $W_g$ and of the logits for Mixtral 8x7B and a batch of 512 tokens? How many parameters
#    does one layer's router have?
#
# <details><summary>Answer</summary>
#
# $W_g$ is $(E, H) = (8, 4096)$ and the logits are $(T, E) = (512, 8)$. One layer's router has
# $8 \times 4096$ = 32,768 parameters (1,048,576 over all 32 layers) — tiny next to one expert's 176,160,768.
#
# </details>
#
# 2. Why is adding a bias $b$ with all entries equal useless? What would a bias with *different* entries do?
#
# <details><summary>Answer</summary>
#
# Softmax ignores a constant added to every logit of a row (section 2), so the probabilities, the top-k and the
# weights are unchanged. Different entries add a fixed, input-independent preference: some experts win more often
# for *every* token. That is not routing by content — though DeepSeek-V3 uses exactly such a bias, for selection
# only, to balance the load.
#
# </details>
#
# 3. In bf16, could two experts whose fp32 probabilities are 0.3336 and 0.3346 be told apart? Why does it matter for
#    the router but much less for an expert's output?
#
# <details><summary>Answer</summary>
#
# No: in $[0.25, 0.5)$ neighbouring bf16 numbers are $2^{-9} \approx 0.00195$ apart, and both values round to
# 0.333984 (section 3 shows three such values collapsing). The router turns small differences into a *discrete*
# choice — a different expert is a different function — whereas an expert's output only carries a small continuous
# error that averages out in the sums that follow.
#
# </details>
#
# 4. You multiply $W_g$ by 10. What happens to the entropy of the routing, and to how "decisive" top-k becomes?
#
# <details><summary>Answer</summary>
#
# The logits are multiplied by 10: the same as temperature $\tau = 0.1$. The entropy drops (in section 5 the
# mean entropy goes from 1.2994 at $\tau = 1$ to 0.1930 at $\tau = 0.1$), the distribution becomes nearly
# one-hot, and the renormalised top-2 weights approach (1, 0): the first expert decides almost alone, and the
# softmax saturates, so its gradients shrink.
#
# </details>
#
# 5. The heatmap's rows for "def" and "import" look alike. Which property of the router guarantees that similar
#    tokens get similar probabilities?
#
# <details><summary>Answer</summary>
#
# Linearity: the logits are $x W_g^\top$, so two nearby inputs give nearby logits
# ($\lVert \Delta\text{logits} \rVert \le \lVert W_g \rVert \, \lVert \Delta x \rVert$), and softmax is smooth,
# so nearby logits give nearby probabilities, trained or not. It does *not* guarantee that a whole cluster shares
# an expert: the bound depends on how far apart two tokens are along $W_g$'s rows, and a token that strays from
# its centre in the direction of another expert's row (like "chat" above) switches expert.
#
# </details>
#
# ## Exercises
#
# Open `notebooks/exercises/ex01_gating.ipynb`: implement the router logits (1.1) and the router probabilities with
# a float32 softmax (1.2) yourself — the checkers compare them with `moe_edu` on seeded inputs, including bf16
# logits — run your router inside a tiny Mixtral block, and answer the open question "why float32?" (1.3).
#
# **Next:** [02 · Top-k selection](02_topk_selection.ipynb) — picking the experts.

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 09 · Mixtral's SMoE vs the MoE family
#
# > **🔹 3. Mixtral SMoE vs. MoE 比較** … **🔥 主要差異** — *"Mixtral SMoE vs. MoE: a comparison … the main
# > differences"* — the seed article, §3–4 (both comparison tables were lost when the article was exported)
#
# > **MoE 架構更靈活，允許不同專家數量與門控機制，應用範圍更廣。** — *"The MoE architecture is more flexible: it
# > allows different numbers of experts and different gating mechanisms, so it applies more widely."* — §5
#
# > **中文導讀**　種子文章比較了 Mixtral 與一般 MoE，但兩張比較表在匯出時遺失了；本章用程式碼把它們重建出來。
# > 六種路由規則——Mixtral 的無丟棄前 2 名、雜訊前 k 名、Switch（前 1 名加容量因子）、GShard、專家選擇路由、
# > 共享專家加細粒度專家（DeepSeekMoE）——都用相同的 SwiGLU 專家與相同的分派程式，在相同的 token 上比較總參數、啟用參數、
# > 負載平衡與被丟棄的 token。最後逐點回應種子文章的結論：Mixtral 在這個家族中的位置，以及它選擇了什麼、放棄了什麼。
#
# The seed compares Mixtral with "MoE in general", but its tables are gone. This notebook rebuilds them **from code**:
# eight routing rules, each a small module in `moe_edu.variants`, all built from the *same* SwiGLU experts
# (`moe_edu.experts.Experts`) and the *same* dispatch (`moe_edu.dispatch.grouped_dispatch`), run on the *same*
# tokens and measured on the *same* axes.
#
# | variant | paper | one line |
# |---|---|---|
# | Mixtral dropless top-2 | Jiang et al. 2024 | the reference point: softmax → top-2 → renormalise, nothing dropped |
# | noisy top-k | Shazeer et al. 2017 | Gaussian noise on the logits in training; importance + load losses |
# | Switch top-1 | Fedus et al. 2021 | one expert per token, fixed capacity, overflow dropped |
# | GShard top-2 | Lepikhin et al. 2020 | two experts, capacity, second expert sometimes skipped at random |
# | expert choice | Zhou et al. 2022 | the experts pick their tokens: perfect balance by construction |
# | shared + fine-grained | Dai et al. 2024 (DeepSeekMoE) | always-on shared experts plus many small routed ones |
# | Soft MoE | Puigcerver et al. 2023 | no choice: slots are softmax mixes of all tokens (§6) |
# | aux-loss-free bias | DeepSeek-V3, 2024 | Mixtral's top-k chosen with a load-driven bias, no aux loss (§7) |
#
# **Learning objectives.** After this notebook you can
#
# 1. write token-choice top-k, capacity with dropping, and expert-choice routing in a few lines of plain torch;
# 2. say for each variant how many experts a token uses, how the gate is computed, what happens when an expert is full, and which auxiliary losses it trains with;
# 3. read total vs active parameters and FLOPs per token of every variant off one table, and see why they can be equal while the routing differs;
# 4. measure load balance and dropped tokens on one batch, and explain where each number comes from;
# 5. answer the seed's conclusions point by point: where Mixtral sits in the family, and what it gave up or gained.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()  # seed 0, one thread, 4-digit printing: the same numbers every run

import math

import matplotlib.pyplot as plt
import torch

from moe_edu.capacity import expert_capacity, keep_within_capacity
from moe_edu.course.plots import expert_load_bars, legend_outside, shared_legend
from moe_edu.variants import VARIANTS, build_variants
from moe_edu.variants.base import active_parameters, copy_from_block, flops_per_token, moe_output, total_parameters
from moe_edu.variants.compare import Table, compare, load_stats

# %% [markdown]
# ## 1. Three ways to assign tokens to experts — in plain torch
#
# Every MoE layer starts the same way: a router turns each token into E scores, `logits = x @ W_g.T`, shape `(N, E)`.
# The family differs in what it does with that matrix. Take 12 tokens and 4 experts, and one set of logits for
# every rule. We draw each rule's decision as an `(N, E)` 0/1 *assignment matrix*: row = token, column = expert.

# %%
N, E_small = 12, 4
logits = torch.randn(N, E_small) + torch.tensor([1.0, 0.3, 0.0, -0.5])  # (N, E): expert 0 is popular
probs = torch.softmax(logits, dim=-1)  # (N, E)


def assignment(tokens: torch.Tensor, experts: torch.Tensor, n: int = N, e: int = E_small) -> torch.Tensor:
    """(n, e) int matrix with a 1 at every (token, expert) pair."""
    return torch.zeros(n, e, dtype=torch.long).index_put_((tokens, experts), torch.tensor(1))


# (a) token choice, top-2 (Mixtral): every token picks its two best experts.
top2 = probs.topk(2, dim=-1).indices  # (N, 2)
mixtral_assign = assignment(torch.arange(N).repeat_interleave(2), top2.reshape(-1))
print(
    "token choice, top-2: tokens per expert",
    mixtral_assign.sum(0).tolist(),
    "| experts per token",
    mixtral_assign.sum(1).tolist(),
)

# %% [markdown]
# Token choice gives every token exactly k experts, but the experts get whatever the tokens ask for: here expert 0
# is asked by many more tokens than expert 3. Mixtral's released inference code and `transformers` accept that
# (they are **dropless**): a busy expert simply runs on more rows. Earlier systems could not, because their
# experts lived on different devices with fixed-size buffers.
#
# **(b) Capacity and dropping (Switch, GShard).** Each expert gets `C = ceil(capacity_factor · k · N / E)` rows.
# Tokens queue in order; a token that finds its expert full is **dropped** from that expert. With top-1 a dropped
# token gets no expert at all: the MoE layer outputs 0 for it and only the residual connection `x + MoE(x)` carries
# it to the next layer.

# %%
capacity_factor = 1.0
C = math.ceil(capacity_factor * 1 * N / E_small)  # top-1: k = 1
first = probs.argmax(dim=-1)  # (N,) Switch: one expert per token
used, kept = [0] * E_small, []
for t in range(N):  # first come, first served
    e = int(first[t])
    kept.append(used[e] < C)
    used[e] += kept[-1]
kept = torch.tensor(kept)  # (N,)
print(f"capacity C = {C} rows per expert")
print("demand per expert   ", torch.bincount(first, minlength=E_small).tolist())
print("processed per expert", used)
print("dropped tokens      ", torch.nonzero(~kept).flatten().tolist())

# %% [markdown]
# The library does the same with one stable sort instead of a Python loop (`keep_within_capacity`, which orders
# the assignments with `moe_edu.dispatch.sort_by_expert` and reads off each one's place in its expert's queue):

# %%
lib_keep = keep_within_capacity(first[:, None], E_small, expert_capacity(N, E_small, 1, capacity_factor))  # (N, 1)
print("library keeps the same tokens:", torch.equal(lib_keep[:, 0], kept))

# %% [markdown]
# **(c) Expert choice.** Turn the table around: each *expert* takes the `C` tokens it scores highest (a top-C down
# each **column** instead of a top-k along each row). Every expert gets exactly `C` tokens, so the load is perfectly
# balanced by construction — but now a token may get several experts, or none.

# %%
C_ec = math.ceil(2.0 * N / E_small)  # capacity factor 2: on average 2 experts per token, like Mixtral
tokens_of = probs.t().topk(C_ec, dim=-1).indices  # (E, C): each expert's chosen tokens
ec_assign = assignment(tokens_of.reshape(-1), torch.arange(E_small).repeat_interleave(C_ec))
print("expert choice: tokens per expert", ec_assign.sum(0).tolist())
print("experts per token              ", ec_assign.sum(1).tolist())
print("tokens with no expert          ", torch.nonzero(ec_assign.sum(1) == 0).flatten().tolist())
C_one = math.ceil(1.0 * N / E_small)  # capacity factor 1: one expert per token on average
picked = torch.bincount(probs.t().topk(C_one, dim=-1).indices.reshape(-1), minlength=N)  # (N,)
print(f"with capacity factor 1 (C = {C_one}): tokens with no expert", torch.nonzero(picked == 0).flatten().tolist())

# %% [markdown]
# Side by side, the two assignment matrices for the same logits (Switch's is the top-1 with capacity from (b)):

# %%
switch_assign = assignment(torch.nonzero(kept).flatten(), first[kept])
fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.6))
for ax, (title, m) in zip(
    axes,
    [
        ("Mixtral: top-2, dropless", mixtral_assign),
        (f"Switch: top-1, C = {C}", switch_assign),
        (f"expert choice: C = {C_ec}", ec_assign),
    ],
    strict=False,
):
    ax.imshow(m.numpy(), cmap="Greys", vmin=0, vmax=1.4, aspect="auto")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(E_small), [f"e{e}" for e in range(E_small)])
    ax.set_yticks(range(N))
    ax.set_xlabel("expert")
axes[0].set_ylabel("token")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Eight variants, one set of pieces
#
# `moe_edu.variants` holds one module per rule; each variant is the library's `MoEBlock` with that rule's router (a
# bias-free router `gate.weight` of shape `(E, H)` plus `Experts`), and `moe_output(block, x)` returns one `MoEOutput`:
#
# ```
# MoEOutput(y, router_logits, aux_losses: dict, load_counts (E,), demand_counts (E,), dropped, dropped_assignments, num_tokens)
# ```
#
# None of them re-implements SwiGLU or dispatch. Dropping is a boolean mask over the `(N, k)` assignments; the kept
# ones go through `grouped_dispatch` unchanged, so a dropped assignment costs nothing and adds nothing.
#
# We size every variant from the course's `tiny` config (H = 64, I = 224, E = 8, k = 2) and give the seven that have
# Mixtral's shapes **the same router and experts** — copied from one `SparseMoeBlock` — so that only the routing
# rule differs. The DeepSeekMoE variant has a different shape (16 experts of half the width: 1 shared + 15 routed)
# and keeps its own weights of the same scale.

# %%
cfg = moe_edu.get_config("tiny")
block = moe_edu.SparseMoeBlock(cfg).eval()
variants = build_variants(cfg)  # options per variant: e.g. {"switch": {"capacity_factor": 2.0}}
for name, v in variants.items():
    if name != "shared_experts":
        copy_from_block(v, block)
    v.eval()
    print(f"{name:15s} {type(v.gate).__name__:20s} experts={v.num_experts:2d}  params={total_parameters(v):,}")

# %% [markdown]
# ### The batch
#
# The measured columns depend on the hidden states the router sees. When the course's trained tiny checkpoint is
# installed (`moe_edu.load_pretrained()`, trained in notebook 07), we read the real input of one MoE layer with a
# forward hook and copy that layer's trained router and experts into the variants. Without it we use random hidden
# states with a shared offset: real hidden states are not centred, and the offset makes an untrained router as
# unbalanced as untrained routers usually are.

# %%
LAYER = 1
TEXT = (
    "The router sends every token to two experts. "
    "def mean(values):\n    return sum(values) / len(values)\n"
    "Le routeur envoie chaque jeton à deux experts. "
    "What is 17 + 25? The answer is 42."
)


def trained_hidden_states():
    """(inputs of MoE layer LAYER (1, T, H), that layer's block, config) from the trained tiny model; None if absent."""
    try:
        model, tokenizer = moe_edu.load_pretrained()
    except (ImportError, OSError, ValueError):  # not installed / no shipped checkpoint
        return None
    from moe_edu.data.corpus import LANGUAGES, language_documents, math_documents

    texts = [TEXT] + [language_documents(lang)[0].text for lang in LANGUAGES] + [math_documents(n=1)[0].text]
    captured = []
    mlp = model.model.layers[LAYER].mlp
    handle = mlp.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    with torch.no_grad():
        for text in texts:  # one sequence per document, at most 128 tokens each
            model(torch.tensor([tokenizer.encode(text)[:128]]))  # (1, T)
    handle.remove()
    return torch.cat(captured, dim=1), mlp, model.config  # (1, sum of T, H)


trained = trained_hidden_states()
g = torch.Generator().manual_seed(0)
x_random = torch.randn(4, 64, cfg.hidden_size, generator=g) + torch.randn(cfg.hidden_size, generator=g)  # (B, T, H)
print("trained checkpoint:", "found" if trained is not None else "not installed -> random hidden states")
print("random batch shape:", tuple(x_random.shape), "| tokens:", x_random.shape[0] * x_random.shape[1])

# %% [markdown]
# ## 3. The comparison table
#
# One forward pass per variant, in eval mode (no noise, no random routing), on the same 256 tokens.
#
# - **experts / k / gating / capacity / aux losses** come from each variant's router;
# - **total / active params** count this MoE layer only (router + experts); *active* is what one token multiplies at
#   inference (for expert choice: on average); **FLOPs/token** = 2 × active (every weight sits in a matmul);
# - **load CV** is the coefficient of variation of the rows each expert processed (0 = perfectly even), **max/mean load**
#   how much busier the busiest expert is than the average (1 = even): it sets the wall-clock time when experts
#   run in parallel;
# - **dropped tokens %**: tokens that got no expert at all; **dropped assignments %**: (token, expert) choices cut
#   by capacity.

# %%
from IPython.display import display

table, outputs = compare(variants, x_random)  # 13 columns: shown as four tables that fit the page
display(table.select("variant", "experts", "k", "capacity"))
display(table.select("variant", "gating"))
display(table.select("variant", "total params", "active params", "FLOPs/token"))
table.select("variant", "aux losses", "load CV", "max/mean load", "dropped tokens %", "dropped assignments %")

# %% [markdown]
# Read them row by row against Mixtral's:
#
# - Switch and GShard **drop**: their buffers hold `capacity_factor` times the average demand, and the busy experts
#   overflow. Mixtral and noisy top-k drop nothing, whatever the imbalance.
# - Expert choice has a load CV of exactly 0 — by construction — and pays for it with tokens that get no expert.
# - The DeepSeekMoE row has the same total and active expert parameters as Mixtral (16 half-width experts,
#   4 of them per token), one extra router row per added expert, and routes over 15 choices instead of 8.
# - Switch has about half the active parameters and FLOPs (one expert per token; only the router is shared).
#
# ### Per-expert load
#
# Bars are the rows each expert was asked for; for Switch and GShard the red line is the capacity C and the hatched
# part of a bar is the overflow that was dropped.

# %%
fig, axes = plt.subplots(4, 2, figsize=(9.6, 10.0))
for ax, (name, out) in zip(axes.flat, outputs.items(), strict=False):
    v = variants[name]
    demand = out.demand_counts if out.demand_counts is not None else out.load_counts
    cap = v.gate.capacity(out.num_tokens) if name in ("switch", "gshard") else None
    expert_load_bars(demand, ax=ax, capacity=cap, title=v.gate.label)
labels = ["processed (colour = expert)", "dropped", "capacity C", "uniform share"]
shared_legend(fig, ax=axes.flat[list(outputs).index("switch")], ncol=4, labels=labels)  # one legend, below
plt.show()

# %% [markdown]
# ### How much capacity does Switch need?
#
# The capacity factor trades dropped tokens against buffer size (padding the buffers to C rows is what a
# fixed-shape implementation computes, used or not). Sweep it on the same batch:

# %%
switch = variants["switch"]
print("factor   C   dropped tokens   buffer rows / token")
for factor in (0.5, 1.0, 1.25, 1.5, 2.0, 4.0):
    switch.gate.capacity_factor = factor
    out = moe_output(switch, x_random)
    cap = switch.gate.capacity(out.num_tokens)
    print(
        f"{factor:5.2f}  {cap:3d}   {100 * out.dropped_rate:6.2f} %        {cfg.num_local_experts * cap / out.num_tokens:.3f}"
    )
switch.gate.capacity_factor = 1.25

# %% [markdown]
# Drops only vanish when C reaches the busiest expert's demand — for an unbalanced router that is a large buffer
# mostly filled with padding. This is the problem a **dropless** dispatch sidesteps: every expert runs on however
# many rows it got — one matmul per expert in Mixtral's released code and `transformers`, a grouped GEMM in
# notebooks 03 and 10. The paper (§2.1) cites MegaBlocks, which casts the whole MoE layer as *block-sparse* matrix
# multiplications — another kernel for the same variable-size work. No buffer, no padding, no drop, at the price of
# uneven per-expert work that a load-balancing loss (notebook 07) keeps in check during training.

# %% [markdown]
# ### Noise and random routing: training only
#
# Shazeer's noisy gating adds `StandardNormal() · Softplus(x W_noise)` to the logits *in training*, to explore and to
# make the load loss differentiable; GShard skips the second expert with probability `1 − 2·g2` *in training*. At
# inference both are off, so the routing is deterministic again:

# %%
noisy, gshard = variants["noisy_topk"], variants["gshard"]
eval_choice = moe_output(noisy, x_random).router_logits.topk(2).indices
noisy.train()
torch.manual_seed(1)
train_choice = moe_output(noisy, x_random).router_logits.topk(2).indices
changed = (torch.sort(train_choice, 1).values != torch.sort(eval_choice, 1).values).any(1).float().mean()
noisy.eval()
print(f"noisy top-k: tokens whose expert pair changes under training noise: {100 * changed:.1f} %")
print("noisy top-k in eval equals Mixtral's block:", torch.allclose(noisy(x_random)[0], block(x_random)[0], atol=1e-6))
gshard.train()
torch.manual_seed(1)
out = moe_output(gshard, x_random)
gshard.eval()
print(
    f"GShard in training: second experts skipped at random: "
    f"{100 * (1 - (out.demand_counts.sum() - out.num_tokens) / out.num_tokens):.1f} %"
)

# %% [markdown]
# Most routes change under noise here because this router is untrained: its logits are small next to the initial
# noise scale softplus(0) ≈ 0.69, so the noise decides — which is the point early in training (every expert gets
# tried). As the router's logits grow and `W_noise` learns, the noise moves fewer and fewer tokens.

# %% [markdown]
# ### On the trained model's hidden states
#
# The same table on real hidden states (when the checkpoint exists): the input of MoE layer 1 for seven short
# documents (English and code, the four languages of the paper's multilingual claims, Traditional Chinese,
# arithmetic), with that
# layer's trained router and experts copied into the seven Mixtral-shaped variants. The routers of the other variants were
# not trained under their own rules, so read this as *"what would each rule do with Mixtral's trained scores?"*.
# (The DeepSeekMoE row keeps its own untrained weights: its experts have another shape.)

# %%
if trained is None:
    print("trained checkpoint not installed: skipped (the table above used random hidden states)")
else:
    x_trained, trained_block, trained_cfg = trained
    trained_variants = build_variants(trained_cfg)
    for name, v in trained_variants.items():
        if name != "shared_experts":
            copy_from_block(v, trained_block)
    print(
        f"{x_trained.shape[1]} tokens (English/code, French, German, Spanish, Italian, zh-TW, arithmetic) "
        f"through layer {LAYER} of the trained model"
    )
    trained_table, trained_outputs = compare(trained_variants, x_trained)
    from IPython.display import display

    display(
        trained_table.select(
            "variant", "aux losses", "load CV", "max/mean load", "dropped tokens %", "dropped assignments %"
        )
    )

# %% [markdown]
# A router trained with a load-balancing loss (here the Switch-style loss `transformers` implements for Mixtral)
# is balanced *on average over training batches*, not on every
# handful of documents: different domains prefer different experts (notebook 08). A dropless layer does not care;
# a capacity layer drops whatever exceeds `C` on *this* batch — the load CV and the dropped-token columns above
# are the two faces of the same imbalance.

# %% [markdown]
# ## 4. At Mixtral's scale
#
# The same modules instantiated on the `meta` device (no memory) with Mixtral 8x7B's layer sizes — H = 4096,
# I = 14336 — give the per-layer parameter and FLOP columns at full size. (The whole model adds attention,
# embeddings and norms on top: 46.7B total, 12.9B active; notebook 00.)

# %%
big = moe_edu.get_config("mixtral-8x7b")
with torch.device("meta"):
    big_variants = build_variants(big)
rows = [
    {
        "variant": v.gate.label,
        "total params (M)": total_parameters(v) / 1e6,
        "active params (M)": active_parameters(v) / 1e6,
        "GFLOPs/token": flops_per_token(v) / 1e9,
        "active share": active_parameters(v) / total_parameters(v),
    }
    for v in big_variants.values()
]
Table(rows)

# %% [markdown]
# ## 5. Where Mixtral sits
#
# The seed's similarities (§4 相似點) hold for every row of the table: **dynamic routing** (動態路由機制 — each
# rule reads the router's scores of the token), **ensemble-like combination** (集成學習 — a weighted sum of
# independent experts' outputs), and **sparse activation** (稀疏激活 — the active column is a fraction of the total).
# The differences (§4 主要差異, lost) are the columns. Now the conclusions (§5), point by point:
#
# **"Mixtral 8x7B 採用固定 8 專家，每 token 僅與 2 專家互動，有效降低計算成本"** — *fixed 8 experts, 2 per token,
# which cuts compute.* True, and the table says how much: the active share is ~1/4 of the expert parameters
# per layer. But "fixed" describes the configuration, not a limitation of the design: the same code runs with any
# E and k (`num_local_experts`, `num_experts_per_tok`). What *is* distinctive is that the 2 experts are **always**
# 2: Mixtral's released inference code is dropless, so no token ever silently skips its layer, unlike Switch and
# GShard above.
#
# **"MoE 架構更靈活，允許不同專家數量與門控機制，應用範圍更廣"** — *MoE in general is more flexible: other
# expert counts and gating mechanisms.* Yes — and every variant here is a one-file change of the routing rule on
# identical experts. Mixtral chose the simplest point in that space: softmax → top-2 → renormalise, no noise, no
# capacity, no random routing — and, in `transformers`' implementation, one standard load-balancing loss (notebook
# 07; the paper does not publish how Mixtral was trained). Each alternative buys something:
# Switch halves the FLOPs; expert choice gets perfect balance (but routes using the whole batch, i.e. future
# tokens, which does not fit autoregressive decoding); DeepSeekMoE's shared + fine-grained experts give more
# combinations at the same cost.
#
# **"Mixtral MoE 是經過優化的 SMoE 架構，特別適用於 LLM 訓練與推理，而傳統 MoE 適用於更多 AI 領域"** — *Mixtral is
# an optimised SMoE for LLM training and inference; "traditional" MoE applies more widely.* The optimisation is
# in these choices: token choice keeps routing causal (each token's experts depend on that token only — a must
# for generating one token at a time); dropless dispatch keeps the result independent of the batch it was computed
# in; top-2 of 8 keeps the active share near 1/4 with a reasonably large pool. MoE itself is older and broader
# (Jacobs et al. 1991; Shazeer et al. 2017 for LSTMs; vision MoEs) — but in the LLM rows of this table, every
# variant is an SMoE: the family differs in the gate, not in sparsity.

# %% [markdown]
# ## 6. Soft MoE: no routing decision at all
#
# Soft MoE (Puigcerver et al., 2023) replaces the discrete choice by two softmaxes over the same logits. Each
# expert owns $p$ *slots*; slot $s$ has a parameter vector $\phi_s$, and for the $m$ tokens $X$ of one sequence
# $L = X\Phi^\top$ is $(m, S)$ with $S = Ep$:
#
# - **dispatch** $D = \mathrm{softmax}$ over the *tokens* (each column sums to 1): slot $s$ receives
#   $\tilde x_s = \sum_t D_{ts} x_t$, a weighted average of every token;
# - each expert runs on its $p$ slots: $\tilde y_s = \mathrm{Expert}_{e(s)}(\tilde x_s)$;
# - **combine** $C = \mathrm{softmax}$ over the *slots* (each row sums to 1): $y_t = \sum_s C_{ts}\,\tilde y_s$.
#
# Nothing is dropped, every expert processes exactly $p$ slots (perfect balance by construction), and everything
# is differentiable. In plain torch, for one sequence, checked against `moe_edu.variants.soft_moe.SoftMoE`
# (with $p = 1$, $\Phi$ has the shape of Mixtral's router, so we copy the same block's weights in):

# %%
from moe_edu.variants.soft_moe import build_soft_moe

soft = copy_from_block(build_soft_moe(cfg), block).eval()  # p = 1 slot per expert, Phi = the router weight
xs = x_random[0]  # (m, H): one sequence of 64 tokens
L = xs @ block.gate.weight.T  # (m, S) slot logits, S = E * p = 8
D, C = torch.softmax(L, dim=0), torch.softmax(L, dim=1)  # dispatch over tokens, combine over slots
slots_in = D.T @ xs  # (S, H): each slot a convex mix of all 64 tokens
slots_out = torch.stack([block.experts.expert(s, slots_in[s : s + 1])[0] for s in range(8)])  # (S, H)
y_soft = C @ slots_out  # (m, H)
with torch.no_grad():
    y_lib = soft(xs).y  # (m, H)
print(
    "dispatch columns sum to 1:",
    torch.allclose(D.sum(0), torch.ones(8)),
    "| combine rows sum to 1:",
    torch.allclose(C.sum(1), torch.ones(64)),
)
print("plain torch = SoftMoE (max diff < 1e-5):", (y_soft.detach() - y_lib).abs().max().item() < 1e-5)

# %% [markdown]
# **Why it does not fit causal decoding.** A slot mixes *all* tokens of the sequence, so token $t$'s output
# depends on tokens after $t$. Change only the last token and watch the first one's output — in Soft MoE and in
# Mixtral's block (where each token's experts and weights depend on that token alone):

# %%
x_changed = xs.clone()
x_changed[-1] += 3.0  # only the last token differs
with torch.no_grad():
    soft_moved = (soft(x_changed).y[0] - soft(xs).y[0]).abs().max().item()
    mixtral_moved = (block(x_changed[None])[0][0, 0] - block(xs[None])[0][0, 0]).abs().max().item()
print("Soft MoE: token 0's output changed:", soft_moved > 1e-6)
print("Mixtral:  token 0's output changed:", mixtral_moved > 1e-6)

# %% [markdown]
# A decoder needs token $t$ to ignore the future (training with a causal mask) and generates one token at a
# time (a group of one: the softmax over tokens becomes trivial and every slot is that one token). Puigcerver et
# al. designed Soft MoE for vision transformers, whose patches all see each other; making it causal is an open
# problem the paper discusses. Its row in the table — the cost per token shrinks as the group grows, because
# $E p$ expert calls are shared by $m$ tokens:

# %%
soft_table, _ = compare({"mixtral": variants["mixtral"], "soft_moe": soft}, x_random)
soft_table.select("variant", "k", "active params", "FLOPs/token", "load CV", "dropped tokens %")

# %% [markdown]
# ## 7. Balancing without an auxiliary loss (DeepSeek-V3)
#
# Every aux loss adds a gradient that pulls the router away from what the language-modelling loss wants.
# DeepSeek-V3 (2024) balances differently: each expert $e$ gets a bias $b_e$ that is added to its score **only to
# choose** the top k; the combine weights use the unbiased scores. After each batch, the bias moves by a fixed step
# $\gamma$ against the load: $b_e \leftarrow b_e - \gamma\,\mathrm{sign}(c_e - \bar c)$ — overloaded experts
# become less attractive, underloaded ones more. No loss, no gradient; `moe_edu.variants.aux_free.AuxFreeRouter`
# (with `score="softmax"` it is Mixtral's rule when $b = 0$; DeepSeek-V3 scores with a sigmoid, `score="sigmoid"`).
# That is why its row in the table of §3 equals Mixtral's: the bias starts at 0 and moves only in training.

# %%
from moe_edu.variants.aux_free import bias_update

free = copy_from_block(VARIANTS["aux_free"](cfg), block).eval()
flat = x_random.reshape(-1, cfg.hidden_size)  # (N, H)
with torch.no_grad():
    same = torch.equal(free(x_random)[0], variants["mixtral"](x_random)[0])
    scores = torch.softmax(free.gate.logits(flat), dim=-1)  # (N, E)
    before = torch.bincount(free.gate(flat).expert_ids.reshape(-1), minlength=8)  # (E,)
    free.gate.bias.copy_(bias_update(free.gate.bias, before, 0.05))  # one big nudge
    routed = free.gate(flat)
    after = torch.bincount(routed.expert_ids.reshape(-1), minlength=8)  # (E,)
    chosen_scores = scores.gather(1, routed.expert_ids)  # (N, k)
print("b = 0 gives Mixtral's output exactly:", same)
print("load before:", before.tolist(), "\nload after one bias step:", after.tolist())
print(
    "weights still the unbiased scores, renormalised:",
    torch.allclose(routed.weights, chosen_scores / chosen_scores.sum(-1, keepdim=True)),
)

# %% [markdown]
# One step of $\gamma = 0.05$ is far too big for scores of this size: it empties the busy experts and floods the idle
# ones. DeepSeek-V3 applies a small $\gamma$ after every batch, so the bias tracks the load instead of jumping.
#
# ### A live mini-run: no balancing, the Switch aux loss, the bias
#
# One MoE layer (the tiny width, 8 experts, top-2) learns to imitate a fixed random FFN on skewed inputs (a shared
# offset, and a router initialised with std 0.1 so that it starts opinionated). 100 Adam steps of 128 tokens,
# three ways: no balancing; the Switch loss with coefficient 0.01; the aux-free bias with $\gamma = 0.01$. We record
# the hard load's imbalance (max / mean, 1 = even) at every step. A few seconds.

# %%
import torch.nn.functional as F

g = torch.Generator().manual_seed(0)
offset = 2.0 * torch.randn(cfg.hidden_size, generator=g)  # (H,)
teacher = moe_edu.SparseMoeBlock(cfg.replace(num_local_experts=1, num_experts_per_tok=1)).eval()
with torch.no_grad():
    for p in teacher.parameters():
        p.normal_(0.0, 0.2, generator=g)


def mini_batch(step: int):
    x = torch.randn(128, cfg.hidden_size, generator=torch.Generator().manual_seed(1000 + step)) + offset  # (N, H)
    with torch.no_grad():
        return x, teacher(x[None])[0][0] / 30.0  # (N, H): a target of about unit scale


def balance_run(kind: str, steps: int = 100) -> list[tuple[float, float]]:
    torch.manual_seed(0)
    moe = (
        VARIANTS["aux_free"](cfg, bias_update_speed=0.01) if kind == "aux-free bias" else VARIANTS["mixtral"](cfg)
    )  # the same initial weights in all three runs
    with torch.no_grad():
        moe.gate.weight.normal_(0.0, 0.1)  # an opinionated start
    opt = torch.optim.Adam(moe.parameters(), lr=1e-3)
    history = []
    for step in range(steps):
        x, y = mini_batch(step)
        out = moe_output(moe.train(), x)  # the aux-free router nudges its bias inside this training forward
        task = F.mse_loss(out.y, y)
        loss = task + 0.01 * moe_edu.load_balancing_loss(out.router_logits, 8, 2) if kind == "Switch aux loss" else task
        opt.zero_grad()
        loss.backward()
        opt.step()
        counts = out.load_counts.float()
        history.append((float(counts.max() / counts.mean()), task.item()))
    return history


balance = {kind: balance_run(kind) for kind in ("no balancing", "Switch aux loss", "aux-free bias")}
late = {kind: sum(imb for imb, _ in h[-25:]) / 25 for kind, h in balance.items()}  # mean of the last 25 steps

# %% [markdown]
# The exact numbers of a 100-step run depend on your CPU's floating-point kernels; the lines after the table hold
# everywhere.

# %% tags=["nbval-ignore-output"]
for kind, h in balance.items():
    print(
        f"{kind:16s} imbalance: step 0 {h[0][0]:.2f}, mean of last 25 steps {late[kind]:.2f} | "
        f"task loss at the end {h[-1][1]:.3f}"
    )

# %%
print("without balancing the load collapses (imbalance > 3.5):", late["no balancing"] > 3.5)
print("both balancers keep it well below that (< 3):", late["Switch aux loss"] < 3 and late["aux-free bias"] < 3)

fig, ax = plt.subplots(figsize=(7.0, 3.2))
for kind, h in balance.items():
    ax.plot([imb for imb, _ in h], label=kind)
ax.axhline(1.0, color="k", lw=0.8, ls="--")
ax.set_xlabel("step")
ax.set_ylabel("max / mean expert load")
legend_outside(ax)
plt.show()

# %% [markdown]
# **Notebook 07's blind spot, revisited.** The Switch loss $E\sum_e f_e P_e$ equals $k$ whenever the probabilities
# are flat, whatever the hard choices: a router with tiny logits that sends every token to experts 0 and 1 scores
# an almost perfect 2. The bias rule reads the hard counts themselves, so it sees the collapse and fixes it at once:

# %%
sneaky = 1e-3 * torch.randn(64, 8, generator=torch.Generator().manual_seed(0))  # (T, E) tiny logits
sneaky[:, :2] += 5e-3  # ... but every token prefers experts 0 and 1, by a hair
probs = torch.softmax(sneaky, dim=-1)  # (T, E), nearly flat
b = torch.zeros(8)
for _ in range(10):
    counts = torch.bincount(torch.topk(probs + b, 2, dim=-1).indices.reshape(-1), minlength=8)  # (E,)
    b = bias_update(b, counts, 5e-5)
print(f"Switch aux loss {moe_edu.load_balancing_loss([sneaky], 8, 2).item():.3f} (k = 2 would be perfect)")
print("hard load before:", torch.bincount(torch.topk(probs, 2, -1).indices.reshape(-1), minlength=8).tolist())
after = torch.bincount(torch.topk(probs + b, 2, -1).indices.reshape(-1), minlength=8).float()  # (E,)
print(
    "after 10 bias steps every expert is used:",
    bool((after > 0).all()),
    "| max/mean < 2:",
    (after.max() / after.mean()).item() < 2,
)

# %% [markdown]
# In this toy the collapsed run fits the target best — the target is a single dense FFN, so two experts suffice and
# balance only costs — while both balancers trade a little task loss for an even load, the bias more evenly than a
# Switch loss of this size. On a real model, where idle experts are wasted capacity, that trade is the point.
#
# The price: the bias is a controller with its own step size (too large and the load oscillates, as the curve
# shows; too small and it lags the router), it balances each *batch*, not each sequence (DeepSeek-V3 keeps a very
# small sequence-wise balance loss for that), and at inference the bias stays frozen at its last value.
#
# <details><summary>Check: why may the bias enter the choice but not the combine weights?</summary>
#
# The choice is a discrete top-k: shifting it changes *which* experts run and so the load, which is all the bias is
# for. If the bias entered the weights it would also change *how much* each expert's output counts — a change to the
# model's function that no gradient asked for. Kept out of the weights, the language-modelling loss still decides
# the mixture among the chosen experts.
# </details>

# %% [markdown]
# ## Recap
#
# - One router score matrix `(N, E)`, many rules: top-k along rows (token choice), top-C down columns (expert choice).
# - Capacity `C = ceil(capacity_factor · k · N / E)` fixes buffer sizes and drops the overflow; dropped tokens pass
#   through on the residual only. Mixtral's inference code and `transformers` are dropless.
# - Noise (Shazeer) and random routing (GShard) are training-time devices; at inference the routing is deterministic.
# - Aux losses differ by variant (importance + load, f·P load balancing, expert-level balance, none for expert
#   choice) but all push towards even expert load.
# - Same expert parameters can give the same total and active counts (Mixtral vs DeepSeekMoE) with very different
#   routing; FLOPs per token follow the active count.
#
# ## Check your understanding
#
# 1. With top-1 routing, N = 256 tokens, E = 8 and capacity factor 1.25, what is C? If one expert is asked by
#    60 tokens, how many are dropped from it, and what does the layer output for them?
#
# <details><summary>Answer</summary>
#
# $C = \lceil 1.25 \cdot 1 \cdot 256 / 8 \rceil = 40$ (the sweep above prints it). 60 − 40 = 20 tokens are dropped;
# with top-1 they have no expert at all, so the MoE layer outputs 0 for them and only the residual carries them on.
#
# </details>
#
# 2. Why does GShard queue *all* first choices before any second choice? What would go wrong with token order only?
#
# <details><summary>Answer</summary>
#
# A token's first choice carries the larger weight, so it should not lose its place to another token's less
# important second choice. In token order, tokens late in the batch would lose even their first choice to early
# tokens' second choices: the position in the batch, not the router, would decide who is dropped.
#
# </details>
#
# 3. In expert choice every expert gets exactly C tokens. Why does that not mean every token gets 2 experts?
#
# <details><summary>Answer</summary>
#
# The experts choose independently. $E \cdot C = 2N$ assignments means 2 per token *on average*, but a token many
# experts score highly is taken by several, and one nobody ranks high by none (section 1: experts per token
# `[2, 2, 3, 2, 2, 2, 1, 2, 3, 3, 1, 1]`; with capacity factor 1, tokens 7 and 9 got none).
#
# </details>
#
# 4. Why is expert choice hard to use when generating text one token at a time?
#
# <details><summary>Answer</summary>
#
# An expert picks its top-$C$ tokens from the *whole batch*, so a token's experts depend on the other tokens —
# including later ones in the sequence. That breaks causality in training, and when decoding there is no batch of
# future tokens to choose among: routing at inference would differ from routing in training.
#
# </details>
#
# 5. Noisy top-k in eval mode equals Mixtral's block on the same weights. Which two things make that true?
#
# <details><summary>Answer</summary>
#
# In eval mode the noise is switched off, leaving the plain logits; and noisy top-k's gate — top-k of the logits,
# then softmax over those $k$ — equals Mixtral's softmax → top-k → renormalise (notebook 04's proof). Both are
# dropless and share the router and experts, so the outputs agree.
#
# </details>
#
# 6. DeepSeekMoE here has Mixtral's total and active expert parameters. What does it gain by splitting experts in
#    two and sharing one of them?
#
# <details><summary>Answer</summary>
#
# More combinations for the same cost: choosing 3 of 15 routed experts gives $\binom{15}{3} = 455$ possible
# mixtures against $\binom{8}{2} = 28$ for Mixtral, so experts can specialise more finely. The always-on shared
# expert holds what every token needs, so the routed experts need not each learn a copy of it.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex09_moe_family.ipynb`: Switch routing with a capacity (9.1) and the Switch layer with its
# dropped tokens (9.2), expert-choice routing (9.3) and the expert-choice layer with its unrouted tokens (9.4) —
# checkers in `moe_edu.course.exercises.family` — and an open question: why does Mixtral not use expert choice (9.5)?

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
# > 八種路由規則——Mixtral 的無丟棄前 2 個專家、雜訊前 k 個門控、Switch（前 1 個專家加容量因子）、GShard、專家選擇路由、
# > 共享專家加細粒度專家（DeepSeekMoE）、軟性混合專家（Soft MoE），以及無輔助損失負載平衡的偏差（Wang et al. 2024，DeepSeek-V3 採用）——
# > 都用相同的 SwiGLU 專家，在相同的 token 上比較總參數、啟用參數、負載平衡與被丟棄的 token。
# > 最後逐點回應種子文章的結論：Mixtral 在這個家族中的位置，以及它選擇了什麼、放棄了什麼。
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
# | aux-loss-free bias | Wang et al. 2024; adopted by DeepSeek-V3 | Mixtral's top-k chosen with a load-driven bias, no aux loss (§7) |
#
# Then what a 2026 course adds on top: the gate's **design choices** — router jitter, sigmoid scores, top-k
# renormalisation — as named options of the library's router (§8); **scaling laws and granularity**, with the
# parameter counts of five open MoEs checked against what their authors published (§9); and **adaptive k**,
# running fewer experts where the router is sure (§10).
#
# **Learning objectives.** After this notebook you can
#
# 1. write token-choice top-k, capacity with dropping, and expert-choice routing in a few lines of plain torch;
# 2. say for each variant how many experts a token uses, how the gate is computed, what happens when an expert is full, and which auxiliary losses it trains with;
# 3. read total vs active parameters and FLOPs per token of every variant off one table, and see why they can be equal while the routing differs;
# 4. measure load balance and dropped tokens on one batch, and explain where each number comes from;
# 5. answer the seed's conclusions point by point: where Mixtral sits in the family, and what it gave up or gained;
# 6. price Soft MoE as a function of its slots per token, and find the point where it costs what Mixtral's top-2 costs;
# 7. switch the router between softmax and sigmoid scores, renormalised or not, with or without jitter, and say
#    what each choice changes;
# 8. count the parameters of an open MoE from its `config.json`, and count the expert combinations that
#    fine-grained experts buy at equal compute;
# 9. skip experts where the router is confident and measure the compute saved against the output changed.

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
from moe_edu.variants.base import (
    active_parameters,
    copy_from_block,
    expert_parameters,
    flops_per_token,
    moe_output,
    total_parameters,
)
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
# (they are **dropless**): a busy expert simply runs on more rows. Earlier systems could not, for a compiler's
# reason: GShard and Switch ran on TPUs through XLA, where "all tensor shapes are statically determined at
# compilation time" (the Hugging Face MoE blog, on GShard), so each expert got a buffer of a fixed C rows and the
# overflow had to go. Spreading the experts over devices does not by itself force that: MegaBlocks on GPUs, and
# notebook 10's expert parallelism, are dropless across devices.
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
    ax.set_xticks([e - 0.5 for e in range(E_small + 1)], minor=True)  # a cell grid: neighbours never merge
    ax.set_yticks([t - 0.5 for t in range(N + 1)], minor=True)
    ax.grid(which="minor", color="#d9d9d9", lw=0.6)
    ax.tick_params(which="minor", length=0)
    for t in torch.nonzero(m.sum(1) == 0).flatten().tolist():  # a token no expert processes (dropped, or unchosen)
        ax.text(E_small - 0.6, t, "no expert", ha="right", va="center", fontsize=8, color="#c0392b")
    ax.set_title(title, fontsize=10)  # as large as the tick labels
    ax.set_xticks(range(E_small), [f"e{e}" for e in range(E_small)])
    ax.set_yticks(range(N))
    ax.set_xlabel("expert")
axes[0].set_ylabel("token")
fig.tight_layout()
plt.show()
unserved = [int((m.sum(1) == 0).sum()) for m in (mixtral_assign, switch_assign, ec_assign)]  # tokens with no expert
print(
    "each token that no expert processes is marked:",
    [sum(t.get_text() == "no expert" for t in ax.texts) for ax in axes] == unserved,
)
print(
    "titles as large as the tick labels:",
    all(ax.title.get_fontsize() >= ax.get_xticklabels()[0].get_fontsize() for ax in axes),
)

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
    """(inputs of MoE layer LAYER (1, T, H), that layer's block, config, the model, the token ids of each text)
    from the trained tiny model; None if absent."""
    try:
        model, tokenizer = moe_edu.load_pretrained()
    except (ImportError, OSError, ValueError):  # not installed / no shipped checkpoint
        return None
    from moe_edu.data.corpus import LANGUAGES, language_documents, math_documents

    texts = [TEXT] + [language_documents(lang)[0].text for lang in LANGUAGES] + [math_documents(n=1)[0].text]
    captured, ids = [], [tokenizer.encode(text)[:128] for text in texts]  # at most 128 tokens per document
    mlp = model.model.layers[LAYER].mlp
    handle = mlp.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    with torch.no_grad():
        for seq in ids:  # one sequence per document
            model(torch.tensor([seq]))  # (1, T)
    handle.remove()
    return torch.cat(captured, dim=1), mlp, model.config, model, ids  # (1, sum of T, H), ...


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
soft_row = table.rows[list(variants).index("soft_moe")]  # Soft MoE has no per-token active set (§6)
soft_row["active params"] = "none per token"
soft_row["FLOPs/token"] = f"{soft_row['FLOPs/token']:,} at 8 slots / 64 tokens"
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
# - Soft MoE has **no** per-token active set: through the slots every expert's weights touch every token. Its
#   FLOPs/token is the group's $E p$ expert calls shared by $m$ tokens — here 8 slots over 64 tokens, a free
#   choice, not a property of the method (§6 sweeps it).
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
    x_trained, trained_block, trained_cfg, _, _ = trained
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
        "active params (M)": "none per token" if name == "soft_moe" else active_parameters(v) / 1e6,
        "GFLOPs/token": f"{flops_per_token(v) / 1e9:.3f} at 8 slots / 64 tokens"
        if name == "soft_moe"
        else flops_per_token(v) / 1e9,
    }
    for name, v in big_variants.items()
]
mixtral_big = big_variants["mixtral"]
expert_weights = mixtral_big.num_experts * expert_parameters(mixtral_big.experts)  # all 8 experts of the layer
share = (active_parameters(mixtral_big) - mixtral_big.gate.weight.numel()) / expert_weights
print(f"Mixtral: a token uses {share:.2f} of the layer's expert parameters (k / E = 2/8):", share == 2 / 8)
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
# which cuts compute.* True, and the table says how much: a token uses 2/8 = 1/4 of the layer's expert
# parameters (the checked line above §5). But "fixed" describes the configuration, not a limitation of the design: the same code runs with any
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
# problem the paper discusses.
#
# **What Soft MoE costs.** There is no "active parameter" count: every token reaches every expert through the
# slots. What a token costs is its share of the group's expert calls: $E p$ slots, each one expert call, shared by
# $m$ tokens — **$Ep/m$ slots per token**, a hyperparameter. Add $\Phi$ (every token scores all $S = Ep$ slots) and
# the two mixes (dispatch and combine, $2SH$ multiply-adds each per token). Mixtral's top-2 makes exactly 2 expert
# calls per token, so Soft MoE costs what Mixtral costs at $Ep/m = 2$, i.e. $p = 2m/E$. Sweep $p$ at Mixtral 8x7B's
# layer size, for groups of $m = 64$ tokens (the library's `moe_edu.variants.base.flops_per_token`, on the `meta` device):

# %%
m_group = 64
mixtral_flops = flops_per_token(big_variants["mixtral"])  # 2 expert calls + the router
print("slots/expert p  slots/token Ep/m  GFLOPs/token  vs Mixtral top-2")
sweep = {}  # p -> (slots per token, FLOPs per token)
for p_slots in (1, 2, 4, 8, 16, 32, 64):
    with torch.device("meta"):
        soft_big = build_soft_moe(big, slots_per_expert=p_slots, tokens_per_group=m_group)
    sweep[p_slots] = (big.num_local_experts * p_slots / m_group, flops_per_token(soft_big))
    per_token, flops = sweep[p_slots]
    print(f"{p_slots:14d}  {per_token:16.3f}  {flops / 1e9:12.3f}  {flops / mixtral_flops:8.3f}x")
p_equal = 2 * m_group // big.num_local_experts
equal = sweep[p_equal]
print(f"at p = 2m/E = {p_equal}: Soft MoE makes 2 expert calls per token, like top-2:", equal[0] == 2.0)
print(
    "... and costs within 2 % of Mixtral's FLOPs (Phi and the two mixes are the rest):",
    abs(equal[1] / mixtral_flops - 1) < 0.02,
)

fig, ax = plt.subplots(figsize=(6.4, 3.4))
ax.plot([t for t, _ in sweep.values()], [f / 1e9 for _, f in sweep.values()], marker="o", label="Soft MoE, m = 64")
ax.axhline(mixtral_flops / 1e9, color="k", lw=0.8, ls="--", label="Mixtral top-2")
ax.plot([equal[0]], [equal[1] / 1e9], marker="*", ms=14, color="C3", ls="none", label=f"equal compute: p = {p_equal}")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("slots per token  E·p / m")
ax.set_ylabel("GFLOPs per token (one layer)")
legend_outside(ax)
plt.show()

# %% [markdown]
# Cost grows linearly with slots per token; the earlier tables' 8 slots / 64 tokens ($p = 1$) is one point on this
# line, at 1/16 of Mixtral's expert calls, not a property of Soft MoE. Puigcerver et al. treat the number of slots
# as a hyperparameter; how many slots per token a *language* model would need is open, since the method does not
# fit causal decoding as it stands.
# %% [markdown]
# ## 7. Balancing without an auxiliary loss (Wang et al. 2024; DeepSeek-V3)
#
# Every aux loss adds a gradient that pulls the router away from what the language-modelling loss wants.
# **Loss-Free Balancing** (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts",
# arXiv 2408.15664), which DeepSeek-V3 (arXiv 2412.19437) adopted at scale, balances differently: each expert
# $e$ gets a bias $b_e$ that is added to its score **only to choose** the top k; the combine weights use the
# unbiased scores. After each batch, the bias moves by a fixed step
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
# **Over what is the load balanced?** Per batch, per sequence or per global batch is a design choice with a cost.
# Qiu et al. 2025 ("Demons in the Detail", arXiv 2501.11873) point out that frameworks compute the Switch loss per
# micro-batch, which for large models holds only a few sequences, so it in effect forces every *sequence* to spread
# its tokens over all experts — even a pure code sequence — and that blocks domain specialisation; computing
# $f_e$ over the global batch instead (one extra synchronisation) gave them better perplexity and more specialised
# experts. DeepSeek-V3's sequence-wise loss sits at the other end, with a coefficient kept very small. Notebook 10
# §6 shows the serving-side face of the same trade: specialised experts make single requests load devices unevenly.
#
# <details><summary>Check: why may the bias enter the choice but not the combine weights?</summary>
#
# The choice is a discrete top-k: shifting it changes *which* experts run and so the load, which is all the bias is
# for. If the bias entered the weights it would also change *how much* each expert's output counts — a change to the
# model's function that no gradient asked for. Kept out of the weights, the language-modelling loss still decides
# the mixture among the chosen experts.
# </details>

# %% [markdown]
# ## 8. Three design choices of the gate, by name
#
# Mixtral's gate is one point in a small design space. `moe_edu.routing.GateChoices` names three of its axes, and
# `TopKRouter(H, E, k, choices=...)` takes them; the default is Mixtral exactly (so `tests/test_parity.py`, which
# compares the block with `transformers`, is untouched):
#
# | choice | Mixtral (default) | the alternative, and who uses it |
# |---|---|---|
# | `score` | softmax over the E logits | `"sigmoid"`: each expert's affinity $\sigma(l_e)$ on its own (DeepSeek-V3) |
# | `normalize` | the k chosen scores rescaled to sum to 1 | `False`: kept as they are (Switch's top-1 weight $p$; DeepSeek-V2 and Qwen1.5-MoE ship `norm_topk_prob: false`) |
# | `jitter` | 0 | Switch: in training, multiply the *router's* input by Uniform(1 − ε, 1 + ε); ε = 0.01 is the default of `transformers`' Switch Transformers config |
#
# (`transformers`' Mixtral has a `router_jitter_noise` field too; its noise multiplies the block's input, so the
# experts see it as well — `MoEBlock(jitter_noise=...)` here. Switch's jitter touches only the router.)
#
# **Softmax vs sigmoid, in plain torch.** Both are increasing in each logit, so on one token they rank the experts
# alike and choose the **same** top-k; what differs is the weights. A softmax weight depends only on logit
# *differences*; a sigmoid's on each logit's *level*:

# %%
import copy

from moe_edu.routing import GateChoices, TopKRouter

flat_x = x_random.reshape(-1, cfg.hidden_size)  # (N, H)
with torch.no_grad():
    gate_logits = block.gate.logits(flat_x)  # (N, E) fp32
    soft_top = torch.softmax(gate_logits, -1).topk(2)  # (N, 2)
    sig_top = torch.sigmoid(gate_logits).topk(2)  # (N, 2)
w_softmax = soft_top.values / soft_top.values.sum(-1, keepdim=True)  # (N, 2) Mixtral
w_sigmoid = sig_top.values / sig_top.values.sum(-1, keepdim=True)  # (N, 2) DeepSeek-V3
print(
    "softmax and sigmoid choose the same two experts for every token:", torch.equal(soft_top.indices, sig_top.indices)
)
print("... with different weights (largest difference > 0.05):", (w_softmax - w_sigmoid).abs().max().item() > 0.05)
print(
    f"top-2 mass before renormalising: softmax {soft_top.values.sum(-1).mean():.3f} (< 1), "
    f"sigmoid {sig_top.values.sum(-1).mean():.3f} (between 0 and 2)"
)


def router_with(choices: GateChoices) -> TopKRouter:
    """Mixtral's router weights under other gate choices (the same Parameter, not a copy)."""
    r = TopKRouter(cfg.hidden_size, cfg.num_local_experts, cfg.num_experts_per_tok, choices=choices)
    r.weight = block.gate.weight
    return r


with torch.no_grad():
    lib_sigmoid = router_with(GateChoices(score="sigmoid"))(flat_x)
print("library, sigmoid + renormalise = plain torch:", torch.allclose(lib_sigmoid.weights, w_sigmoid))

# %% [markdown]
# The choice matters more than one token's weights suggest. With a softmax, raising one expert's logit lowers every
# other expert's probability; a sigmoid affinity does not move when another expert's does — each expert's score
# is its own, which suits a per-expert selection bias like §7's (DeepSeek-V3 uses the two together).
#
# **Renormalise or not.** Without renormalisation the layer's output is scaled by the chosen mass: a confident
# token (mass near 1) passes through at full strength, an unsure one is damped. With the same experts chosen, the
# unnormalised output is exactly the mass times Mixtral's:

# %%
unnormalised = copy.deepcopy(block)  # the same experts ...
unnormalised.gate = router_with(GateChoices(normalize=False))  # ... behind a gate that does not renormalise
with torch.no_grad():
    y_mixtral = block(x_random)[0].reshape(-1, cfg.hidden_size)  # (N, H)
    y_unnorm = unnormalised(x_random)[0].reshape(-1, cfg.hidden_size)  # (N, H)
mass = soft_top.values.sum(-1, keepdim=True)  # (N, 1)
print("unnormalised output = chosen mass x Mixtral's output:", torch.allclose(y_unnorm, mass * y_mixtral, atol=1e-6))

# %% [markdown]
# **Router jitter.** In training only, Switch multiplies the router's input by noise in $[1-\varepsilon, 1+\varepsilon]$,
# so tokens near a decision boundary sometimes try their runner-up expert. How many tokens change their expert
# pair on this untrained router, for Switch's ε = 0.01 and for ten times that:

# %%
with torch.no_grad():
    clean_pairs = torch.sort(router_with(GateChoices()).eval()(flat_x).expert_ids, 1).values  # (N, 2)
    moved = {}
    for eps in (0.01, 0.1):
        jittery = router_with(GateChoices(jitter=eps))
        torch.manual_seed(0)
        train_pairs = torch.sort(jittery.train()(flat_x).expert_ids, 1).values  # (N, 2)
        eval_pairs = torch.sort(jittery.eval()(flat_x).expert_ids, 1).values  # (N, 2)
        moved[eps] = ((train_pairs != clean_pairs).any(1).float().mean().item(), torch.equal(eval_pairs, clean_pairs))

# %% tags=["nbval-ignore-output"]
for eps, (share, _) in moved.items():
    print(f"jitter {eps}: {100 * share:.1f} % of tokens change their expert pair in training")

# %%
print("in eval mode jitter changes nothing:", all(same for _, same in moved.values()))
print("a larger jitter moves more tokens:", 0 < moved[0.01][0] < moved[0.1][0])

# %% [markdown]
# <details><summary>Check: if sigmoid and softmax pick the same experts, why did DeepSeek-V3 switch?</summary>
#
# They pick the same experts for one token with no bias, but the weights differ, and so do the gradients: a
# softmax couples every expert's probability to every other logit, so pushing one expert up pushes all others
# down; a sigmoid affinity is each expert's own. Once a per-expert selection bias is added (§7), or experts are
# added or removed, the independence keeps each expert's score meaningful on its own. DeepSeek-V3 then
# renormalises the k chosen affinities, so the mixture weights still sum to 1.
# </details>

# %% [markdown]
# ## 9. Scaling laws and granularity
#
# How should a fixed budget be split between experts? Two results frame the answer:
#
# - **Clark et al. 2022**, "Unified Scaling Laws for Routed Language Models" (arXiv 2202.01169; the Mixtral paper
#   cites it): for routed models "parameter count and computational requirement form two independent axes along
#   which an increase leads to better performance". They fit the loss as a bilinear function of log dense size and
#   log expert count, and the benefit of more experts shrinks as the dense model grows.
# - **Krajewski et al. 2024**, "Scaling Laws for Fine-Grained Mixture of Experts" (arXiv 2402.07871): they add
#   **granularity** $G$ — each expert is $1/G$ of a dense FFN's width, and a token uses $G$ times as many — and
#   find that "the common practice of setting the size of experts in MoE to mirror the feed-forward layer is not
#   optimal at almost any computational budget". Mixtral has $G = 1$.
#
# **Fine-grained experts in one line of config.** Split each of Mixtral's 8 experts into $G$ of width $I/G$ and
# route to $2G$ of the $8G$: the expert parameters, total and active, stay exactly the same; only the router grows
# ($8G$ rows). What grows fast is the number of expert combinations a token can choose, $\binom{8G}{2G}$:

# %%
print(" G   experts  top-k  width I/G   total (B)   active (B)   expert combinations")
grain = {}
for G in (1, 2, 4, 8, 16):
    fine = big.replace(num_local_experts=8 * G, num_experts_per_tok=2 * G, intermediate_size=big.intermediate_size // G)
    grain[G] = moe_edu.count_parameters(fine)
    combos = math.comb(8 * G, 2 * G)
    print(
        f"{G:2d}  {8 * G:7d}  {2 * G:5d}  {fine.intermediate_size:9d}  {grain[G].total / 1e9:10.3f}  "
        f"{grain[G].active / 1e9:11.3f}   {combos:.3e}"
    )
print(
    "expert parameters, total and active, identical for every G:",
    all((p.experts, p.active_experts) == (grain[1].experts, grain[1].active_experts) for p in grain.values()),
)
print("G = 2 is DBRX's 16-choose-4: 65x Mixtral's combinations:", math.comb(16, 4) // math.comb(8, 2) == 65)

# %% [markdown]
# Databricks give that 65× as their reason for 16 experts with 4 active ("we found that this improves model
# quality", the DBRX model card). The costs are not in the parameter count: more, smaller matmuls (notebook 10's
# grouped GEMM exists for this), a router $G$ times larger, and more all-to-all traffic per token under expert
# parallelism.
#
# ### Open MoEs, counted from their configs
#
# `moe_edu.count_parameters` counts Mixtral exactly. With `moe_edu.accounting.ModelShape` it also counts what other
# open MoEs add — always-on shared experts and their gate, dense first layers, q/k/v biases, q/k norms — so the
# published configs of five open MoEs (`moe_edu.presets.OPEN_MOES`, each built from the fields of its released
# `config.json`) can be checked against the totals their authors state. Publications round (to 0.1B or 1B), so
# each row must land within half the last published digit:

# %%
from moe_edu.presets import OPEN_MOES

open_rows = []
for name, published in OPEN_MOES.items():
    shape, count = published.shape, moe_edu.count_parameters(published.shape)
    c = shape.config
    tol = published.tolerance_b
    ok = abs(count.total / 1e9 - published.total_b) <= tol and abs(count.active / 1e9 - published.active_b) <= tol
    open_rows.append(
        {
            "model": name,
            "experts": f"{c.num_local_experts}" + (" + shared" if shape.shared_intermediate_size else ""),
            "k": c.num_experts_per_tok,
            "expert width": c.intermediate_size,
            "total (B)": f"{count.total / 1e9:.2f}",
            "active (B)": f"{count.active / 1e9:.2f}",
            "published": f"{published.total_b:g} / {published.active_b:g}",
            "within ±tolerance": ok,
            "combinations": f"{math.comb(c.num_local_experts, c.num_experts_per_tok):,}",
        }
    )
print("every row matches what its authors published:", all(r["within ±tolerance"] for r in open_rows))
Table(open_rows)

# %% [markdown]
# Sources of the published counts: Mixtral 8x7B, Jiang et al. 2024 (47B / 13B); Mixtral 8x22B, Mistral AI's
# announcement (141B / 39B); OLMoE-1B-7B, Muennighoff et al. 2024 (arXiv 2409.02060: 6.9B / 1.3B);
# Qwen1.5-MoE-A2.7B, its model card (14.3B / 2.7B); DBRX, its model card (132B / 36B). The config fields were
# checked for this course against public copies of each `config.json` (Qwen's `moe_intermediate_size` 1408,
# `shared_expert_intermediate_size` 5632; OLMoE's 64 experts of width 1024, top-8; DBRX's `ffn_hidden_size`
# 10752, 16 experts, top-4, 8 K/V heads). Not in the table: DeepSeek-V2(-Lite) and V3, whose Multi-head Latent
# Attention this count does not model, and Grok-1, for which no active count was published.
#
# The table is also a history of granularity: from Mixtral's 8 wide experts ($G = 1$, 28 combinations) to OLMoE's
# 64 narrow ones, 8 at a time — the direction Krajewski et al.'s laws point.
#
# <details><summary>Check: OLMoE-1B-7B runs 8 experts per token, Mixtral 2. Why is its active share not 4× Mixtral's?</summary>
#
# The share of expert parameters a token uses is $k/E$, whatever the expert width: $8/64 = 1/8$ for OLMoE against
# $2/8 = 1/4$ for Mixtral. OLMoE runs 4 times as many experts per token but holds 8 times as many, each narrow
# (width 1024 at hidden size 2048), so its share halves. Granularity changes how many experts run and how many
# combinations exist, not the fraction of the weights a token touches.
# </details>

# %% [markdown]
# ## 10. Adaptive k: fewer experts where the router is sure
#
# Top-2 spends two expert calls on every token, even when the router gives the second expert a weight near 0. Two
# published rules spend less:
#
# - **skip by ratio** (Lu et al. 2024, "Not All Experts are Equal", arXiv 2402.14800, on Mixtral 8x7B): drop the
#   second expert when its weight is below $\beta$ times the first's, and let the first carry the whole token;
# - **top-p** (Huang et al. 2024, "Harder Tasks Need More Experts: Dynamic Routing in MoE Models", arXiv 2403.07652):
#   keep the fewest best experts whose router probabilities reach $p$ — one for a confident token, more for an
#   unsure one. Huang et al. *train* with this rule. Applied after training to a top-2 model — as here, and as Lu
#   et al. apply theirs — either rule is an approximation, and the price is the change in the output.
#
# First in plain torch, on the batch of §2 (the trained layer's inputs when the checkpoint is installed):

# %%
import itertools

from moe_edu.variants.adaptive_k import AdaptiveKRouter, experts_per_token

if trained is not None:
    xa, block_a = trained[0][0], trained[1]  # (T, H) real inputs of layer LAYER, its trained block
else:
    xa, block_a = flat_x, block  # (N, H) random hidden states, the untrained block
beta = 0.5
with torch.no_grad():
    top = torch.softmax(block_a.gate.logits(xa), -1).topk(2)  # (T, 2)
    w = top.values / top.values.sum(-1, keepdim=True)  # (T, 2) Mixtral's weights
    keep_second = w[:, 1] >= beta * w[:, 0]  # (T,)
    outs = torch.zeros(2, *xa.shape)  # (2, T, H): each token's first- and second-choice expert output
    for j in range(2):
        for e in range(block_a.num_experts):
            rows = top.indices[:, j] == e
            if rows.any():
                outs[j, rows] = block_a.experts.expert(e, xa[rows])
    w_kept = torch.stack([w[:, 0], w[:, 1] * keep_second], -1)  # (T, 2)
    w_kept = w_kept / w_kept.sum(-1, keepdim=True)  # renormalised over the kept experts
    y_skip = (w_kept.T[:, :, None] * outs).sum(0)  # (T, H)
    y_full = (w.T[:, :, None] * outs).sum(0)  # (T, H)

    adaptive = copy.deepcopy(block_a)  # the same experts behind an adaptive gate
    adaptive.gate = AdaptiveKRouter.like(block_a.gate, rule="ratio", threshold=beta)
    y_lib = adaptive.eval()(xa[None])[0][0]  # (T, H)
top2_mass = top.values.sum(-1).mean().item()
print(f"this router's mean top-2 probability mass is {top2_mass:.2f}: unsure (< 0.8):", top2_mass < 0.8)
print(f"beta = {beta}: tokens that keep both experts: {keep_second.float().mean():.1%}")
print("library (AdaptiveKRouter, rule='ratio') = plain torch:", torch.allclose(y_lib, y_skip, atol=1e-5))
print("plain torch with both experts = Mixtral's block:", torch.allclose(y_full, block_a(xa[None])[0][0], atol=1e-5))

# %% [markdown]
# Now on the whole trained model: every layer's router swapped for an adaptive one (same weights), run on the
# seven documents of §2, measuring the expert calls per token and the language-modelling loss.


# %%
def adaptive_run(model, ids, rule=None, threshold=1.0):
    """(mean experts per token over layers and tokens, mean next-token loss) with every gate made adaptive."""
    gates = [layer.mlp.gate for layer in model.model.layers]
    calls, losses = [], []

    def count_calls(module, args, out):  # re-route the layer's real input with its (adaptive) gate
        calls.append(experts_per_token(module.gate(args[0].reshape(-1, args[0].shape[-1]))))

    hooks = [layer.mlp.register_forward_hook(count_calls) for layer in model.model.layers]
    try:
        if rule is not None:
            for layer, gate in zip(model.model.layers, gates, strict=True):
                layer.mlp.gate = AdaptiveKRouter.like(gate, rule=rule, threshold=threshold)
        with torch.no_grad():
            for seq in ids:
                x = torch.tensor([seq])  # (1, T)
                losses.append(F.cross_entropy(model(x).logits[0, :-1], x[0, 1:]).item())
    finally:
        for hook in hooks:
            hook.remove()
        for layer, gate in zip(model.model.layers, gates, strict=True):
            layer.mlp.gate = gate
    return sum(calls) / len(calls), sum(losses) / len(losses)


if trained is None:
    print("trained checkpoint not installed: the whole-model sweep needs it (skipped)")
    sweep_k = {}
else:
    model_t, ids_t = trained[3], trained[4]
    sweep_k = {("top-2 (Mixtral)", None): adaptive_run(model_t, ids_t)}
    for rule, thresholds in (("ratio", (0.3, 0.5, 0.7, 0.9)), ("top_p", (0.5, 0.3, 0.2))):
        for t in thresholds:
            sweep_k[(f"{rule} {t}", rule)] = adaptive_run(model_t, ids_t, rule, t)

# %% [markdown]
# The exact losses depend on your CPU's floating-point kernels; the checked lines after the table hold everywhere.

# %% tags=["nbval-ignore-output"]
if sweep_k:
    base_calls, base_loss = sweep_k[("top-2 (Mixtral)", None)]
    print("rule            experts/token   expert compute saved   loss    loss change")
    for (label, _), (calls, loss) in sweep_k.items():
        print(f"{label:16s} {calls:12.3f}   {1 - calls / base_calls:18.1%}   {loss:6.3f}   {loss - base_loss:+.3f}")

# %%
if sweep_k:
    betas = (0.3, 0.5, 0.7, 0.9)
    ratio_calls = [sweep_k[(f"ratio {t}", "ratio")][0] for t in betas]
    ratio_loss = {t: sweep_k[(f"ratio {t}", "ratio")][1] for t in betas}
    print("top-2 runs exactly 2 experts per token:", base_calls == 2.0)
    print("a larger beta runs fewer experts:", all(a >= b for a, b in itertools.pairwise(ratio_calls)))
    print(
        "beta = 0.7 saves over 10 % of expert calls for under 1 % more loss:",
        1 - ratio_calls[2] / 2 > 0.10 and ratio_loss[0.7] < 1.01 * base_loss,
    )
    print("skipping more costs more loss (beta 0.9 above beta 0.5):", ratio_loss[0.9] > ratio_loss[0.5])

# %% [markdown]
# The trade is real but modest on this model: its router is unsure (the checked top-2 mass above), so few tokens
# have a second expert worth skipping until $\beta$ is large, and the loss climbs as the saving grows — the checked
# lines above. Lu et al. report faster Mixtral 8x7B inference with this rule for a
# small accuracy drop. The saving is in expert FLOPs and, when decoding one token at a time, in expert weights read
# (notebook 10 §1); in a large batch it shrinks, because some other token still needs the skipped expert.

# %% [markdown]
# > **中文回顧**　八種路由規則都從同一個 (N, E) 分數矩陣出發：每個 token 挑分數最高的 k 個專家，或由專家選擇路由讓每個專家挑 C 個 token；容量因子固定名額並丟棄溢出，Mixtral 則是無丟棄。
# > 軟性混合專家不做離散選擇，無輔助損失負載平衡只用偏差來選專家；總參數與啟用參數相同的變體，路由可以大不相同。

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
# - Soft MoE has no per-token active set: its cost is $Ep/m$ expert calls per token, a free choice; at $p = 2m/E$ it
#   costs what Mixtral's top-2 costs.
# - Capacity and drops came from static shapes (XLA on TPUs), not from experts living on several devices.
# - Loss-free balancing (Wang et al. 2024, used by DeepSeek-V3) moves a selection-only bias against the load.
# - The gate has named design choices — softmax or sigmoid scores, renormalised or not, router jitter in
#   training — each changing weights or exploration, not (without a bias) which experts one token picks.
# - Fine-grained experts keep total and active parameters and multiply the expert combinations; five open MoEs'
#   published sizes follow from their configs with one counting function.
# - Adaptive k (skip by ratio, top-p) saves expert calls where the router is sure, at a measured cost in loss.
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
# 7. A Soft MoE layer with E = 8 experts and groups of m = 256 tokens should cost what Mixtral's top-2 costs per
#    token. How many slots per expert does it need, and what happens to the cost if the group doubles?
#
# <details><summary>Answer</summary>
#
# Two expert calls per token: $Ep/m = 2$, so $p = 2m/E = 64$ slots per expert (512 slots in all). The cost per token
# is $Ep/m$ expert calls, so with $p$ fixed, doubling $m$ halves it — which is why a bare "active share" for Soft
# MoE means nothing without the slots per token it was computed at (§6).
#
# </details>
#
# 8. Why did Switch and GShard drop tokens, when Mixtral's code does not — and does expert parallelism force drops?
#
# <details><summary>Answer</summary>
#
# They were compiled with XLA for TPUs, where every tensor shape is fixed at compile time, so each expert had a
# buffer of C rows and whatever did not fit was dropped. Expert parallelism alone does not force it: the
# all-to-all can carry variable-size blocks, as MegaBlocks and notebook 10's `ExpertParallelMoeBlock` do without
# dropping anything.
#
# </details>
#
# 9. With `GateChoices(normalize=False)`, a token's top-2 softmax mass is 0.6. How does its layer output compare
#    with Mixtral's, and why might a designer want that?
#
# <details><summary>Answer</summary>
#
# The same two experts with the same relative weights, so the output is $0.6	imes$ Mixtral's (§8 checks this
# exactly). The layer's contribution then carries the router's confidence: an unsure token is damped instead of
# passing the full expert mixture into the residual stream. Mixtral and DeepSeek-V3 renormalise; Switch,
# DeepSeek-V2 and Qwen1.5-MoE do not.
#
# </details>
#
# 10. DBRX picks 4 of 16 experts per token, Mixtral 8x7B 2 of 8. Count the expert combinations of each, and say
#     what splitting experts finer leaves unchanged.
#
# <details><summary>Answer</summary>
#
# $\binom{16}{4} = 1820$ against $\binom{8}{2} = 28$: 65 times more (DBRX's model card gives the same "65x").
# Splitting each expert into $G$ of width $I/G$ and routing to $Gk$ leaves the expert parameters, total and active,
# unchanged (§9's table); the router grows $G$-fold and the matmuls get smaller — the engineering price.
#
# </details>
#
# 11. You skip the second expert whenever its weight is below half the first's ($\beta = 0.5$). Which tokens lose
#     their second expert, and why is the saving not free on this model?
#
# <details><summary>Answer</summary>
#
# Tokens whose renormalised weights satisfy $w_2 < 0.5\,w_1$, i.e. $w_2 < 1/3$: the confident ones. Their output
# becomes the first expert's alone. The model was trained with top-2 everywhere, so the second expert's small
# contribution was part of what training fitted; removing it shifts the residual stream, and §10's sweep measures
# that shift as a loss increase. Huang et al. avoid the mismatch by training with top-p from the start.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex09_moe_family.ipynb`: Switch routing with a capacity (9.1) and the Switch layer with its
# dropped tokens (9.2), expert-choice routing (9.3) and the expert-choice layer with its unrouted tokens (9.4) —
# checkers in `moe_edu.course.exercises.family` — and an open question: why does Mixtral not use expert choice (9.5)?

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 00 · Mixtral at a glance
#
# > **Mixtral 8x7B 是一種稀疏混合專家模型（Sparse Mixture of Experts, SMoE）** — *"Mixtral 8x7B is a sparse
# > mixture-of-experts model."* — the seed article, §1
#
# > **中文導讀**　Mixtral 8x7B 是稀疏混合專家模型（SMoE）：每層有 8 個專家，每個 token 只由路由網路挑選其中 2 個來計算。
# > 本章從設定檔逐項算出總參數量 46,702,792,704（約 470 億）與啟用參數 12,879,925,248（約 130 億），
# > 並說明為什麼每個 token 的計算量只有同樣大小稠密模型的約 27%，記憶體卻一點也省不下來。架構上的事實我們用程式碼重現；
# > 基準測試、多語言、passkey 檢索與社會偏見評測（BBQ、BOLD）等模型層級的結果則註明出處、引用論文。
# > 章末的詞彙表把種子文章的中文用語對應到英文與程式碼名稱。
#
# This course takes one short article — a Traditional Chinese summary of the Mixtral paper
# ([Jiang et al., 2024, arXiv:2401.04088](https://arxiv.org/abs/2401.04088)) — and turns every sentence of it into
# code you can run. This first notebook is the map: what the article claims, what the layer looks like, and where
# the famous numbers **47B** and **13B** come from.
#
# **Learning objectives.** After this notebook you can
#
# 1. say which of the seed's claims this course reproduces in code and which are model-level results we cite;
# 2. draw the Mixtral decoder layer and its sparse MoE block, and name every box;
# 3. compute Mixtral 8x7B's **46,702,792,704** total and **12,879,925,248** active parameters from its config, term by term;
# 4. explain why a token costs ~27 % of the FLOPs of a dense model of the same size — and why the memory bill is not sparse;
# 5. translate the seed's vocabulary (專家, 路由網絡, 稀疏激活, 加權輸出 …) into English and into code names.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()  # seed 0, one thread, 4-digit printing: the same numbers every run

import matplotlib.pyplot as plt
import torch

from moe_edu.course.diagram import draw_mixtral_block
from moe_edu.course.glossary import glossary_table
from moe_edu.course.plots import parameter_breakdown

# %% [markdown]
# ## 1. What the seed claims — and what this course can check
#
# The seed lists Mixtral's headline facts. Some are *architecture* facts: they follow from the configuration, so we
# can compute or build them. Others are *model-level results*: they need the trained 8x7B weights plus benchmark
# suites, so we cite the paper and do not pretend to reproduce them.
#
# | seed (zh-TW) | in English | status in this course | where |
# |---|---|---|---|
# | 每層 8 個專家 | 8 experts per layer | **computed** from the config (`num_local_experts = 8`) | 00, 05 |
# | 每個 token 僅選 2 個專家，透過路由網絡決定 | each token goes to 2 experts, chosen by a router | **built** by hand and checked against `transformers` | 01–05 |
# | 總參數量 470 億（47B） | 47B total parameters | **computed** exactly: 46,702,792,704 | 00 |
# | 推論時僅使用 130 億活動參數（13B） | only 13B active parameters at inference | **computed** exactly: 12,879,925,248 | 00 |
# | 顯著降低計算成本 | much lower compute cost | **computed** (FLOPs per token) and **measured** (timings) | 00, 03 |
# | 支援 32k tokens 上下文視窗 | 32k-token context window | *cited* — paper §3.2, Fig. 4 (passkey retrieval, perplexity falling with context length); **config fact**: `sliding_window: null`, i.e. dense attention over all 32,768 positions (`max_position_embeddings = 32768` alone proves nothing: Mistral 7B has the same value with a 4,096-token window) | 00, 11 |
# | 超越或匹配 Llama 2 70B 和 GPT-3.5 | matches or beats Llama 2 70B and GPT-3.5 | *cited* — paper Table 2 and Fig. 2 (Llama 2), Table 3 (GPT-3.5); on *most*, not all, benchmarks (see below) | — |
# | 數學、程式碼生成、多語言處理表現卓越 | strong at maths, code, multilingual | *cited* — paper Tables 2–4 | — |
# | 法語、德語、西班牙語、義大利語優於 Llama 2 70B | beats Llama 2 70B in French, German, Spanish, Italian | *cited* — paper Table 4 | — |
# | Passkey 檢索任務達到 100% 準確度 | 100 % passkey retrieval | *cited* — paper §3.2, Fig. 4 (at every context length and passkey position) | — |
# | Instruct 超越 GPT-3.5 Turbo、Claude-2.1、Gemini Pro、Llama 2 70B-chat | Instruct beats GPT-3.5 Turbo, Claude-2.1, Gemini Pro, Llama 2 70B-chat | *cited* — paper §4, LMSys Arena (Dec 2023) | — |
# | BBQ 偏差較少，BOLD 情感更正向 | less bias on BBQ, more positive sentiment on BOLD | *cited* — paper §3.3, Fig. 5 (BBQ accuracy 56.0 % vs 51.5 % for Llama 2 70B) | — |
# | Apache 2.0 許可 | Apache 2.0 licence | *fact* (this course is Apache 2.0 too) | — |
#
# The architecture rows are the subject of notebooks 00–05. Notebook 08 repeats the paper's *routing analysis*
# (§5) on a model we train ourselves, which is the closest a laptop gets to the model-level claims.
#
# A cited claim is only as good as its reading. The abstract says Mixtral outperforms or matches Llama 2 70B and
# GPT-3.5 "across all evaluated benchmarks"; §1 says "most benchmarks", and the paper's own tables agree with §1:
# in Table 2 Llama 2 70B is ahead on HellaSwag (85.4 vs 84.4), WinoGrande (80.4 vs 77.2) and TriviaQA (73.0 vs
# 71.5), and in Table 3 Mixtral's WinoGrande (81.2) is below both Llama 2 70B (83.2) and GPT-3.5 (81.6).

# %% [markdown]
# ## 2. The picture
#
# The seed's figure was lost in export ("*figure omitted*"), so we draw it ourselves — with code, from the config,
# so the same function draws the tiny course model and the real 8x7B.
#
# Every one of Mixtral's 32 decoder layers is a standard pre-norm transformer layer (RMSNorm → attention →
# residual → RMSNorm → feed-forward → residual). The paper (§2) names **two** differences from Mistral 7B: the
# attention is fully dense over a 32k context (no sliding window; the released config also raises the RoPE base
# `rope_theta` to 1e6), and the feed-forward is replaced by a **sparse mixture-of-experts block** — a router plus
# 8 SwiGLU experts, of which each token uses 2. The picture shows the second.
#
# To make the picture honest, we route one random token with a random router (plain torch) and highlight the two
# experts it actually picked, with their weights.

# %%
config = moe_edu.PRESETS["mixtral-8x7b"]
H, E, k = config.hidden_size, config.num_local_experts, config.num_experts_per_tok

x = torch.randn(H)  # (H,) one token's hidden state
W_g = torch.randn(E, H) * 0.02  # (E, H) the router: a bias-free linear layer
probs = torch.softmax(W_g @ x, dim=-1)  # (E,) one probability per expert
top_p, top_i = torch.topk(probs, k)  # (k,), (k,) the two best experts
weights = top_p / top_p.sum()  # (k,) renormalised: they sum to 1
print("chosen experts:", top_i.tolist(), " weights:", [round(w, 4) for w in weights.tolist()])

# %%
fig = draw_mixtral_block(config, chosen=top_i.tolist(), weights=weights.tolist())
plt.show()

# %% [markdown]
# Read it left to right: the token's hidden state `x` enters the router, which scores all 8 experts; only the two
# coloured ones run (each expert keeps its colour in every figure of the course and in the routing explorer); their
# outputs are mixed with the weights `w`, and the result `y` is added to the residual stream.
# Notebooks 01–05 build exactly these boxes, one per notebook.

# %% [markdown]
# ## 3. The configuration
#
# Everything that follows is arithmetic on a handful of integers from Mixtral-8x7B-v0.1's `config.json`. `moe_edu`
# keeps them in a dataclass with the same field names as `transformers.MixtralConfig`.

# %%
fields = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "num_local_experts",
    "num_experts_per_tok",
    "max_position_embeddings",
]
for name in fields:
    print(f"{name:>24} = {getattr(config, name):>6}")
print(f"{'head_dim':>24} = {config.attention_head_dim:>6}  (hidden_size / num_attention_heads)")

# %% [markdown]
# ## 4. 47B total, 13B active — term by term
#
# Name the integers: vocabulary $V$, width $H$, expert width $I$, layers $L$, experts $E$, top-$k$; query heads
# $n_q$, key/value heads $n_{kv}$, head size $d$. Then every weight matrix of the model is one of these:
#
# | component | shape | count |
# |---|---|---|
# | token embedding | $V \times H$ | $VH$ |
# | attention $W_q, W_k, W_v, W_o$ (per layer) | $H\times n_q d,\; H \times n_{kv} d$ (twice), $n_q d \times H$ | $L(2Hn_qd + 2Hn_{kv}d)$ |
# | router $W_g$ (per layer) | $E \times H$ | $LEH$ |
# | one SwiGLU expert: $w_1, w_3$ ($I\times H$), $w_2$ ($H \times I$) | | $3HI$ each, $LE \cdot 3HI$ in all |
# | RMSNorm weights: 2 per layer + 1 final | $H$ | $(2L+1)H$ |
# | LM head | $H \times V$ | $HV$ |
#
# A token touches every weight **except the experts it was not routed to**: the active count swaps $E$ for $k$ in
# the expert term. Let us do the sums in plain Python.

# %%
V, I, L = config.vocab_size, config.intermediate_size, config.num_hidden_layers
nq, nkv, d = config.num_attention_heads, config.num_key_value_heads, config.attention_head_dim

terms = {
    "embedding      V*H": V * H,
    "attention      L*(2*H*nq*d + 2*H*nkv*d)": L * (2 * H * nq * d + 2 * H * nkv * d),
    "router         L*E*H": L * E * H,
    "experts        L*E*3*H*I": L * E * 3 * H * I,
    "norms          (2L+1)*H": (2 * L + 1) * H,
    "lm_head        H*V": H * V,
}
total = sum(terms.values())
active = total - L * E * 3 * H * I + L * k * 3 * H * I  # swap E experts for the k a token uses
for name, n in terms.items():
    print(f"{name:<42} {n:>15,}  ({n / total:6.2%})")
print(f"{'total':<42} {total:>15,}")
print(f"{'active (experts: k=2 of E=8)':<42} {active:>15,}")

# %% [markdown]
# There they are: **46,702,792,704 ≈ 47B** (the seed's 470 億) and **12,879,925,248 ≈ 13B** (130 億). Over 96 %
# of the parameters sit in the experts — that is the whole point: the experts are where capacity is cheap to add,
# because a token only pays for $k$ of them.
#
# The library does the same accounting in `moe_edu.count_parameters`; the two must agree to the last digit.

# %%
count = moe_edu.count_parameters(config)
print(count)
print("hand-computed == library:", (total, active) == (count.total, count.active))

# %%
fig = parameter_breakdown(count, title="Mixtral 8x7B: stored vs used per token")
plt.show()

# %% [markdown]
# **Why not 8 × 7B = 56B?** ("7B" is a rounded name: the Mistral-7B-shaped model below has 7.24B parameters, so
# eight copies would be 57.9B, not 56B.) Only the feed-forward part is replicated 8 times; the embeddings,
# attention and norms are shared. Take the same config with a single expert — that is Mistral 7B's shape, up to a router of one
# 4096-vector per layer ($L \cdot 1 \cdot H$ = 131,072 parameters over 32 layers; the 8-expert router is 32,768 *per
# layer*). The attention differs in reach (dense 32k vs a 4,096-token window), not in parameters:

# %%
dense = moe_edu.count_parameters(config.replace(num_local_experts=1, num_experts_per_tok=1))
shared = count.total - count.experts
print(f"one expert (a Mistral-7B-shaped dense model): {dense.total:,}  ({dense.total / 1e9:.2f}B)")
print(f"shared by all experts (embed, attention, norms, router, head): {shared:,}  ({shared / 1e9:.2f}B)")
print(f"8 x {dense.total / 1e9:.2f}B would be {8 * dense.total / 1e9:.1f}B; the real total is {count.total / 1e9:.1f}B")

# %% [markdown]
# ## 5. Compute: dense-equivalent vs active FLOPs per token
#
# A forward pass multiplies each weight a token touches once: one multiply and one add, **2 FLOPs per active
# weight** (the embedding is a table lookup and costs nothing). Compare with a *dense-equivalent* model — the same
# 46.7B weights, but every token runs through all of them (equivalently: $k = E$).

# %%
flops = moe_edu.flops_per_token(config)
print(f"dense-equivalent: {flops.dense_equivalent / 1e9:6.1f} GFLOPs per token")
print(f"Mixtral (top-2):  {flops.active / 1e9:6.1f} GFLOPs per token")
print(f"ratio active / dense = {flops.ratio:.4f}   (k / E = {k / E:.4f})")

# %% [markdown]
# The ratio is a bit above $k/E = 0.25$ because attention, the router and the LM head are shared and always run.
# Attention also costs FLOPs that grow with the context (the $QK^\top$ and $AV$ products, $4 L\, n_q d$ per token
# of context), which no routing can skip:

# %%
for context in (0, 4096, 32768):
    f = moe_edu.flops_per_token(config, context=context)
    print(
        f"context {context:>6}: active {f.active / 1e9:6.1f} GFLOPs, dense-equivalent "
        f"{f.dense_equivalent / 1e9:6.1f} GFLOPs, ratio {f.ratio:.3f}"
    )

# %% [markdown]
# **Sparse compute, dense memory.** A token only *uses* 12.9B weights, but which 12.9B depends on the token, so all
# 46.7B must be in memory: in bf16 (2 bytes each) that is

# %%
print(
    f"bf16 weights: {count.total * 2 / 1e9:.1f} GB to store, {count.active * 2 / 1e9:.1f} GB read per generated token at batch size 1"
)

# %% [markdown]
# That is the trade Mixtral makes: the *speed* of a 13B model with the *memory* of a 47B one.

# %% [markdown]
# ## 6. The same formulas on the course's tiny model
#
# Nothing above is special to 8x7B. The notebooks run a `tiny` preset with Mixtral's proportions (8 experts, top-2,
# $I = 3.5H$, 4 query heads per K/V head) at width 64. Here we build the real module and count its tensors one by one.

# %%
tiny = moe_edu.PRESETS["tiny"]
model = moe_edu.MixtralForCausalLM(tiny)
n_module = sum(p.numel() for p in model.parameters())
tiny_count = moe_edu.count_parameters(tiny)
print(
    f"tiny: H={tiny.hidden_size}, I={tiny.intermediate_size}, L={tiny.num_hidden_layers}, E={tiny.num_local_experts}, k={tiny.num_experts_per_tok}"
)
print(f"parameters in the nn.Module: {n_module:,}")
print(f"count_parameters(tiny):      {tiny_count.total:,} total, {tiny_count.active:,} active")
print("equal:", n_module == tiny_count.total)

# %% [markdown]
# ## 7. Glossary: the seed's words, in English and in code
#
# The seed writes in Traditional Chinese; the paper and the code write in English. This table links the three and
# names the notebook that teaches each idea, from the seed's own words (notebooks 00–05) to the terms of notebooks
# 05–12 that the seed never uses (written in Taiwan usage). (`moe_edu.course.glossary.GLOSSARY` holds it as data.)

# %%
glossary_table()

# %% [markdown]
# Two of these deserve a note. **路由網絡** (router network) and **門控網絡** (gating network) are the same thing —
# the seed uses both; the code calls it `gate` (as in `transformers`). And **加權輸出 / 加權融合** (weighted output /
# weighted combination) is the last step of the block: $y = \sum_{i \in \text{top-}k} w_i \, E_i(x)$.
#
# **Taiwan usage.** The seed is written in Traditional characters but uses some Mainland words. The last column
# gives the form a Taiwan reader expects, and the course's own Chinese (the summary boxes, the later terms) uses it:
# 網絡 → **網路** (路由網路、門控網路), 數據 → **資料**, 活動參數 → **啟用參數**, 激活 → **啟用** (稀疏啟用),
# 推理 → **推論**, 優化 → **最佳化**, 性能 → **效能**, 許可 → **授權** (Apache 2.0 授權).
# `moe_edu.course.glossary.TAIWAN_USAGE` lists them, and `term(...)` finds a row by either form.

# %% [markdown]
# > **中文回顧**　Mixtral 8x7B 每層有 8 個專家、每個 token 只用 2 個：總參數量約 470 億，啟用參數約 130 億，計算量約為同樣大小稠密模型的 27%。
# > 記憶體卻不稀疏，全部權重都得放在記憶體裡；基準測試、passkey 檢索與社會偏見評測等模型層級的結果，我們引用論文。

# %% [markdown]
# ## Recap
#
# - Mixtral = Mistral 7B's transformer with dense 32k attention (no sliding window) and every feed-forward replaced
#   by a **sparse MoE block**: a bias-free linear router over $E = 8$ SwiGLU experts, of which each token runs the
#   top $k = 2$.
# - **Total** parameters count every expert: $VH + L(2Hn_qd + 2Hn_{kv}d) + LEH + LE\cdot 3HI + (2L+1)H + HV$ =
#   46,702,792,704. **Active** parameters count only $k$ experts: 12,879,925,248.
# - Forward FLOPs per token ≈ 2 × active parameters: 25.5 GFLOPs instead of 93.1 for a dense model of the same size
#   (ratio 0.274, a bit above $k/E$ because attention and the head are shared).
# - Memory is not sparse: all 46.7B weights must be resident.
# - Benchmarks, multilingual results, passkey retrieval and bias evaluations are properties of the trained model; we
#   cite them.
#
# ## Check your understanding
#
# 1. Which single config field would you change to make the *active* count equal the *total* count? What would the
#    model then be?
#
# <details><summary>Answer</summary>
#
# `num_experts_per_tok`: set $k = E = 8$. Every token then runs every expert, so active = total = 46,702,792,704 and
# the layer is a dense (soft-gated) mixture of 8 experts: the 47B cost of a dense model, with the router only
# mixing the outputs (notebook 04).
#
# </details>
#
# 2. The experts hold 96.6 % of the parameters. Why is the *active* share of the experts much lower (≈ 87.5 %)?
#
# <details><summary>Answer</summary>
#
# A token uses only 2 of the 8 experts, $L \cdot k \cdot 3HI$ = 11.27B parameters, but *all* of the shared part
# (embedding, attention, norms, router, LM head: 1.61B). The shared part is 3.4 % of the total but
# 1.61 / 12.88 ≈ 12.5 % of the active count, so the experts' share of the active count is ≈ 87.5 %.
#
# </details>
#
# 3. Mixtral 8x22B has $H = 6144$, $I = 16384$, $L = 56$, $n_q = 48$, $n_{kv} = 8$. Predict its total and active
#    counts with the formulas above, then check with `moe_edu.count_parameters(moe_edu.PRESETS["mixtral-8x22b"])`.
#
# <details><summary>Answer</summary>
#
# With the preset's $V = 32000$ and $d = 128$: total 140,620,634,112 (≈ 141B), active 39,152,031,744 (≈ 39B).
# The experts term $56 \cdot 8 \cdot 3 \cdot 6144 \cdot 16384$ = 135.3B dominates again; the library prints the
# same two numbers.
#
# </details>
#
# 4. Why does the active/dense FLOP ratio *grow* with the context length?
#
# <details><summary>Answer</summary>
#
# The attention products ($QK^\top$, $AV$) grow with the context and run in full for every token in both models;
# routing only saves expert FLOPs, a fixed amount. The shared cost rises, so the ratio climbs from 0.274 (no
# context) to 0.290 at 4,096 and 0.387 at 32,768 tokens, towards 1 for very long contexts.
#
# </details>
#
# 5. Why does a sparse model save compute but not memory? What would you need to save memory too?
#
# <details><summary>Answer</summary>
#
# Which 2 experts a token needs is only known after its router runs, and different tokens (and layers) need
# different ones, so all 46.7B weights must be at hand. Saving memory needs something else: fewer or smaller
# weights (quantisation, pruning or merging experts) or weights kept elsewhere and fetched on demand (offloading
# with an expert cache that exploits routing locality) — notebooks 11 and 12.
#
# </details>
#
# ## Exercises
#
# The hands-on exercises start with the next notebook: every course notebook from 01 to 12 has a companion in
# `notebooks/exercises/` with the same number — `ex01_gating` (router logits and probabilities), `ex02` (top-k mask
# and weights), `ex03` (dispatch), `ex04` (combining), `ex05` (the full block), `ex06` (routing explorer), `ex07`
# (load-balancing and z-loss), `ex08` (consecutive repetition), `ex09` (Switch and expert choice), `ex10` (scaling
# out), `ex11` (KV cache, expert cache, int8) and `ex12` (upcycling, pruning, aux-loss-free balancing); each has
# checked coding exercises and one open question. Notebook 00 has none: question 3 above is a good warm-up — do it
# in a scratch cell here.
#
# **Next:** [01 · Gating](01_gating.ipynb) — the router.

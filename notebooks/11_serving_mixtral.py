# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 11 · Serving Mixtral: memory, long context, offloading, quantisation
#
# > **支援 32k tokens 上下文視窗。Passkey 檢索任務達到 100% 準確度。**
# > *"Supports a 32k-token context window. Reaches 100 % accuracy on the passkey retrieval task."* — the seed, §1
#
# > *"Mixtral supports a fully dense context length of 32k tokens"* — Mixtral paper, §2
#
# > **中文導讀**　稀疏模型每個 token 只用 13B 啟用參數，但服務時 47B 的權重全都得放在記憶體裡：bf16 約 93.4 GB。
# > 另一個大戶是鍵值快取（KV cache）：靠分組查詢注意力（GQA），Mixtral 每個 token 需 128 KiB，32k 上下文就是 4 GiB；
# > 32k 上下文、批次 32 時達 128 GiB（約 137 GB），超過全部權重的 93.4 GB。本章計算記憶體用量、比較稠密注意力與滑動視窗注意力、
# > 在小模型上做 passkey 檢索（並如實呈現它超出訓練長度就失敗），再把專家卸載（offloading）到 CPU 記憶體，
# > 利用路由的局部性做專家快取與預取（prefetch），最後把專家權重量化成 int8 / int4，量測對路由與損失的影響。
#
# Training a sparse model buys compute: each token runs 2 of 8 experts. Serving it raises a different bill —
# **memory**. Every expert must be reachable although a token uses two; the attention cache grows with every
# token of every sequence. This notebook does the accounting exactly for Mixtral 8x7B and runs each remedy at
# tiny scale: a sliding window, long-context retrieval, expert offloading with a cache, and quantised experts.
#
# **Learning objectives.** After this notebook you can
#
# 1. compute Mixtral's serving memory by hand — weights, active weights, KV cache with grouped-query attention —
#    and what a batched decode step reads, and say when the KV cache outweighs the weights;
# 2. draw dense and sliding-window causal masks, compute a sliding window's receptive field and memory, and
#    compare GQA, the window and DeepSeek-V2's latent (MLA) cache per token;
# 3. run the passkey test of the paper's Fig. 4 on a model trained here, and explain, in terms of query–key
#    offsets, why it fails beyond its training length;
# 4. simulate an LRU expert cache on real routing traces against its no-locality baseline, measure what routing
#    locality and speculative prefetch (Eliseev & Mazur, 2023) are worth in bytes and in time, and turn them
#    into tokens per second;
# 5. quantise expert weights to int8 and int4 in plain torch and measure memory, routing changes and loss.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()  # seed 0, one thread, 4-digit printing: the same numbers every run

import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

GiB, GB = 2**30, 1e9

# %% [markdown]
# ## 1. Where the memory goes
#
# ### 1.1 The KV cache, by hand
#
# Attention keeps, for every past token and every layer, one key and one value vector per **K/V head**. Mixtral
# uses grouped-query attention: 32 query heads share 8 K/V heads (Table 1: `n_kv_heads` 8, `head_dim` 128), so
# only 8 heads are cached. In bf16 (2 bytes):
#
# $$\text{KV bytes per token} = 2\,(\text{K and V}) \times L \times n_{kv} \times d_{head} \times 2 .$$

# %%
L, n_kv, d_head, n_heads, bf16 = 32, 8, 128, 32, 2
kv_per_token = 2 * L * n_kv * d_head * bf16
print(f"KV cache per token: {kv_per_token:,} bytes = {kv_per_token // 1024} KiB")
print(f"one sequence of 32,768 tokens: {kv_per_token * 32768 / GiB:.0f} GiB")
print(f"without GQA (32 K/V heads):    {2 * L * n_heads * d_head * bf16 * 32768 / GiB:.0f} GiB")

# %% [markdown]
# ### 1.2 The weights, by hand
#
# Every parameter must be in memory (some expert of every layer is needed by some token), but one token reads
# only the shared weights and its 2 experts per layer. One expert is three 4096 × 14336 matrices.

# %%
cfg = moe_edu.PRESETS["mixtral-8x7b"]
params = moe_edu.count_parameters(cfg)
expert_bytes = 3 * 4096 * 14336 * bf16
print(f"all weights:    {params.total:,} parameters -> {params.total * bf16 / GB:.1f} GB in bf16")
print(f"active weights: {params.active:,} parameters -> {params.active * bf16 / GB:.1f} GB read per token")
print(
    f"one expert:     {expert_bytes:,} bytes ({expert_bytes / 1e6:.0f} MB); "
    f"2 per layer x 32 layers = {2 * 32 * expert_bytes / GB:.1f} GB of active experts"
)

# %% [markdown]
# ### 1.3 The same with `moe_edu.memory_budget`, at 4k and 32k tokens, batch 1 and 32
#
# All in GB (10⁹ bytes) from here on, so that weights and cache add up on one line: 4 GiB = 4.29 GB.

# %%
from moe_edu.serving.memory import kv_cache_bytes, memory_budget

b = memory_budget(cfg, context_len=32768)
print(
    "memory_budget matches the hand count:",
    b.kv_per_token == kv_per_token and b.kv_total == 4 * GiB and b.weights_total == params.total * bf16,
)
rows = []
for context in (4096, 32768):
    for batch in (1, 32):
        b = memory_budget(cfg, context_len=context, batch_size=batch)
        rows.append((context, batch, b))
        print(
            f"context {context:>6,} batch {batch:>2}: weights {b.weights_total / GB:5.1f} GB + KV cache "
            f"{b.kv_total / GB:6.1f} GB = {b.total / GB:6.1f} GB; KV > all weights: {b.kv_total > b.weights_total}"
        )

# %% [markdown]
# **Capacity.** The weights are stored once, the cache once per sequence. One sequence's cache would equal
# all 93.4 GB of weights only at about 713k tokens, far beyond Mixtral's 32k; at batch 32 it does at about 22.3k
# tokens per sequence, and at 32k × 32 the cache (137.4 GB) is bigger than the whole model.

# %%
print(
    f"KV cache = all weights at {params.total * bf16 / kv_per_token:,.0f} tokens (batch 1), "
    f"{params.total * bf16 / (kv_per_token * 32):,.0f} tokens per sequence (batch 32)"
)

# %% [markdown]
# ### 1.4 What one decode step reads
#
# Decoding is memory-bound: a step's time is about the bytes it reads. One token reads the shared weights, its
# 2 experts per layer (22.5 GB of the 25.8 GB) and its sequence's KV cache. But a decode step of a **batch**
# of B sequences runs B tokens at once, and they choose different experts. Notebook 10's count, restated: under
# uniform top-k routing an expert is missed by one token with probability 1 − k/E, by all B tokens with
# (1 − k/E)^B, so a layer's step hits
#
# $$E\left(1 - (1 - k/E)^B\right) \text{ experts: } 2 \text{ at } B = 1, \text{ all 8 from } B \approx 30 .$$

# %%
E, k = cfg.num_local_experts, cfg.num_experts_per_tok
shared = (params.total - params.experts) * bf16  # attention, embeddings, router, norms: read by every step
print(" batch | experts hit per layer | weights read | KV read at 4k / 32k per sequence")
step = {}
for B in (1, 8, 32, 64):
    hit = E * (1 - (1 - k / E) ** B)
    weights_read = shared + 32 * hit * expert_bytes
    step[B] = (hit, weights_read)
    print(
        f"{B:>6} | {hit:>21.4f} | {weights_read / GB:>9.1f} GB | "
        f"{B * 4096 * kv_per_token / GB:5.1f} / {B * 32768 * kv_per_token / GB:5.1f} GB"
    )
print(
    "batch 1 reads the active weights:",
    abs(step[1][1] - params.active * bf16) < 1,
    "| batch 32 reads more than 99.9 % of all weights:",
    step[32][1] > 0.999 * params.total * bf16,
)

# %% [markdown]
# So the "active parameters" are a batch-1 number. At batch 32 a step reads essentially all 93.4 GB of weights,
# not 22.5 GB of experts, and at 32k tokens per sequence another 137.4 GB of cache: the cache is the bigger
# read from about 22.3k tokens per sequence, the same point as for capacity. At batch 1 the cache would pass the
# 25.8 GB of active weights only at about 197k tokens. `moe_edu.serving.memory.decode_step_bytes` is the same count:

# %%
from moe_edu.serving.memory import decode_step_bytes

d1, d32 = decode_step_bytes(cfg, context_len=32768), decode_step_bytes(cfg, context_len=32768, batch_size=32)
print(
    "decode_step_bytes matches the hand count:",
    abs(d1.weights - step[1][1]) < 1 and abs(d32.weights - step[32][1]) < 1 and d32.kv == 128 * GiB,
)
print(
    f"32k x 32: weights {d32.weights / GB:.1f} GB + KV {d32.kv / GB:.1f} GB read per step; "
    f"KV > weights read: {d32.kv > d32.weights}"
)
print(
    f"KV read = weights read at {d32.weights / (32 * kv_per_token):,.0f} tokens per sequence (batch 32), "
    f"{d1.weights / kv_per_token:,.0f} tokens (batch 1)"
)

# %%
from moe_edu.course.plots import legend_outside

fig, ax = plt.subplots(figsize=(7.0, 3.6))
labels = [f"{c // 1024}k x {n}" for c, n, _ in rows]
weights = [r[2].weights_total / GB for r in rows]
kv = [r[2].kv_total / GB for r in rows]
read = [decode_step_bytes(cfg, context_len=c, batch_size=n).weights / GB for c, n, _ in rows]
ax.bar(labels, weights, label="all weights (bf16)", color="#7a7a7a")  # greys: hue is kept for experts
ax.bar(labels, kv, bottom=weights, label="KV cache (bf16)", color="#c0c0c0", hatch="//", edgecolor="#4d4d4d")
ax.hlines(read, [i - 0.4 for i in range(4)], [i + 0.4 for i in range(4)], color="black", lw=2)
ax.plot([], [], color="black", lw=2, label="weights one decode step reads")
ax.set_xlabel("context x batch")
ax.set_ylabel("GB")
ax.set_title("Mixtral 8x7B serving memory")
legend_outside(ax)
plt.show()

# %% [markdown]
# ### 1.5 Checked against a real cache
#
# `moe_edu.MixtralForCausalLM` returns its KV cache (one `(k, v)` pair per layer, each `(B, n_kv, S, d)`); the
# bytes it holds equal the formula for the tiny preset:

# %%
tiny = moe_edu.PRESETS["tiny"]
model = moe_edu.MixtralForCausalLM(tiny).eval()
ids = torch.randint(0, tiny.vocab_size, (2, 24))  # (B, T)
with torch.no_grad():
    cache = model(ids, use_cache=True).past_key_values
print("layer 0 keys:", tuple(cache[0][0].shape))
print(
    "cache bytes == memory_budget:",
    kv_cache_bytes(cache) == memory_budget(tiny, context_len=24, batch_size=2, kv_dtype=torch.float32).kv_total,
)

# %% [markdown]
# ## 2. Dense 32k attention vs a 4096-token sliding window
#
# Mistral 7B attends to the last W = 4096 tokens only (`sliding_window` 4096 in its config); Mixtral does not
# (`sliding_window` null): its context is "fully dense" (§2). A window makes the cache a **rolling buffer** of
# W tokens. The masks, for 16 tokens and W = 4 (row = query, column = key, dark = may attend):

# %%
from moe_edu.attention import build_attention_mask

T, W = 16, 4
dense = build_attention_mask(T, 0, torch.device("cpu"), None, torch.ones(1, T))[0, 0]  # (T, T) causal
window = build_attention_mask(T, 0, torch.device("cpu"), W, None)[0, 0]  # (T, T) causal, last W keys
hand = torch.tril(torch.ones(T, T, dtype=torch.bool)) & ~torch.tril(torch.ones(T, T, dtype=torch.bool), -W)
print("window mask equals tril minus the band below -W:", torch.equal(window, hand))
fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.4))
for ax, (name, m) in zip(axes, (("dense causal", dense), (f"sliding window W = {W}", window)), strict=True):
    ax.imshow(m.numpy(), cmap="Greys")
    ax.set_title(name)
    ax.set_xlabel("key position")
axes[0].set_ylabel("query position")
plt.show()

# %% [markdown]
# **Receptive field.** One windowed layer sees W − 1 tokens back; a second layer sees what those tokens saw, so
# after L layers information can come from L·(W − 1) tokens back — about W × L, as the Mistral 7B paper puts
# it: 131k tokens for 32 layers of 4096. We can count it: multiply the boolean "can attend" matrix L times.


# %%
def receptive_field(T: int, W: int, layers: int) -> int:
    reach = torch.eye(T, dtype=torch.bool)  # (T, T) which positions each token depends on
    step = build_attention_mask(T, 0, torch.device("cpu"), W, None)[0, 0].float()  # (T, T)
    for _ in range(layers):
        reach = (step @ reach.float()) > 0  # (T, T)
    last = reach[-1].nonzero().min().item()  # earliest position the last token depends on
    return T - 1 - last


for layers in (1, 2, 3):
    print(
        f"W = 4, {layers} layer(s): last token depends on {receptive_field(40, 4, layers)} tokens back "
        f"(L·(W-1) = {layers * 3})"
    )
mistral_like = cfg.replace(sliding_window=4096)
print(
    f"Mixtral-shaped model with W = 4096: receptive field {32 * 4095:,} tokens; KV cache at 32k "
    f"{memory_budget(mistral_like, context_len=32768).kv_total / GiB:.1f} GiB instead of 4 GiB"
)

# %% [markdown]
# The window saves memory (8× at 32k) and attention FLOPs, but what lies beyond W reaches the last token only
# through several layers of summaries. A model with a dense 32k context can look the passkey up directly.

# %% [markdown]
# ### 2.1 A third remedy: compress what is cached (multi-head latent attention)
#
# GQA shares K/V heads; a window drops old tokens. DeepSeek-V2 (arXiv 2405.04434, §2.1; kept in DeepSeek-V3)
# caches neither K nor V. **Multi-head latent attention (MLA)** stores, per token and layer, one low-rank
# latent $c^{KV}_t = W^{DKV} h_t$ of $d_c$ numbers, from which every head's key and value are rebuilt by
# up-projections ($k^C = W^{UK} c^{KV}$, $v^C = W^{UV} c^{KV}$), plus one small key $k^R_t$ of $d^R_h$ numbers,
# shared by all heads, that carries RoPE. DeepSeek-V2 uses $d_c = 512$ and $d^R_h = 64$ (its config:
# `kv_lora_rank` 512, `qk_rope_head_dim` 64), i.e. 576 numbers per token and layer — the paper's "GQA with only
# 2.25 groups". Why a separate RoPE key: RoPE rotates each key by its position, and that rotation would sit
# between $W^{UK}$ and the query, so $W^{UK}$ could no longer be folded into the query (below). A hypothetical
# Mixtral with DeepSeek-V2's latent sizes (32 layers, 32 query heads of 128, bf16), per token and for a 32k
# context:

# %%
d_c, d_rope = 512, 64  # DeepSeek-V2's latent and decoupled RoPE key, numbers per token and layer
per_token = {
    "MHA (32 K/V heads)": 2 * L * n_heads * d_head * bf16,
    "GQA (8 K/V heads, Mixtral)": 2 * L * n_kv * d_head * bf16,
    "MLA (latent 512 + RoPE 64)": L * (d_c + d_rope) * bf16,
}
print("cache                        | bytes/token | 32k x 1  | 32k x 32")
for name, n in per_token.items():
    print(f"{name:28s} | {n:>11,} | {n * 32768 / GB:5.1f} GB | {n * 32768 * 32 / GB:6.1f} GB")
gqa, mla = per_token["GQA (8 K/V heads, Mixtral)"], per_token["MLA (latent 512 + RoPE 64)"]
print(f"{'GQA + window W = 4096':28s} | {gqa:>11,} | {gqa * 4096 / GB:5.1f} GB | {gqa * 4096 * 32 / GB:6.1f} GB")
print(
    f"MLA = GQA with {(d_c + d_rope) / (2 * d_head)} K/V heads: {mla == 2 * L * 2.25 * d_head * bf16}; "
    f"MLA / MHA = {mla / per_token['MHA (32 K/V heads)']:.4f}, MLA / GQA = {mla / gqa:.4f}"
)

# %% [markdown]
# MLA keeps every past token (unlike the window) at 28 % of GQA's bytes here. Its price is compute and
# training: the keys and values are rebuilt from the latent (or the up-projection is folded into the query),
# and the model must be trained with MLA — DeepSeek-V2 reports it stronger than MHA in its comparison, not
# weaker. At tiny size in plain torch — 4 heads of 16 from a hidden size of 64, a latent of 8, a RoPE key of 4:

# %%
T_, H_, nh, dh, dc, dr = 10, 64, 4, 16, 8, 4
h = torch.randn(T_, H_)  # (T, H) hidden states of the tokens so far
W_dkv = torch.randn(H_, dc) / H_**0.5  # (H, d_c) down-projection: hidden -> latent
W_uk, W_uv = torch.randn(dc, nh * dh) / dc**0.5, torch.randn(dc, nh * dh) / dc**0.5  # (d_c, nh*dh) up
W_kr = torch.randn(H_, dr) / H_**0.5  # (H, d_R) the decoupled key, one for all heads
c_kv, k_rope = h @ W_dkv, h @ W_kr  # (T, d_c), (T, d_R): the cache (k_rope would be rotated by RoPE)
k = (c_kv @ W_uk).reshape(T_, nh, dh)  # (T, nh, dh) rebuilt from the latent
v = (c_kv @ W_uv).reshape(T_, nh, dh)  # (T, nh, dh)
print(
    f"cached: c_kv {tuple(c_kv.shape)} + k_rope {tuple(k_rope.shape)}; rebuilt: K {tuple(k.shape)}, V {tuple(v.shape)}"
)
print(f"numbers cached per token: {dc + dr} instead of {2 * nh * dh} (K and V of {nh} heads)")
print("the keys of all heads have rank <= d_c:", torch.linalg.matrix_rank(k.reshape(T_, -1)).item() <= dc)
q, q_rope = torch.randn(nh, dh), torch.randn(nh, dr)  # (nh, dh), (nh, d_R) one new token's query
logits = torch.einsum("hd,thd->ht", q, k) + q_rope @ k_rope.T  # (nh, T) with decompressed keys
q_latent = torch.einsum("hd,chd->hc", q, W_uk.reshape(dc, nh, dh))  # (nh, d_c): W_uk folded into the query
from_cache = q_latent @ c_kv.T + q_rope @ k_rope.T  # (nh, T) straight from the cache, K never built
print("attention logits from the cache equal those from K:", (logits - from_cache).abs().max().item() < 1e-4)

# %% [markdown]
# ## 3. Passkey retrieval on a tiny model (the paper's Fig. 4)
#
# Fig. 4 of the paper hides a random passkey in a long prompt, at a chosen depth, and asks for it: Mixtral
# retrieves it 100 % of the time "regardless of the context length or the position of passkey in the sequence"
# (§3.2). The task is Mohtashami & Jaggi's (2023, "Landmark attention", arXiv 2305.16300; the paper's ref. [23]).
# `moe_edu.serving.passkey` builds such prompts from text for any tokenizer and scores any causal LM that returns
# logits. A prompt of 96 tokens with the key at depth 0.5:

# %%
from moe_edu.course.plots_passkey import plot_passkey_grid
from moe_edu.experiments.passkey import load_passkey_log, load_passkey_model
from moe_edu.serving.passkey import make_prompt, passkey_grid

pk_model, vocab = load_passkey_model()
p = make_prompt(vocab.encode, length=96, depth=0.5, key="40761")
print(len(p.ids), "tokens:", vocab.decode(p.ids))
print("answer:", vocab.decode(p.answer))

# %% [markdown]
# Our model (2 layers, width 64, 8 experts, top-2, 38-word vocabulary) was trained here for 1,500 steps — about
# 1.5 minutes on an idle CPU core, 5 on our shared machine — on such prompts of 64–128 tokens, loss on the key's
# digits only
# (`moe_edu/checkpoints/passkey/README.md` has the command). Keys have five *distinct* digits; why that matters
# is in the last question.

# %%
log = load_passkey_log()
steps = [r["step"] for r in log["log"]]
smooth = lambda xs, n=50: [
    sum(xs[max(0, i - n + 1) : i + 1]) / len(xs[max(0, i - n + 1) : i + 1]) for i in range(len(xs))
]
fig, ax = plt.subplots(figsize=(6.4, 3.0))
(loss_line,) = ax.plot(steps, smooth([r["loss"] for r in log["log"]]), label="loss per digit (left axis)")
ax.set_ylabel("cross-entropy per digit")
ax.set_xlabel("step")
right = ax.twinx()  # a share of keys is not a loss: its own axis, 0 to 1
(kept_line,) = right.plot(
    steps, smooth([r["retrieved"] for r in log["log"]]), color="#7a7a7a", ls="--", label="keys retrieved (right axis)"
)
right.set_ylim(0, 1.05)
right.set_ylabel("share of the batch's keys")
right.spines["right"].set_visible(True)
ax.set_title(f"passkey training, {log['settings']['steps']} steps")
ax.legend(handles=[loss_line, kept_line], loc="center right")
plt.show()
print(
    "the loss and the share of keys on two labelled axes:",
    bool(ax.get_ylabel() and right.get_ylabel()) and right.get_ylim() == (0, 1.05),
)

# %% [markdown]
# Now the grid: prompt lengths up to 4× the longest training prompt (128), five depths, 20 random keys per cell.
# A key counts only when every digit is the model's top choice. Exact percentages may differ by a key or two on
# your machine (near-ties in the logits); the pattern will not.

# %% tags=["nbval-ignore-output"]
LENGTHS, DEPTHS = [64, 96, 128, 192, 256, 384, 512], [0.0, 0.25, 0.5, 0.75, 1.0]
grid = passkey_grid(pk_model, vocab.encode, lengths=LENGTHS, depths=DEPTHS, trials=20, distinct=True, seed=1)
print("\n".join(grid.rows()))

# %%
acc = grid.accuracy
seen, beyond = acc[:3].mean().item(), acc[4:].mean().item()
print(
    f"retrieved at training lengths (<= 128): >= 80 %: {seen >= 0.8}; beyond 2x the training length: <= 50 %: "
    f"{beyond <= 0.5}"
)
fig, ax = plt.subplots(figsize=(7.0, 3.2))
plot_passkey_grid(grid, ax=ax, title="tiny Mixtral, passkey retrieval", train_length=128)
plt.show()

# %% [markdown]
# Read the grid row by row (depth 0 = right after the instruction, 1 = right before the question). The sentences
# below rest on the checked lines of the next cell, which hold on any CPU.

# %%
row_of = {n: i for i, n in enumerate(LENGTHS)}
at = lambda n, d: acc[row_of[n], DEPTHS.index(d)].item()
prompts = {(n, d): make_prompt(vocab.encode, length=n, depth=d, key="40761") for n in LENGTHS for d in DEPTHS}
offset = lambda n, d: n - 1 - prompts[n, d].key_position  # the prompt's last token -> the key
print("offset from the last token back to the key (tokens), by depth:")
for n in (64, 128, 192, 256):
    print(f"  {n:>3} tokens: " + ", ".join(f"{d}: {offset(n, d)}" for d in DEPTHS))
print("192 tokens: depths 0 and 0.25 (key > 127 tokens back) <= 10 %:", at(192, 0.0) <= 0.1 and at(192, 0.25) <= 0.1)
print("192 tokens: depths 0.5 and 0.75 >= 40 %:", at(192, 0.5) >= 0.4 and at(192, 0.75) >= 0.4)
print("192 tokens: depth 1.0 (key 32 tokens back, as at every length) <= 10 %:", at(192, 1.0) <= 0.1)
print("384 and 512 tokens: <= 10 % at every depth:", bool(acc[row_of[384] :].max() <= 0.1))

# %% [markdown]
# Left of the dashed line (lengths it trained on) the tiny model finds most keys at every depth — our small
# version of Fig. 4's green square. Right of it, it collapses, and not in order of distance. At 192 tokens the
# keys near the start fail and the keys in the middle survive (60–70 % on our machine), but the key right before
# the question (depth 1.0) is found 0 % of the time, although it sits 32 tokens back, as it did in training. At
# 384 and 512 tokens next to nothing is retrieved. So the distance to the key is not the whole story.
#
# What did change? With RoPE, the attention logit between a query and a key depends only on their **offset**
# (the rotations of the two positions cancel up to their difference), not on where either sits. In training the
# largest offset was 127. In a 192-token prompt the question's tokens also face keys 128–191 tokens back — the
# instruction, the early filler — at offsets no head was ever trained on, and their softmax spreads over 1.5–4×
# more keys than in any training prompt. A head that learned, say, to find the instruction at the start or to
# ignore the filler can misfire on both counts, and then even a near key is lost. One control separates this
# from the key's own distance: the same long prompts, but each query sees only its last 128 keys (a sliding
# window of 128), so every offset is one the model trained on.

# %% tags=["nbval-ignore-output"]
LONG = [192, 256, 384, 512]
full_cfg = pk_model.config
pk_model.config = full_cfg.replace(sliding_window=128)
seen_offsets = passkey_grid(pk_model, vocab.encode, lengths=LONG, depths=[1.0], trials=20, distinct=True, seed=1)
pk_model.config = full_cfg
print(
    "depth 1.0, window of 128 keys:",
    ", ".join(f"{n}: {a:.0%}" for n, a in zip(LONG, seen_offsets.accuracy[:, 0].tolist(), strict=True)),
)
print("depth 1.0, dense (the grid):   ", ", ".join(f"{n}: {at(n, 1.0):.0%}" for n in LONG))

# %%
print(
    "near key (depth 1.0), 192-512 tokens: window of 128 finds >= 20 % on average:",
    seen_offsets.accuracy.mean().item() >= 0.2,
    "| dense finds <= 10 % at each length:",
    max(at(n, 1.0) for n in LONG) <= 0.1,
)

# %% [markdown]
# With only trained offsets in view, the near key comes back at every length (45–65 % on our machine, where
# dense attention gave 0–5 %). Far keys stay lost: the window cannot reach them directly. The window removes the
# unseen offsets and the longer softmax together, so this control does not say which of the two matters more;
# both come from the training lengths, not from the key's distance. Mixtral's 100 % is measured within its 32k
# context (dense, and trained for it); length generalisation beyond what a model was built and trained for is
# not free, for a tiny model or a large one.

# %% [markdown]
# **The window cuts retrieval.** Give the same model a sliding window of 32 tokens (two layers: a receptive
# field of 62): keys further back than that cannot be reached at all.

# %% tags=["nbval-ignore-output"]
pk_model.config = full_cfg.replace(sliding_window=32)
windowed = passkey_grid(pk_model, vocab.encode, lengths=[64, 96, 128], depths=DEPTHS, trials=20, distinct=True, seed=1)
pk_model.config = full_cfg
print("\n".join(windowed.rows()))

# %%
far = [0, 1]  # depths 0 and 0.25: the key sits 60+ tokens before the question at 96 and 128 tokens
wacc = windowed.accuracy
print(
    "keys beyond the window's reach, 96-128 tokens: dense finds >= 50 %:",
    bool(acc[1:3, far].mean() >= 0.5),
    "| W = 32 finds <= 10 %:",
    bool(wacc[1:3, far].mean() <= 0.1),
)
print(
    "64 tokens: every key within the reach of 62:",
    all(offset(64, d) <= 62 for d in DEPTHS),
    "| yet W = 32 finds <= 10 % at depths 0 and 0.75:",
    bool(wacc[0, 0] <= 0.1 and wacc[0, 3] <= 0.1),
)
print(
    "96-128 tokens, W = 32: depths 0-0.75 <= 10 %:",
    bool(wacc[1:3, :4].max() <= 0.1),
    "| depth 1.0 >= 25 %:",
    bool(wacc[1:3, 4].min() >= 0.25),
)

# %% [markdown]
# But near keys fail too. At 64 tokens every key is within the window's reach, yet depths 0 and 0.75 give 0 %;
# at 96 and 128 tokens only the key right before the question is found (40–65 %). The model was trained with
# dense attention, so a window changes what every head sees — a distribution shift, not only a cut-off. A model
# *trained* with its window (as Mistral 7B is) learns to pass information on through the layers; this one never
# had to.

# %% [markdown]
# ## 4. Offloading experts, and caching them
#
# 93 GB of bf16 weights do not fit a 24 GB GPU, but one token needs only its 2 experts per layer. Eliseev &
# Mazur (2023, arXiv 2312.17238) — the work the paper's §5 points to for caching — serve Mixtral on consumer
# GPUs with three ingredients:
#
# * **mixed quantisation** (HQQ): separate schemes for attention and for the experts, so that the model fits in
#   GPU plus CPU memory at all (their code's README; §5 below does plain int8 / int4);
# * **offloading with an LRU cache**: the experts live in CPU RAM and cross PCIe when needed, and a few experts
#   per layer stay on the GPU, which pays off because consecutive tokens often reuse experts (the paper's
#   Table 5; notebook 08);
# * **speculative prefetch**: apply layer l+1's router to layer l's hidden state to guess layer l+1's experts
#   and start loading them early (described in their report; "upcoming" in their code's README).
#
# ### 4.1 LRU by hand
#
# An LRU cache is an ordered list, least recently used first. Plain Python on a short trace, then the
# library's `LRUCache`:

# %%
from moe_edu.serving.expert_cache import LRUCache


def lru_by_hand(trace, capacity):
    cache, hits = [], 0
    for e in trace:
        if e in cache:
            hits += 1
            cache.remove(e)
        cache.append(e)  # most recently used at the end
        if len(cache) > capacity:
            cache.pop(0)  # evict the least recently used
    return hits, cache


trace = [3, 5, 3, 3, 1, 5, 7, 3]
lib = LRUCache(2)
for e in trace:
    lib.get(e)
print("by hand:", lru_by_hand(trace, 2), " LRUCache:", (lib.hits, list(lib.entries)))

# %% [markdown]
# A layer's expert cache sees one more rule. A token needs its **2** experts together, so a server looks both
# up before it evicts anything: a miss evicts the least recently used expert *this token does not need*.
# Replaying the two experts one after the other through `lru_by_hand` would let the first one's miss evict the
# second — cache [0, 1] with 0 the older, and a token that needs 2 and 0:

# %%
from moe_edu.serving.expert_cache import RoutingTrace, prefetch_accuracy, random_trace, simulate_cache


def lru_tokens_by_hand(tokens, capacity):
    cache, hits = [], 0
    for need in tokens:  # the k experts of one token
        misses = []
        for e in need:  # hits first: they become most recently used, out of eviction's way
            if e in cache:
                hits += 1
                cache.remove(e)
                cache.append(e)
            else:
                misses.append(e)
        for e in misses:
            cache.append(e)
            if len(cache) > capacity:
                cache.pop(0)  # the least recently used: not needed by this token (if capacity >= k)
    return hits, cache


tokens = [[0, 1], [2, 0]]
print("one access at a time:", lru_by_hand([e for t in tokens for e in t], 2), "(0 was evicted for 2, then missed)")
print("token-aware:         ", lru_tokens_by_hand(tokens, 2), "(0 stays, 1 goes)")
two = RoutingTrace(torch.tensor(tokens)[:, None, :], torch.full((2, 1, 2), -1), [0])  # (T, L=1, k)
print("simulate_cache agrees:", simulate_cache(two, 2).hits.tolist() == [lru_tokens_by_hand(tokens, 2)[0]])

# %% [markdown]
# `moe_edu.serving.expert_cache.simulate_cache` replays traces this way, one cache per layer, and the real offloaded
# block of §4.4 looks its experts up in the same order.
#
# ### 4.2 Hit rates on the shipped model's routing
#
# `python -m moe_edu.experiments.serving` routed 15,340 held-out tokens (102 documents of the eight domains) through
# the shipped tiny Mixtral and stored, for each token and layer, the 2 experts chosen and the 2 guessed by the
# next-router trick. We replay them through one LRU cache per layer four ways: in the real token order; in a
# shuffled order (same decisions, locality destroyed, the skewed load kept); through **uniform random** top-2
# routing of the same size (no locality, no skew: the baseline); and in the real order with prefetch. The
# precomputed table (all cache sizes) is checked against live replays:

# %%
from moe_edu.experiments.serving import RESULTS, load_trace

trace = load_trace()
table = json.loads((RESULTS / "cache.json").read_text())
row = lambda c, mode: next(r for r in table["rows"] if r["capacity"] == c and r["mode"] == mode)
n_tok, n_layers, top_k = trace.chosen.shape
uniform = random_trace(n_tok, n_layers, 8, top_k, seed=0)  # (T, L, k) uniform routing, no locality
print(
    f"{n_tok:,} tokens x {n_layers} layers x top-{top_k}; live replays equal the table: "
    f"{simulate_cache(trace, 2).hit_rate == row(2, 'ordered')['hit_rate']}, "
    f"{simulate_cache(uniform, 2).hit_rate == row(2, 'random')['hit_rate']}"
)
print("cache size | hit rate: real order  shuffled  random  + prefetch | experts loaded per token (4 layers)")
for c in range(1, 9):
    o, s, r, pf = row(c, "ordered"), row(c, "shuffled"), row(c, "random"), row(c, "prefetch")
    print(
        f"{c:>10} | {o['hit_rate']:>21.1%} {s['hit_rate']:>9.1%} {r['hit_rate']:>7.1%} {pf['hit_rate']:>11.1%} | "
        f"{o['loads_per_token']:.2f} (LRU), {pf['loads_per_token']:.2f} (prefetch)"
    )
print(
    "no locality, no skew: hit rate within 1 point of C / 8 at every C:",
    all(abs(row(c, "random")["hit_rate"] - c / 8) < 0.01 for c in range(1, 9)),
)

# %% [markdown]
# Why C / 8: without locality the next token's experts are a fresh random pair, and each of the two is one of the
# C cached experts with probability C/8, whichever C they are (at C = 1 a token's two experts take turns in the
# one slot, and the rate is still 1/8). The one-access-at-a-time replay of
# §4.1 does worse on the same random routing, because the token's first expert, just loaded, takes a slot its
# second can never use: (C/8 + (C − 1)/7) / 2, i.e. 11/56 = 19.6 % at C = 2 and 13/28 = 46.4 % at C = 4.

# %%
flat = [uniform.chosen[:, l].reshape(-1).tolist() for l in range(n_layers)]  # per layer, one access after another
for c in (2, 4):
    measured = sum(lru_by_hand(f, c)[0] for f in flat) / (n_tok * n_layers * top_k)
    formula = (c / 8 + (c - 1) / 7) / 2
    print(
        f"C = {c}: token-aware {row(c, 'random')['hit_rate']:.1%} (C/8 = {c / 8:.1%}); one at a time "
        f"{measured:.1%} (formula {formula:.1%}); within 1 point of the formula: {abs(measured - formula) < 0.01}"
    )

# %%
caps = list(range(1, 9))
fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
for mode, style in (("ordered", "-o"), ("shuffled", "--o"), ("prefetch", ":o")):
    axes[0].plot(caps, [row(c, mode)["hit_rate"] for c in caps], style, label=mode)
axes[0].plot(caps, [row(c, "random")["hit_rate"] for c in caps], color="grey", lw=0.8, label="uniform random (≈ C/8)")
axes[0].set_xlabel("experts cached per layer (of 8)")
axes[0].set_ylabel("hit rate")
axes[0].legend(fontsize=8)
for layer in range(4):
    axes[1].plot(caps, [row(c, "ordered")["per_layer"][layer] for c in caps], "-o", label=f"layer {layer}")
axes[1].set_xlabel("experts cached per layer (of 8)")
axes[1].set_title("LRU, real order, per layer")
axes[1].legend(fontsize=8)
plt.show()

# %%
o2, s2, r2 = row(2, "ordered"), row(2, "shuffled"), row(2, "random")
per_layer = o2["per_layer"]
print(
    f"C = 2: real order {o2['hit_rate']:.1%} > shuffled {s2['hit_rate']:.1%} > random {r2['hit_rate']:.1%}:",
    o2["hit_rate"] > s2["hit_rate"] > r2["hit_rate"],
)
print(
    f"C = 2, per layer: last layer {per_layer[3]:.1%} is the highest, layer 2 {per_layer[2]:.1%} the lowest:",
    per_layer[3] == max(per_layer) and per_layer[2] == min(per_layer),
)

# %% [markdown]
# Three readings. Locality pays: at 2 of 8 experts cached, the real order hits 50 % of the time, the shuffled
# order 33 %, uniform random routing 25 %. The shuffled order has no locality left; it beats random only because
# the load is skewed (popular experts stay cached in any order), and that skew is worth 8 points, locality 16
# more. Hit rates follow repetition: the last layer, whose routing repeats most (notebook 08), hits 56 % with
# 2 slots and layer 2, which repeats least, 45 %. And prefetch: guessing the next layer's experts from the
# current hidden state is right most of the time —

# %%
acc_pf = prefetch_accuracy(trace)
print(
    "prefetch accuracy per layer (share of chosen experts that were guessed):",
    ", ".join(f"layer {l}: {a:.1%}" for l, a in enumerate(acc_pf.tolist()) if l > 0),
)

# %% [markdown]
# — so with 2 slots the demanded expert is already there 80 % of the time. But that is not a saving of
# transfers: every guess that was not cached is a load, right or wrong, so prefetch moves **more** bytes over the
# bus (5.03 instead of 4.02 experts per token here: wrong guesses and the experts they evicted). What it buys is
# **time**: a prefetched expert crosses the bus while the previous layer computes, instead of after this layer's
# router has run. Layer 0 has no previous layer to guess from.

# %%
pf2 = row(2, "prefetch")
demand_pf = 2 * n_layers * (1 - pf2["hit_rate"])  # misses the device waits for, per token (4 layers)
print(
    f"C = 2, per token: LRU loads {o2['loads_per_token']:.2f}; prefetch {pf2['loads_per_token']:.2f} "
    f"= {demand_pf:.2f} on demand + {pf2['loads_per_token'] - demand_pf:.2f} prefetched"
)
print(
    "prefetch loads more than LRU at every cache size 1-7:",
    all(row(c, "prefetch")["loads_per_token"] > row(c, "ordered")["loads_per_token"] for c in range(1, 8)),
)

# %% [markdown]
# ### 4.3 What it means for Mixtral 8x7B: a cost model
#
# Decoding at batch 1 is memory-bound. Per token, the experts loaded cross PCIe (352 MB each in bf16, 88 MB in
# 4 bits), and the active weights are read from GPU memory (we assume 1,000 GB/s, a consumer GPU): 25.8 GB in
# bf16, or 8.9 GB with 4-bit experts — attention, embeddings and the router stay in bf16 (3.2 GB), as in §5.
# Bus bandwidths: PCIe 3.0 x16 ≈ 16 GB/s, 4.0 ≈ 32 GB/s, 5.0 ≈ 64 GB/s (nominal). Our tiny model's loads per
# layer stand in for Mixtral's, which we cannot measure here: per token, 32 layers × (loads per layer).
#
# `offload_tokens_per_second` adds the times. A demand miss is found when the router runs, so the GPU waits
# for it: serial. A prefetched load (right or wrong) was started a layer early and overlaps with the GPU's
# reads, so the slower of the two sets its pace. `overlap=True` is the bound where *every* transfer could
# hide — impossible at batch 1, since a demand miss is not known in advance.

# %%
from moe_edu.serving.offload import offload_tokens_per_second

expert_gb = {16: expert_bytes / GB, 4: expert_bytes / 4 / GB}
print("bits  cache        | GB over the bus per token | tokens/s at PCIe 16 / 32 / 64 GB/s")
speed = {}
for bits in (16, 4):
    for c in (2, 4):
        lru, pf = row(c, "ordered"), row(c, "prefetch")
        lru_loads = 32 * lru["loads_per_token"] / n_layers  # Mixtral: experts loaded per token, all layers
        demand = 32 * 2 * (1 - pf["hit_rate"])
        ahead = 32 * pf["loads_per_token"] / n_layers - demand
        for name, d, a in ((f"LRU, {c}", lru_loads, 0.0), (f"+ prefetch, {c}", demand, ahead)):
            tps = [
                offload_tokens_per_second(cfg, d, prefetched=a, pcie_gbs=bw, weight_dtype=bits) for bw in (16, 32, 64)
            ]
            speed[bits, name] = tps
            print(
                f"{bits:>4}  {name:<14} | {(d + a) * expert_gb[bits]:>25.1f} | " + " / ".join(f"{t:6.2f}" for t in tps)
            )
    for name, h in (("no cache", 0.0), ("all fit", 1.0)):
        tps = [offload_tokens_per_second(cfg, 64 * (1 - h), pcie_gbs=bw, weight_dtype=bits) for bw in (16, 32, 64)]
        speed[bits, name] = tps
        print(
            f"{bits:>4}  {name:<14} | {64 * (1 - h) * expert_gb[bits]:>25.1f} | " + " / ".join(f"{t:6.2f}" for t in tps)
        )
bound = offload_tokens_per_second(cfg, 32 * o2["loads_per_token"] / n_layers, pcie_gbs=32, overlap=True)
print(f"bound, bf16, LRU 2, PCIe 32, every transfer hidden (overlap=True): {bound:.2f} tokens/s")

# %%
print(
    "2 cached: prefetch slower than LRU alone on every bus, bf16 and 4-bit:",
    all(p < l for b in (16, 4) for p, l in zip(speed[b, "+ prefetch, 2"], speed[b, "LRU, 2"], strict=True)),
)
print(
    "4 cached, PCIe 64: prefetch faster than LRU alone, bf16 and 4-bit:",
    all(speed[b, "+ prefetch, 4"][2] > speed[b, "LRU, 4"][2] for b in (16, 4)),
)
print(
    "4-bit ceiling (all fit) about 113 tokens/s, not the 155 of an all-4-bit model:",
    round(speed[4, "all fit"][0]) == 113,
    round(offload_tokens_per_second(cfg, 0, pcie_gbs=32, weight_dtype=4, shared_dtype=4)) == 155,
)

# %% [markdown]
# Without a cache, 8x7B in bf16 over PCIe 4.0 decodes at about 1.4 tokens per second: 64 experts, 22.5 GB, cross
# the bus for every token. Every halving of the misses roughly doubles the speed, until the GPU's own reads (26 ms
# per token in bf16, 9 ms with 4-bit experts) set the ceiling. Prefetch is no free lunch. With 2 experts cached
# the bus takes 5–30 times longer than the GPU's reads, so there is little compute to hide the transfers behind,
# and the extra bytes of wrong guesses make prefetch *slower*, in bf16 and in 4 bits. With 4 cached and a fast
# bus the two times become comparable and the overlap wins (10.3 vs 9.4 tokens/s in bf16, 41 vs 34 in 4 bits at
# PCIe 5.0). Both remedies shrink the bus time: quantising the experts to 4 bits divides the bytes on the bus by
# 4, which is why offloading and quantisation are used together.
#
# ### 4.4 A real offloaded block
#
# `OffloadedMoeBlock` keeps only the router resident; the experts live in a safetensors file (one tensor pair per
# expert) and come in through an LRU cache, counting the bytes read. Swapped into every layer of the shipped
# model, generation is unchanged:

# %%
from moe_edu.serving.offload import OffloadedMoeBlock

shipped, tokenizer = moe_edu.load_pretrained()
prompt = torch.tensor([tokenizer.encode("def add(a, b):\n    return")])  # (1, T)
want = shipped.generate(prompt, max_new_tokens=12)
tmp = Path(tempfile.mkdtemp())
for i, layer in enumerate(shipped.model.layers):
    layer.mlp = OffloadedMoeBlock.from_block(layer.mlp, tmp / f"layer{i}.safetensors", cache_size=2)
got = shipped.generate(prompt, max_new_tokens=12)
print("same tokens as the resident model:", torch.equal(got, want))
blocks = [layer.mlp for layer in shipped.model.layers]
one = 3 * shipped.config.hidden_size * shipped.config.intermediate_size * 4
print(
    "bytes read == misses x expert size:",
    sum(b.bytes_read for b in blocks) == one * sum(b.cache.misses for b in blocks),
)

# %% [markdown]
# How many experts it fetched depends on the routing of the tokens generated (your machine's numbers may differ
# by a few):

# %% tags=["nbval-ignore-output"]
print(
    f"experts read: {sum(b.cache.misses for b in blocks)} ({sum(b.bytes_read for b in blocks):,} bytes, "
    f"{one:,} per expert); cache hits: {sum(b.cache.hits for b in blocks)}"
)

# %% [markdown]
# ## 5. Quantised experts
#
# Experts are 96 % of Mixtral's parameters, so shrinking them is what counts. **Weight-only** quantisation keeps
# activations in floating point and stores each weight as a small integer times a scale:
#
# * **int8 per channel**: one scale per output row, $s = \max_j |w_{ij}| / 127$, codes $\mathrm{round}(w/s)$;
# * **int4 group-wise**: one scale per group of $g$ consecutive inputs of a row, $s = \max |w| / 7$, codes
#   $\mathrm{round}(w/s)$ in $[-7, 7]$, two per byte. A 4-bit nibble has 16 levels, $[-8, 7]$; this symmetric
#   scheme never produces −8, so it uses 15 (an asymmetric scheme with a zero-point uses all 16). Smaller groups
#   fit the range better but store more scales.
#
# These are the plain round-to-nearest baselines. Production 4-bit formats — GPTQ, AWQ, HQQ (the one Eliseev &
# Mazur use) — choose scales, zero-points or the rounding itself to minimise the error of the layer's output.
#
# Plain torch first, on expert 0's gate projection of the shipped model's layer 0:

# %%
from moe_edu.serving.quantize import quantize_int4, quantize_int8

shipped, tokenizer = moe_edu.load_pretrained()  # a fresh, resident copy
w1 = shipped.model.layers[0].mlp.experts.w1[0].detach()  # (I, H) = (224, 64)
scale = w1.abs().amax(dim=1, keepdim=True) / 127  # (I, 1)
codes = torch.round(w1 / scale).clamp(-127, 127).to(torch.int8)  # (I, H)
back = codes.float() * scale  # (I, H)
q8 = quantize_int8(w1)
print("hand int8 == quantize_int8:", torch.equal(codes, q8.codes) and torch.equal(back, q8.dequantize()))
print("every error <= scale / 2:", bool(((back - w1).abs() <= scale / 2 + 1e-9).all()))
for name, q in (("int8 per channel", q8), ("int4 g32", quantize_int4(w1, 32)), ("int4 g16", quantize_int4(w1, 16))):
    err = (q.dequantize() - w1).norm() / w1.norm()
    print(f"{name:16s}: {q.nbytes:6,} bytes (fp32 {w1.numel() * 4:,}); relative error < 0.1: {err.item() < 0.1}")

# %% [markdown]
# For Mixtral 8x7B (experts 45.1 B parameters; the rest kept in bf16), with group size 128 as common in 4-bit
# formats. Scales are counted in bf16 (16 bits). Per channel, each output row carries one: w1 and w3 have rows of
# 4,096 inputs (16/4096 bits per weight), w2 rows of 14,336 (16/14336), so about 0.003 extra bits per weight on
# average. Per group, 16 bits per 128 weights: 0.125.

# %%
expert_params = params.experts
rest = (params.total - expert_params) * 2
int8_scale_bits = (2 * 14336 + 4096) * 16 / (3 * 4096 * 14336)  # one bf16 scale per row of w1, w3 (14336), w2 (4096)
print(f"int8 per channel: {int8_scale_bits:.4f} extra bits per weight; below 0.0031: {int8_scale_bits < 0.0031}")
for name, bits_per_weight in (("bf16", 16), ("int8 per channel", 8 + int8_scale_bits), ("int4 g128", 4 + 16 / 128)):
    total = rest + expert_params * bits_per_weight / 8
    print(
        f"experts in {name:17s}: {total / GB:5.1f} GB in all ({expert_params * bits_per_weight / 8 / GB:4.1f} GB experts)"
    )

# %% [markdown]
# At 4 bits the whole model is about 26 GB: small enough for offloading to keep a good share of it on the GPU.
#
# **What it costs in quality.** `python -m moe_edu.experiments.serving` quantised the shipped model's experts (router
# kept in fp32, or quantised too) and compared, on the same 15,340 held-out tokens, the held-out loss and the share of
# tokens whose top-2 expert *set* changed at each layer:

# %%
quant = json.loads((RESULTS / "quantization.json").read_text())
print("experts   router  experts MiB  held-out loss (change)  top-2 set changed, layers 0-3")
for r in quant["rows"]:
    print(
        f"{r['experts']:9s} {r['router']:6s} {r['expert_bytes'] / 2**20:11.2f}  {r['loss']:.4f} ({r['loss_change']:+.4f})"
        f"      " + "  ".join(f"{c:5.1%}" for c in r["topk_changed"])
    )

# %%
fig, ax = plt.subplots(figsize=(7.0, 3.2))
picked = [r for r in quant["rows"] if r["experts"] != "fp32"]
for r in picked:
    ax.plot(
        range(4),
        [100 * c for c in r["topk_changed"]],
        "-o" if r["router"] == "fp32" else "--s",
        label=f"{r['experts']}, router {r['router']}",
    )
ax.set_xlabel("layer")
ax.set_ylabel("tokens with another top-2 set (%)")
ax.set_xticks(range(4))
legend_outside(ax)
plt.show()

# %% [markdown]
# Reading the table:
#
# * **int8 per channel** stores the experts in 26 % of their fp32 bytes (a quarter, plus one fp32 scale per row)
#   and changes almost nothing: at most 0.2 % of top-2 sets, a loss change under 0.0001 nats.
# * **int4 group-wise** stores them in 16–19 % and flips 2.3–3.4 % of the top-2 sets — but only *after* layer 0:
#   layer 0's router reads the embeddings and attention, which are not quantised, so its choices cannot change;
#   later routers read hidden states that the quantised experts of earlier layers moved.
# * **Quantising the router too** multiplies the flips by 2–3, and layer 0 flips as well (5–7 %). The router is
#   4 × 8 × 64 = 2,048 weights here (32,768 per layer in 8x7B): keeping it in full precision is free.
# * The held-out loss moves by less than 0.002 nats (on 3.14) in every row, up or down: a flipped choice is
#   almost always between two experts the router rated nearly equal, so the block's output barely changes. Such
#   differences are noise at this size, not a gain from quantising.

# %% [markdown]
# > **中文回顧**　服務時的記憶體是全部權重（bf16 約 93.4 GB）加上鍵值快取（每個 token 128 KiB，隨批次與上下文成長）；滑動視窗注意力把快取限制在 W 個 token，Mixtral 則保留稠密的 32k 上下文。
# > 小模型的 passkey 檢索只在訓練長度內成功；路由的局部性讓專家快取有效，int8 專家幾乎無損，int4 會改變少數路由決策。

# %% [markdown]
# ## Recap
#
# * Serving memory = all weights (93.4 GB for 8x7B in bf16) + KV cache (128 KiB per token thanks to GQA's 8 K/V
#   heads; 4 GiB = 4.3 GB per 32k sequence). The cache grows with batch × context and equals all the weights at
#   batch 32 from about 22.3k tokens per sequence.
# * "25.8 GB per token" is a batch-1 number: the tokens of a batch-32 decode step hit E(1 − (1 − k/E)^32) ≈ 8
#   experts per layer, so a step reads about all 93.4 GB of weights, plus the whole KV cache.
# * A sliding window caps the cache at W tokens and reaches L·(W − 1) tokens back only through layers; MLA
#   (DeepSeek-V2) caches a 512 + 64 latent per token and layer instead of K and V, 28 % of GQA's bytes at
#   Mixtral's size; Mixtral keeps a dense 32k context, which is what lets it look a passkey up at any depth.
# * A tiny model learns passkey retrieval within its training lengths and fails beyond them — even for a key
#   right before the question: the prompt then holds query–key offsets it never trained on (and a longer
#   softmax). Restricting attention to trained offsets brings the near key back.
# * Routing locality lifts a token-aware LRU expert cache far above uniform routing's C/8; guessing the next
#   layer's experts is right most of the time, but prefetch moves more bytes: it pays by overlapping transfers
#   with compute, which matters only when the bus is not the only bottleneck.
# * int8 experts are nearly free; int4 group-wise changes a few percent of routing decisions downstream; the router
#   is tiny and can stay in full precision.
#
# ## Check your understanding
#
# 1. Why does grouped-query attention cut Mixtral's KV cache by 4 but not its weights memory by much?
#
# <details><summary>Answer</summary>
#
# The cache stores K and V per K/V head: 8 instead of 32 heads is 4× less. The weights it saves are only the
# K and V projections (2 × 4096 × 3072 fewer parameters per layer, about 0.8 B over 32 layers), under 2 % of 46.7 B.
#
# </details>
#
# 2. A decode step of 4,096-token sequences: which does it read more of, weights or KV cache — at batch 1, and
#    at batch 32?
#
# <details><summary>Answer</summary>
#
# Batch 1: the token reads its 25.8 GB of active weights and 4,096 × 128 KiB = 0.5 GB of cache. Batch 32: the 32
# tokens hit 8 · (1 − 0.75³²) ≈ 7.999 experts per layer, so the step reads about all 93.4 GB of weights, and
# 32 × 0.54 GB = 17.2 GB of cache: the weights still dominate. Comparing the cache with "the active experts"
# (22.5 GB) at batch 32 would mix a per-token quantity with a per-batch one. The cache catches up with the
# weights at about 22.3k tokens per sequence (93.4 GB / (32 × 128 KiB)), in bytes read as in memory.
#
# </details>
#
# 3. A 32-layer model with a 4,096-token window: can the last token of a 32k prompt use the first token at all?
#
# <details><summary>Answer</summary>
#
# Yes, indirectly: information can travel 4,095 tokens per layer, up to 32 × 4,095 ≈ 131k tokens back, but only
# through intermediate tokens' summaries, never by attending to it directly — a weaker path than dense attention.
#
# </details>
#
# 4. Why does the tiny model fail on prompts longer than it was trained on, although attention could reach
#    the key?
#
# <details><summary>Answer</summary>
#
# With RoPE a query–key logit depends only on their offset, and training never showed an offset above 127 (nor
# a softmax over more than 128 keys). A longer prompt puts keys — the instruction, the early filler — at offsets
# the heads never learned to handle, and that breaks retrieval even of a key 32 tokens back (depth 1.0: 0 % at
# 192 tokens). Letting each query see only its last 128 keys brings it back (about half the keys). Fig. 4 tests Mixtral
# within its own 32k context (dense, §2; `max_position_embeddings` 32768, `rope_theta` 1e6).
#
# </details>
#
# 5. With 2 of 8 experts cached and no locality, what hit rate would you expect for top-2 routing? Why is the
#    shuffled order above that?
#
# <details><summary>Answer</summary>
#
# It depends on the cache policy. A server looks both of a token's experts up before evicting (token-aware LRU,
# `simulate_cache`): the cache holds 2 experts, each of the next token's experts is one of them with probability
# 2/8, so 25 % — measured 25.1 % on uniform random routing (§4.2). Looked up one at a time, the first expert
# takes a slot the second can never use (a token's two experts differ): (2/8 + 1/7) / 2 = 11/56 = 19.6 %
# (measured 19.6 %). The shuffled trace (33.4 %) has no locality but keeps the skewed load — some experts are
# chosen far more often and stay cached in any order; the real order adds locality on top (49.7 %).
#
# </details>
#
# 6. Why can quantising the *router* change more routing decisions than quantising the experts, although it is
#    a tiny matrix?
#
# <details><summary>Answer</summary>
#
# The top-2 choice flips whenever two logits are close; an error in the router weights moves the logits of
# layer l directly, while expert errors only move the hidden state slightly before the next router. Because the
# router is only E × H weights (32,768 per layer for 8x7B), keeping it in full precision costs nothing.
#
# </details>
#
# 7. How many K/V heads would GQA need to cache as little as MLA with DeepSeek-V2's $d_c = 512$, $d^R_h = 64$,
#    at head size 128? What does a 32k × 32 cache of Mixtral's size then take?
#
# <details><summary>Answer</summary>
#
# MLA caches 512 + 64 = 576 numbers per token and layer; GQA caches 2 × 128 per K/V head, so 576 / 256 = 2.25
# heads — the paper's "GQA with only 2.25 groups". At 32 layers in bf16: 36,864 bytes per token instead of
# 131,072 (8 heads), i.e. 38.7 GB instead of 137.4 GB at 32k × 32. The latent is rebuilt into every head's K and
# V (or the up-projection is folded into the query), so the saving is paid in compute, and the model has to be
# trained with MLA.
#
# </details>
#
# 8. Our passkey keys have five *distinct* digits. Why does a 2-layer model find keys with a repeated digit
#    (e.g. 7 2 7 0 5) harder?
#
# <details><summary>Answer</summary>
#
# After writing a digit, the simplest mechanism finds that digit in the key and copies the one after it (an
# induction head). With a repeated digit, "the digit after 7" is ambiguous (2 or 0); the model must also track
# how far into the key it is. A version trained on keys with repeats for 1,500 steps got the first digit right
# 91 % of the time at 128 tokens but all five only 6 % of the time.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex11_serving.ipynb`: KV-cache bytes per token, the hit rate of an LRU cache on a trace,
# and an int8 round trip.

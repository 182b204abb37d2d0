# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 · The Mixtral SMoE block
#
# > **Mixtral 8x7B 採用固定 8 專家，每 token 僅與 2 專家互動，有效降低計算成本。**
# > *"Mixtral 8x7B uses a fixed set of 8 experts; each token interacts with only 2 of them, which effectively lowers
# > the compute cost."* — the seed, §5
#
# > *"We use the SwiGLU architecture as the expert function E_i(x) and set K = 2."* — Mixtral paper, §2.1
#
# > **中文導讀**　本章把前四章的零件組成完整的 Mixtral 稀疏混合專家區塊：
# > 每個專家是一個 SwiGLU 前饋神經網路（三個矩陣 $W_1$、$W_3$、$W_2$，共 $3HI$ 個參數），
# > 路由網路選出前 2 個專家並加權融合其輸出。我們用約 30 行 PyTorch 手寫這個區塊，證明它和 `moe_edu.SparseMoeBlock`、
# > `transformers` 的 `MixtralSparseMoeBlock` 在相同權重下數值一致（fp32 下）。接著在 meta 裝置上建出真正的 8x7B，
# > 數出 46,702,792,704 個參數，並在 bf16 下執行，路由的 logit 仍以 fp32 計算。
#
# Notebooks 01–04 built the router, the top-k choice, the dispatch and the weighted sum. One piece is missing: the
# experts themselves. This notebook writes a SwiGLU expert, assembles the whole block in ~30 lines of plain torch,
# and then proves it is *the* Mixtral block: same numbers as `moe_edu.SparseMoeBlock` and as `transformers`'
# `MixtralSparseMoeBlock` on the same weights. Finally we scale the config from the tiny course model to the real
# 8x7B (on PyTorch's `meta` device, which stores shapes but no data) and run the block in bf16 as on a GPU.
#
# **Learning objectives.** After this notebook you can
#
# 1. write a SwiGLU expert and say what $w_1$, $w_3$, $w_2$ do and why there are three matrices;
# 2. write the complete Mixtral sparse MoE block from memory;
# 3. load its weights into `moe_edu` and `transformers` and show the outputs agree;
# 4. instantiate Mixtral 8x7B on the meta device and check its 46.7B parameters against the formula of notebook 00;
# 5. explain what changes on a GPU in bf16 — and why `moe_edu` keeps the router's logits in fp32.

# %%
import moe_edu
from moe_edu.course.notebook import format_tensor, setup

setup()

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from moe_edu.course.diagram import draw_swiglu_expert

# %% [markdown]
# ## 1. The expert: SwiGLU
#
# Each expert is the feed-forward network of a Mistral 7B layer: a **gated linear unit** with the SiLU
# ("swish") activation (Shazeer, 2020, *GLU Variants Improve Transformer*):
#
# $$E(x) = W_2\big(\mathrm{silu}(W_1 x) \odot W_3 x\big), \qquad \mathrm{silu}(z) = z\,\sigma(z).$$
#
# - $W_1$ (*gate*, $I \times H$): its SiLU decides, per hidden unit, how much passes;
# - $W_3$ (*up*, $I \times H$): the values that are gated;
# - $W_2$ (*down*, $H \times I$): back to the model width.
#
# Three matrices of $H \cdot I$ each, so $3HI$ parameters per expert — for Mixtral $I = 14336 = 3.5H$, about 176M.
# Drawn with Mixtral's widths (`moe_edu.course.diagram.draw_swiglu_expert`, from the config): two branches read the
# same $x$, the gate's SiLU scales the up projection unit by unit, and $W_2$ brings the product back to width $H$:

# %%
fig = draw_swiglu_expert(moe_edu.PRESETS["mixtral-8x7b"])
plt.show()

# %% [markdown]
# The same expert in plain torch:


# %%
class SwiGLUExpert(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, inter, bias=False)  # gate
        self.w3 = nn.Linear(hidden, inter, bias=False)  # up
        self.w2 = nn.Linear(inter, hidden, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (N, I) -> (N, H)


cfg = moe_edu.PRESETS["tiny"]
H, I, E, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts, cfg.num_experts_per_tok
ex = SwiGLUExpert(H, I)
print(f"tiny expert: H={H}, I={I} (= {I / H} H), parameters {sum(p.numel() for p in ex.parameters()):,} = 3*H*I")
mix = moe_edu.PRESETS["mixtral-8x7b"]
print(
    f"Mixtral expert: 3 * {mix.hidden_size} * {mix.intermediate_size} = {3 * mix.hidden_size * mix.intermediate_size:,}"
)

# %% [markdown]
# ## 2. The block, from memory
#
# Everything from notebooks 01–04 in one module. Read it top to bottom — this is the whole Mixtral MoE layer:


# %%
class MixtralMoE(nn.Module):
    """Router (bias-free, fp32) -> top-k -> renormalise -> run chosen SwiGLU experts -> weighted sum."""

    def __init__(self, hidden: int, inter: int, num_experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k, self.num_experts = top_k, num_experts
        self.gate = nn.Linear(hidden, num_experts, bias=False)  # 01: the router
        self.experts = nn.ModuleList(SwiGLUExpert(hidden, inter) for _ in range(num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, H = x.shape
        x = x.reshape(-1, H)  # (N, H) with N = B*T
        logits = F.linear(x.float(), self.gate.weight.float())  # (N, E) 01: router in fp32
        probs = torch.softmax(logits, dim=-1)  # (N, E) 01: softmax
        top_p, chosen = torch.topk(probs, self.top_k, dim=-1)  # (N, k) 02: top-k
        weights = top_p / top_p.sum(-1, keepdim=True)  # (N, k) 04: renormalise
        y = torch.zeros_like(x)  # (N, H)
        for e in range(self.num_experts):  # 03: sparse dispatch
            token, slot = torch.where(chosen == e)  # (n_e,), (n_e,)
            if len(token):
                out = self.experts[e](x[token]) * weights[token, slot, None]  # (n_e, H) 04: weighting
                y.index_add_(0, token, out.to(y.dtype))  # (N, H) 04: 加權融合
        return y.reshape(B, T, H), logits  # (B, T, H), (N, E)


hand = MixtralMoE(H, I, E, k)
for p in hand.parameters():
    nn.init.normal_(p, std=cfg.initializer_range * 5)  # a bit larger than Mixtral's init, for visible routing
x = torch.randn(2, 7, H)  # (B, T, H)
with torch.no_grad():
    y_hand, logits_hand = hand(x)
print(
    "y:",
    tuple(y_hand.shape),
    "| router logits:",
    tuple(logits_hand.shape),
    "| y[0, 0, :4]:",
    format_tensor(y_hand[0, 0, :4]),
)

# %% [markdown]
# ## 3. The same block in `moe_edu`
#
# `moe_edu.SparseMoeBlock` computes the same thing but stores the experts the way `transformers` v5 does: one
# `(E, 2I, H)` tensor `gate_up_proj` with $W_1$ and $W_3$ stacked (one matmul serves both), and one `(E, H, I)`
# tensor `down_proj`. Our hand-built module's state dict uses the per-expert names of `transformers` v4 and of
# Mistral's checkpoints (`experts.{j}.w1.weight` …), and `load_hf_state_dict` understands that layout:

# %%
print("hand-built keys:", list(hand.state_dict())[:4], "...")
block = moe_edu.SparseMoeBlock(cfg).load_hf_state_dict(hand.state_dict())
print(block)

# %%
with torch.no_grad():
    y_lib, logits_lib = block(x)  # (B, T, H), (B*T, E)
print("router logits equal:", torch.allclose(logits_lib, logits_hand, atol=1e-6))
print("outputs equal:      ", torch.allclose(y_lib, y_hand, atol=1e-6))

# %% [markdown]
# The library also runs the gradient through the same path — training code can use either:

# %%
xg = x.clone().requires_grad_(True)
(hand(xg)[0] ** 2).sum().backward()
g_hand = xg.grad.clone()
xg.grad = None
(block(xg)[0] ** 2).sum().backward()
print("input gradients equal:", torch.allclose(xg.grad, g_hand, atol=1e-6))

# %% [markdown]
# ## 4. Parity with `transformers`
#
# The reference implementation most people run is Hugging Face's. We build its `MixtralSparseMoeBlock` from the same
# config (`config.to_hf()` gives a `transformers.MixtralConfig`), copy our weights with
# `block.export_state_dict("v5")`, and compare. In transformers v5 the block's `forward` returns only the hidden
# states; the router logits come from its `gate`. (This cell is skipped when `transformers` is not installed.)

# %%
try:
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
except Exception as err:  # not installed, or an installed version that fails to import (e.g. too old a torch)
    MixtralSparseMoeBlock = None
    print(
        f"transformers unavailable ({type(err).__name__}): skipping the comparison (pip install 'moe_edu[notebooks]')"
    )

if MixtralSparseMoeBlock is not None:
    hf_config = cfg.to_hf()
    hf_config._experts_implementation = "eager"  # the plain loop, as used inside a full model on CPU
    hf_block = MixtralSparseMoeBlock(hf_config)
    hf_block.load_state_dict(block.export_state_dict("v5"))
    with torch.no_grad():
        y_hf = hf_block(x)  # (B, T, H)
        logits_hf = hf_block.gate(x.reshape(-1, H))[0]  # (B*T, E)
    err = (y_hf - y_lib).abs().max().item()
    print("transformers keys:", sorted(hf_block.state_dict()))
    print(f"max |y_transformers - y_moe_edu| < 1e-6: {err < 1e-6}")
    print(f"router logits max error < 1e-6: {(logits_hf - logits_lib).abs().max().item() < 1e-6}")

# %% [markdown]
# Three implementations, one set of numbers — in fp32. (The full decoder, `moe_edu.MixtralForCausalLM`, matches
# `transformers`' logits the same way; its tests load checkpoints in all three key layouts.) In bf16 the two
# libraries part ways slightly: `moe_edu` computes the router logits in fp32, `transformers` in the model's dtype
# (bf16, with only the softmax in fp32), so on a large batch a small share of tokens — of the order of the 0.5 %
# notebook 01 measured — go to a different expert, and their outputs differ accordingly.

# %% [markdown]
# ## 5. From tiny to 8x7B
#
# The block has four numbers: $H$, $I$, $E$, $k$. `config.scaled(hidden_size)` keeps Mixtral's ratios
# ($I = 3.5H$, 8 experts, top-2) at another width. One MoE block holds $E \cdot 3HI + EH$ parameters, of which a
# token uses $k \cdot 3HI + EH$:


# %%
def block_params(c: moe_edu.MixtralConfig) -> tuple[int, int]:
    one = 3 * c.hidden_size * c.intermediate_size
    router = c.num_local_experts * c.hidden_size
    return c.num_local_experts * one + router, c.num_experts_per_tok * one + router


print(f"{'config':>22} | {'H':>5} | {'I':>6} | {'block params':>14} | {'active':>13} | {'whole model':>16}")
configs = [moe_edu.PRESETS["tiny"]] + [mix.scaled(h, name=f"8x7B shape @ H={h}") for h in (256, 1024)]
configs += [moe_edu.PRESETS["mixtral-8x7b"], moe_edu.PRESETS["mixtral-8x22b"]]
for c in configs:
    total, active = block_params(c)
    model_total = moe_edu.count_parameters(c).total
    print(
        f"{c.name:>22} | {c.hidden_size:>5} | {c.intermediate_size:>6} | {total:>14,} | {active:>13,} | {model_total:>16,}"
    )

# %% [markdown]
# ### 8x7B on the `meta` device
#
# 46.7B fp32 parameters would need 187 GB of RAM. On `torch.device("meta")` a tensor has a shape and a dtype but no
# storage, so we can build the real model — every module, every weight shape — instantly, and count it:

# %%
with torch.device("meta"):
    big_block = moe_edu.SparseMoeBlock(mix)
    big_model = moe_edu.MixtralForCausalLM(mix)
for name, p in big_block.named_parameters():
    print(f"block.{name:<22} {tuple(p.shape)}  on {p.device.type}")
n_meta = sum(p.numel() for p in big_model.parameters())
print(f"MixtralForCausalLM(8x7B) parameters: {n_meta:,}")
print(f"count_parameters(8x7B).total:        {moe_edu.count_parameters(mix).total:,}")
print("equal:", n_meta == moe_edu.count_parameters(mix).total)

# %% [markdown]
# To run it for real you would materialise it on a device with enough memory (`model.to_empty(device="cuda")`)
# and load the checkpoint's weights (`load_hf_state_dict`) — the same two steps as for the tiny model.

# %% [markdown]
# ## 6. The same code on a GPU, in bf16
#
# Nothing above is CPU-specific. On a GPU you move the block and the input to the device and, for speed and memory,
# to **bf16**. Two details matter:
#
# - the **router stays in fp32**: `SparseMoeBlock` computes the logits and softmax in float32 whatever the input
#   dtype (notebook 01 showed why), so its `router_logits` are fp32 (`transformers` computes them in bf16 and
#   upcasts only for the softmax);
# - the default **grouped** dispatch becomes one `grouped_mm` kernel per projection on CUDA (notebook 10 benchmarks it).
#
# This cell picks the GPU when there is one and the CPU otherwise; it prints only facts that hold on both.

# %%
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
block16 = moe_edu.SparseMoeBlock(cfg).load_hf_state_dict(hand.state_dict()).to(device=device, dtype=torch.bfloat16)
x16 = x.to(device=device, dtype=torch.bfloat16)  # (B, T, H)
with torch.no_grad():
    y16, logits16 = block16(x16)  # (B, T, H) bf16, (B*T, E) fp32
rel = ((y16.float().cpu() - y_lib).norm() / y_lib.norm()).item()
print("output dtype:", y16.dtype, "| router logits dtype:", logits16.dtype)
print(
    "same experts chosen as fp32:",
    torch.equal(
        torch.topk(logits16.cpu(), k).indices.sort(-1).values, torch.topk(logits_lib, k).indices.sort(-1).values
    ),
)
print(f"relative error of the bf16 output vs fp32 < 2e-2: {rel < 2e-2}")

# %% [markdown]
# bf16 keeps about 3 significant digits, so the output differs from fp32 at the 1 % level — normal for bf16
# inference — while the routing decisions, computed from fp32 logits, are the same for these 14 tokens. (The
# inputs themselves were rounded to bf16, so on thousands of tokens a few decisions would flip: notebook 01.)

# %% [markdown]
# > **中文回顧**　Mixtral 的區塊由 8 個 SwiGLU 前饋神經網路專家、選出前 2 個專家的路由網路與加權融合組成；手寫版、`moe_edu.SparseMoeBlock` 與 `transformers` 在相同權重下數值一致。
# > 在 meta 裝置上建出的真正 8x7B 有 46,702,792,704 個參數；在 GPU 上以 bf16 執行時，路由的 logit 仍以 fp32 計算。

# %% [markdown]
# ## Recap
#
# - An expert is a SwiGLU FFN, $W_2(\mathrm{silu}(W_1x) \odot W_3x)$: $3HI$ parameters.
# - The Mixtral block: `logits = x W_gᵀ` (fp32) → softmax → top-2 → renormalise → run each expert on its tokens →
#   weighted sum. About 20 lines of torch.
# - Our hand-built block, `moe_edu.SparseMoeBlock` and `transformers`' `MixtralSparseMoeBlock` give the same outputs
#   on the same weights; state dicts convert between the v4/Mistral per-expert and the v5 fused layouts.
# - `config.scaled` walks from the tiny model to 8x7B; on the `meta` device the real 8x7B has exactly
#   46,702,792,704 parameters.
# - On a GPU: same code, bf16 weights and activations, router logits in fp32 (in `transformers`: bf16 logits, fp32
#   softmax — a small share of tokens route differently).
#
# ## Check your understanding
#
# 1. Why does SwiGLU need three weight matrices where a classic FFN ($W_2\,\mathrm{relu}(W_1 x)$, $I = 4H$) needs
#    two? Which $I$ would give SwiGLU the same parameter count, and how does Mistral's $I = 3.5H$ compare?
#
# <details><summary>Answer</summary>
#
# A gated unit multiplies two projections of the input — the gate $\mathrm{silu}(W_1x)$ and the values $W_3x$ —
# before projecting down with $W_2$: three matrices. Equal parameters need $3HI = 2 \cdot 4H^2$, i.e.
# $I = 8H/3 \approx 2.67H$. Mistral's $I = 3.5H$ gives $10.5H^2$, about 31 % more than a classic $I = 4H$ FFN.
#
# </details>
#
# 2. In `MixtralMoE.forward`, which line would you change to make it a Switch Transformer layer ($k = 1$, raw
#    probability as the weight)?
#
# <details><summary>Answer</summary>
#
# The renormalisation, `weights = top_p / top_p.sum(-1, keepdim=True)` → `weights = top_p`, and build it with
# `top_k=1`. (A full Switch layer also caps each expert at a capacity and drops the overflow — notebook 09.)
#
# </details>
#
# 3. `gate_up_proj` has shape $(E, 2I, H)$. Which slice is $W_1$ and which is $W_3$, and why fuse them at all?
#
# <details><summary>Answer</summary>
#
# `gate_up_proj[e, :I]` is $W_1$ (gate) and `gate_up_proj[e, I:]` is $W_3$ (up) — notebook 03 builds it as
# `torch.cat([w1, w3], dim=1)`. Both multiply the same input, so one matmul with a $(2I, H)$ matrix does the work of
# two: the input is read once, one kernel is launched, and the GEMM is larger and more efficient.
#
# </details>
#
# 4. One 8x7B MoE block has 1,409,318,912 parameters. How many bytes is that in bf16, and how many of them does one
#    token read?
#
# <details><summary>Answer</summary>
#
# 2 bytes each: 2,818,637,824 bytes ≈ 2.8 GB per layer (× 32 layers ≈ 90 GB of experts). One token reads the router
# and 2 experts, the table's 352,354,304 active parameters: 704,708,608 bytes ≈ 705 MB.
#
# </details>
#
# 5. Why keep the router in fp32 when everything else runs in bf16? What would go wrong otherwise?
#
# <details><summary>Answer</summary>
#
# The router makes a discrete choice from small logit differences. bf16 accumulation and rounding of the logits flip
# the top-2 of about 0.5 % of tokens per layer (notebook 01), create ties, and make the softmax's exponentials
# noisy — Switch Transformer kept its router in fp32 for training stability. The cost is negligible: the router is
# $E \times H$ next to $E \cdot 3HI$ for the experts.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex05_mixtral_smoe_block.ipynb`: write the SwiGLU expert (5.1) and the whole block from plain
# tensors (5.2), check it against `moe_edu.SparseMoeBlock` (and `transformers`), count the active parameters of a
# config (5.3), and answer an open question on active parameters vs speed (5.4).
#
# **Next:** [06 · Routing explorer](06_routing_explorer.ipynb) — watch a trained model route real text.

# %% [markdown]
# # 12 · Adapting MoEs: upcycling, fine-tuning, pruning and merging
#
# > "Mixtral – Instruct [is] trained with supervised fine-tuning and Direct Preference Optimization."
# > — Mixtral of Experts, §4 (Jiang et al., 2024), paraphrased
#
# The paper releases a base model and an instruction-tuned one; it does not describe how the base
# model was initialised (from scratch or from a dense model) nor how the fine-tuning treated the
# routers. This notebook asks the practical questions anyone adapting an MoE meets, and answers each
# with a measurement on the course's tiny Mixtral (4 layers, 8 experts, top-2, 1.55 M parameters):
#
# **You will**
#
# 1. *upcycle* a dense model into an MoE (Komatsuzaki et al., 2022), check that it computes exactly
#    the dense function at step 0, and see what breaks the symmetry between the copied experts (and what
#    an aux loss changes about that);
# 2. compare continued training of the dense model, the upcycled MoE and an MoE trained from scratch —
#    also at equal learning rates;
# 3. fine-tune the shipped MoE on one domain with the routers frozen, the experts frozen, everything
#    trainable, or only the experts the domain uses most (ESFT, Wang et al. 2024), with and without the
#    aux loss — target loss, forgetting, routing shift;
# 4. remove one expert per layer by *pruning* (least used / random / least reconstruction error) or
#    *merging* (two most similar), measure what it costs per domain, and set it beside Lu et al. (2024)
#    and MC-SMoE (Li et al., 2023).
#
# > **中文導讀**　本章談「改造」已訓練好的 MoE。第一，稀疏升級再造（sparse upcycling）：把稠密模型的 FFN 複製到每個專家，
# > 再加上新的路由網路；因為重新正規化後的前 k 個權重加總為 1，第 0 步的輸出與原本的稠密模型完全相同，
# > 真正打破專家對稱的是路由網路把不同 token 送往不同專家。第二，微調：比較凍結路由網路、凍結專家與全部參數更新，
# > 有無負載平衡損失，量測目標領域的損失、其他領域的遺忘與路由的變化。第三，專家剪枝與專家合併：移除使用率最低的專家、
# > 合併最相似的兩個專家，與隨機移除比較；平均使用率最低的專家，可能正是幾種資料量少的語言共用的專家，移除前要逐一檢查各領域的使用率。
# > 較長的實驗已預先算好並隨套件附上，重新產生的指令寫在下方。

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from moe_edu.experiments.adapting import load_results

results = load_results()  # precomputed: python -m moe_edu.experiments.adapting --out moe_edu/results/adapting.json
print(results["command"])

# %% [markdown]
# ## 1 · Sparse upcycling in plain torch
#
# A dense FFN is one SwiGLU, $\mathrm{FFN}(x) = W_2(\mathrm{silu}(W_1x)\odot W_3x)$. Upcycling copies it into all
# $E$ experts and adds a **fresh** router. For any token, the MoE output is
#
# $$y = \sum_{i\in\text{top-}k} w_i\,\mathrm{FFN}_i(x) = \mathrm{FFN}(x)\sum_{i\in\text{top-}k} w_i = \mathrm{FFN}(x),$$
#
# because every $\mathrm{FFN}_i$ is the same function and Mixtral's renormalised top-k weights sum to 1. So
# the new model starts exactly where the dense one stopped, whatever the random router does.

# %%
torch.manual_seed(0)
H, I, E, k = 64, 224, 8, 2
w1, w3, w2 = 0.1 * torch.randn(I, H), 0.1 * torch.randn(I, H), 0.1 * torch.randn(H, I)  # the dense FFN
x = torch.randn(32, H)  # (T, H)


def ffn(x, w1, w3, w2):
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)  # (T, H)


experts = [(w1.clone(), w3.clone(), w2.clone()) for _ in range(E)]  # E identical copies
router = 0.02 * torch.randn(E, H)  # (E, H) fresh, random
weights, chosen = torch.topk(torch.softmax(x @ router.T, dim=-1), k, dim=-1)  # (T, k), (T, k)
weights = weights / weights.sum(-1, keepdim=True)  # renormalised: each row sums to 1
y_moe = torch.stack(
    [sum(weights[t, j] * ffn(x[t : t + 1], *experts[int(chosen[t, j])])[0] for j in range(k)) for t in range(len(x))]
)  # (T, H)
print("distinct experts used:", len(torch.unique(chosen)))
y_dense = ffn(x, w1, w3, w2)  # (T, H)
print(
    "y_moe equals y_dense (max diff < 1e-5 x max |y|):",
    (y_moe - y_dense).abs().max().item() < 1e-5 * y_dense.abs().max().item(),
)

# %% [markdown]
# The library does the same for a whole model: `dense_config(config)` is the dense twin (one expert, $k = 1$:
# its one routing weight is softmax of one logit = 1), and `upcycle_model` copies every non-MoE weight and
# every layer's FFN into $E$ experts with a fresh router.

# %%
from moe_edu.adapting.upcycling import dense_config, expert_spread, upcycle_block, upcycle_model

cfg = moe_edu.get_config("tiny").replace(vocab_size=1024)
torch.manual_seed(0)
dense = moe_edu.MixtralForCausalLM(dense_config(cfg)).eval()
upcycled = upcycle_model(dense, num_experts=8, top_k=2, seed=0).eval()
ids = torch.randint(0, 1024, (2, 32))  # (B, T)
with torch.no_grad():
    diff = (upcycled(ids).logits - dense(ids).logits).abs().max().item()
print(
    f"dense: {sum(p.numel() for p in dense.parameters()):,} parameters; "
    f"upcycled: {sum(p.numel() for p in upcycled.parameters()):,}"
)
print("upcycled logits = dense logits (max diff < 1e-5):", diff < 1e-5)
print("expert spread at step 0:", expert_spread(upcycled.model.layers[0].mlp))

# %% [markdown]
# ### What breaks the symmetry?
#
# If all experts are equal, the output does not depend on the routing weights at all, so **the task loss gives
# the router exactly zero gradient** at step 0. The experts do get gradients — but only from the tokens routed
# to them. With a random router, different experts see different tokens, their gradients differ, they drift
# apart, and from then on the router has something to choose between. With an all-zero router every token ties
# and goes to the same two experts: those two get identical gradients, the other six get none, and under the
# task loss alone the symmetry never breaks. (All of this is about the task loss; an auxiliary loss changes it,
# as the next cells show.)
#
# A live check on one upcycled block, trained for 30 steps to imitate a random target FFN:


# %%
def symmetry_run(router_std: float, steps: int = 30) -> dict:
    torch.manual_seed(0)
    dense_block = moe_edu.SparseMoeBlock(dense_config(cfg))
    block = upcycle_block(dense_block, 8, 2, router_std=router_std, generator=torch.Generator().manual_seed(1))
    target = moe_edu.SparseMoeBlock(dense_config(cfg))  # an unrelated FFN to imitate
    xs = torch.randn(4, 64, cfg.hidden_size)  # (B, T, H)
    with torch.no_grad():
        goal = target(xs)[0]
    opt = torch.optim.Adam(block.parameters(), lr=3e-3)
    router_grads = []
    for _ in range(steps):
        loss = F.mse_loss(block(xs)[0], goal)
        opt.zero_grad()
        loss.backward()
        router_grads.append(block.gate.weight.grad.abs().max().item())
        opt.step()
    w = torch.cat([block.experts.gate_up_proj.flatten(1), block.experts.down_proj.flatten(1)], 1)  # (E, P)
    distinct = len({tuple(row.tolist()) for row in w})  # experts that are not exact copies of another
    used = torch.unique(block.route(xs).expert_ids).numel()
    return {"grad0": router_grads[0], "grad_last": router_grads[-1], "distinct": distinct, "used": used}


sym = {"random router (std 0.02)": symmetry_run(0.02), "zero router": symmetry_run(0.0)}
for name, r in sym.items():
    print(
        f"{name:25s} router grad at step 30 > 1000 x step 0: {r['grad_last'] > 1000 * r['grad0']} | "
        f"experts used {r['used']}, distinct experts {r['distinct']}"
    )

# %% [markdown]
# With the random router all 8 experts are in use and all 8 have become different functions, and by step 30 the
# router has a gradient. With the zero router two experts do all the work as one (the other six are untouched
# copies: 2 distinct functions), and the router's gradient stays exactly zero — it will never learn. (At step 0
# the random router's gradient is zero up to float rounding too: the experts are still equal.)
#
# **That holds for the task loss only.** The load-balancing loss $\mathcal{L}_{aux} = E\sum_e f_e P_e$ (notebook 07)
# depends on the router probabilities $P_e$ whatever the experts compute. At the all-zero point its gradient on
# logit $\ell_j$ of a token is proportional to $P_j\,(f_j - \sum_e f_e P_e)$: positive for the two chosen experts
# (each holds half of the assignments), negative for the six idle ones — not zero. It pushes
# the router off the tie in a token-dependent direction, the idle experts start receiving tokens, and the copies
# drift apart. The same run with the aux loss added (coefficient 0.01 and 0.1; plain torch, checked against
# `moe_edu.losses.load_balancing_loss`):


# %%
def switch_aux(logits: torch.Tensor, E: int = 8, k: int = 2) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=-1)  # (N, E)
    f = torch.zeros_like(probs).scatter_(-1, torch.topk(probs, k, dim=-1).indices, 1.0).mean(0)  # (E,) sums to k
    return E * (f * probs.mean(0)).sum()  # E * sum_e f_e P_e


from moe_edu.losses import load_balancing_loss

some_logits = torch.randn(50, 8)  # (N, E)
print(
    "plain aux loss = moe_edu's (diff < 1e-6):",
    abs(switch_aux(some_logits).item() - load_balancing_loss([some_logits], 8, 2).item()) < 1e-6,
)


def symmetry_run_aux(aux: float, steps: int = 30) -> dict:
    """symmetry_run with the zero router and `aux` x the load-balancing loss added to the task loss."""
    torch.manual_seed(0)
    block = upcycle_block(
        moe_edu.SparseMoeBlock(dense_config(cfg)), 8, 2, router_std=0.0, generator=torch.Generator().manual_seed(1)
    )
    target = moe_edu.SparseMoeBlock(dense_config(cfg))
    xs = torch.randn(4, 64, cfg.hidden_size)  # (B, T, H)
    with torch.no_grad():
        goal = target(xs)[0]
    opt = torch.optim.Adam(block.parameters(), lr=3e-3)
    router_grads = []
    for _ in range(steps):
        y, logits = block(xs)  # (B, T, H), (B*T, E)
        loss = F.mse_loss(y, goal) + aux * switch_aux(logits)
        opt.zero_grad()
        loss.backward()
        router_grads.append(block.gate.weight.grad.abs().max().item())
        opt.step()
    w = torch.cat([block.experts.gate_up_proj.flatten(1), block.experts.down_proj.flatten(1)], 1)  # (E, P)
    return {
        "grad0": router_grads[0],
        "distinct": len({tuple(row.tolist()) for row in w}),
        "used": torch.unique(block.route(xs).expert_ids).numel(),
    }


for aux in (0.0, 0.01, 0.1):
    r = symmetry_run_aux(aux)
    print(
        f"zero router, aux {aux:<4}: router grad at step 0 > 0: {r['grad0'] > 0} | "
        f"experts used {r['used']}, distinct experts {r['distinct']}"
    )

# %% [markdown]
# With the aux loss the zero router has a gradient from the very first step, and by step 30 all 8 experts are in
# use and all 8 are different functions — the tie is broken by the balancing term, not by the task. (At the
# all-zero point the six idle experts' router rows get identical gradients, so they stay tied with each other
# until the first of them wins tokens; from then on their load shares $f_j$ differ and so do their gradients.)
# §2's upcycled run trains with aux coefficient 0.1, so there the router is pushed by both losses from step 0.

# %% [markdown]
# Komatsuzaki et al. (2022) introduced *sparse upcycling* on T5 and ViT checkpoints: every weight copied
# (optionally the optimizer state too), the experts as copies of the dense MLP, only the router new. Their
# abstract: with about 50 % of the dense model's original pretraining cost as extra compute, the upcycled models
# clearly beat their dense counterparts, and they also beat sparse models trained from scratch on 100 % of that
# original budget. Their recipe is **not** this notebook's in two ways that matter:
#
# - they turn only **half** of the MLP layers into MoE layers (every other one) and leave the rest dense;
#   we upcycle all 4 layers, as Mixtral has an MoE in every layer;
# - in the T5 **encoder** they route with **Expert Choice** (each of 32 experts takes its top tokens up to a
#   capacity, capacity factor $C = 2$) and use token-choice Top-K only in the decoder, where Expert Choice
#   cannot work (it picks among all the batch's tokens at once, future ones included); we use Mixtral's
#   token-choice top-2 everywhere.
#
# The second difference breaks the step-0 identity. Under Expert Choice a token is processed by as many experts
# as picked it — zero, one or several — with their unrenormalised router probabilities, so even with identical
# experts the output is $\mathrm{FFN}(x)\sum_{e \text{ picked } x} p_e$, not $\mathrm{FFN}(x)$. The exact start shown
# above belongs to renormalised token-choice top-k. In plain torch, on the same 32 tokens and copies:

# %%
capacity = 2 * len(x) // E  # C = 2: each expert takes 2T/E tokens
probs = torch.softmax(x @ router.T, dim=-1)  # (T, E)
picked = torch.topk(probs, capacity, dim=0).indices  # (capacity, E): each expert picks its top tokens
gate_ec = torch.zeros_like(probs).scatter_(0, picked, probs.gather(0, picked))  # (T, E): p_te where e picked t
y_ec = gate_ec.sum(-1, keepdim=True) * y_dense  # identical experts: FFN(x) * (sum of the weights that picked x)
times_picked = (gate_ec > 0).sum(-1)  # (T,)
print(
    "some tokens are picked by no expert, some by several:",
    bool((times_picked == 0).any() and (times_picked > 1).any()),
)
print(
    "Expert Choice output equals the dense one (max diff < 1e-5 x max |y|):",
    (y_ec - y_dense).abs().max().item() < 1e-5 * y_dense.abs().max().item(),
)

# %% [markdown]
# Adding a little noise to the copies (`noise_std`) is another way to break the tie; the router's random
# initialisation alone already does it.
#
# ## 2 · Dense continued vs upcycled vs MoE from scratch
#
# The precomputed run (batches of 8 × 64 tokens, the course corpus, one CPU thread): a dense tiny model
# trains for 150 steps; then (a) the dense model continues for 150 steps, (b) its upcycled MoE (E = 8, k = 2,
# aux-loss coefficient 0.1) continues for 150 steps on the same batches, both at learning rate 2e-3, and (c) an
# MoE from scratch trains for all 300 steps at 5e-3 (the dense run's rate, one warm-up and one cosine over 300
# steps). Two equal-learning-rate controls follow below the plot. Held-out cross-entropy on the same mixed
# batches:

# %%
up = results["upcycling"]
curves = up["curves"]
print(f"step-0 max |logit difference| upcycled vs dense < 1e-4: {up['step0_max_abs_logit_diff'] < 1e-4}")
print(f"active parameters per token: dense {up['active_params']['dense']:,}, MoE {up['active_params']['moe']:,}")
print(f"{'step':>5} {'dense':>8} {'dense cont.':>12} {'upcycled':>9} {'MoE scratch':>12}")
rows = {e["step"]: {"moe_scratch": e["eval_ce"]} for e in curves["moe_scratch"]}
for name in ("dense_pretrain", "dense_continued", "upcycled"):
    for e in curves[name]:
        rows.setdefault(e["step"], {})[name] = e["eval_ce"]
fmt = lambda v: f"{v:.3f}" if v is not None else "-"
for step in sorted(rows):
    r = rows[step]
    print(
        f"{step:5d} {fmt(r.get('dense_pretrain')):>8} {fmt(r.get('dense_continued')):>12} "
        f"{fmt(r.get('upcycled')):>9} {fmt(r.get('moe_scratch')):>12}"
    )

# %%
from moe_edu.course.plots import DIVERGING, even_share_norm, headroom, legend_outside, shared_legend

fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
tokens = 8 * 64
flops = {"dense": 6 * up["active_params"]["dense"] * tokens, "moe": 6 * up["active_params"]["moe"] * tokens}
style = {  # drawn in this order: the dashed dense continuation last, so the upcycled line cannot hide it
    "dense_pretrain": ("dense", "k-", "dense, pre-training"),
    "upcycled": ("moe", "C1-", "upcycled MoE"),
    "moe_scratch": ("moe", "C4:", "MoE from scratch"),
    "dense_continued": ("dense", "k--", "dense, continued"),
}
for name, (kind, st, label) in style.items():
    steps = [e["step"] for e in curves[name]]
    ce = [e["eval_ce"] for e in curves[name]]
    axes[0].plot(steps, ce, st, label=label)
    # training FLOPs ~ 6 x active parameters x tokens; the continuations start from the dense run's FLOPs
    start = flops["dense"] * up["settings"]["dense_steps"] if name in ("dense_continued", "upcycled") else 0
    offset = up["settings"]["dense_steps"] if start else 0
    axes[1].plot([(start + flops[kind] * (s - offset)) / 1e12 for s in steps], ce, st, label=label)
axes[0].set_xlabel("step")
axes[1].set_xlabel("training FLOPs (x 1e12, ~6 x active params x tokens)")
for ax in axes:
    ax.set_ylabel("held-out cross-entropy")
    top = max(e["eval_ce"] for name in style for e in curves[name])  # every curve enters the frame
    ax.set_ylim(4.2, top + 0.1)
shared_legend(fig, ax=axes[0])  # one legend below both panels, off the curves
plt.show()
framed = all(
    ax.get_ylim()[0] <= min(ln.get_ydata()) and max(ln.get_ydata()) <= ax.get_ylim()[1]
    for ax in axes
    for ln in ax.lines
)
print(
    "every curve inside the frame:",
    framed,
    "· dashed dense continuation on top:",
    all(ax.lines[-1].get_linestyle() == "--" for ax in axes),
    "· legend in words, not code names:",
    all(ln.get_label() not in curves for ax in axes for ln in ax.lines),
)

# %% [markdown]
# What the numbers say (from the shipped file, so they are the same on every machine):

# %%
last = {name: curves[name][-1]["eval_ce"] for name in ("dense_continued", "upcycled", "moe_scratch")}
print(
    f"at step 300: dense continued {last['dense_continued']:.3f}, upcycled {last['upcycled']:.3f}, "
    f"MoE from scratch {last['moe_scratch']:.3f}"
)
print("upcycled beats dense continued:", last["upcycled"] < last["dense_continued"])
print("MoE from scratch beats both here:", last["moe_scratch"] < min(last["upcycled"], last["dense_continued"]))
print("expert spread during the upcycled run:", [(s["step"], round(s["spread"], 2)) for s in up["expert_spread"]])

# %% [markdown]
# - The upcycled MoE starts **exactly** on the dense curve, is still a hair above the continued dense model at
#   step 175 (5.126 vs 5.119), and from step 200 on edges below it (4.832 vs 4.851 at the end; it has 8× the FFN
#   parameters, 1.5× the active ones) — per *step*. Per *FLOP* (right panel) it trails the dense continuation:
#   each of its steps costs 1.5× as much, and 150 steps do not recover that.
# - Here the MoE trained **from scratch** ends lowest. Our dense model trained for only 150 short steps, so the
#   "sunk cost" that upcycling reuses is small. But the comparison is also confounded: the continuations ran at
#   2e-3, the MoE from scratch at 5e-3 with one long cosine. The experts' spread (relative distance from
#   expert 0) grows from 0 at once: the random router breaks the symmetry within the first few steps.
#
# ### The same comparison at equal learning rates
#
# Two controls remove the confound, on the same batches:
#
# - **same schedule**: an MoE from scratch trained exactly like dense → upcycled — 150 steps at 5e-3 (warm-up
#   10, cosine), then a fresh optimizer and 150 steps at 2e-3 (warm-up 5, cosine). Only the first phase's
#   architecture differs from the upcycled run;
# - **same peak rate**: the dense continuation and the upcycled MoE rerun at 5e-3 (warm-up 10), the rate of the
#   MoE from scratch.

# %%
eq = {
    "lr 2e-3 after step 150": ("dense_continued", "upcycled", "moe_scratch_matched_lr"),
    "lr 5e-3 after step 150": ("dense_continued_lr5e-3", "upcycled_lr5e-3", "moe_scratch"),
}
at300 = {name: c[-1]["eval_ce"] for name, c in curves.items()}
print(f"{'held-out CE at step 300':24s} {'dense cont.':>12} {'upcycled':>9} {'MoE scratch':>12}")
for label, names in eq.items():
    print(f"{label:24s} " + " ".join(f"{at300[n]:{w}.3f}" for n, w in zip(names, (12, 9, 12), strict=True)))
gap = {label: at300[names[1]] - at300[names[2]] for label, names in eq.items()}  # upcycled minus scratch
print("MoE from scratch still ends below the upcycled MoE at both rates:", all(g > 0 for g in gap.values()))
print(
    f"gap upcycled - scratch: original comparison {at300['upcycled'] - at300['moe_scratch']:.3f}, "
    f"same schedule {gap['lr 2e-3 after step 150']:.3f}, same peak rate {gap['lr 5e-3 after step 150']:.3f}"
)
print(
    "the higher rate closes most of the original gap (to less than a fifth):",
    gap["lr 5e-3 after step 150"] < 0.2 * (at300["upcycled"] - at300["moe_scratch"]),
)
print(
    "upcycled vs dense continued at either rate: within 0.02 nats:",
    all(abs(at300[names[1]] - at300[names[0]]) < 0.02 for names in eq.values()),
)

# %% [markdown]
# Honestly read, the equal-rate controls change the story's size, not its sign:
#
# - Most of the original 0.20-nat gap between the MoE from scratch and the upcycled MoE was the learning rate:
#   rerun at 5e-3 the upcycled MoE ends at 4.647, 0.03 above the MoE from scratch (4.613).
# - On the identical schedule the MoE from scratch still wins by 0.08 (4.724 vs 4.809): at equal learning rates,
#   150 dense steps are a worse start than 150 MoE steps here.
# - The upcycled MoE's edge over simply continuing the dense model is small at either rate (0.016 at 2e-3, 0.003
#   at 5e-3): in 150 steps the copies have not yet specialised enough to use their 8x FFN parameters.
#
# One seed, 300 short steps, a 1.6 M-parameter model: this is not Komatsuzaki et al.'s regime (a dense checkpoint
# trained for the whole original budget, then up to ~50 % more compute). What the controls do show is that a
# learning-rate difference alone can look like an architectural result.
#
# ## 3 · Fine-tuning an MoE: what to freeze, and the aux loss
#
# Freezing is `requires_grad = False`; the regimes of `moe_edu.adapting.finetune` (the fourth, ESFT, trains only the
# experts a domain uses most — its experts per layer come from the shipped run and are explained below):

# %%
from moe_edu.adapting.finetune import REGIMES, apply_regime, finetune

model, tokenizer = moe_edu.load_pretrained()
esft_chosen = results["finetuning"]["esft"]["experts"]  # per layer: the experts ESFT may train
for regime in REGIMES:
    counts = apply_regime(model, regime, esft_chosen if regime == "esft" else None)
    print(f"{regime:15s} trainable {counts['trainable']:>9,}  frozen {counts['frozen']:>9,}")
_ = apply_regime(model, "everything")  # back to all trainable

# %% [markdown]
# A live taste (a few seconds): 6 steps on Italian with the routers frozen. Only the routers must stay
# bit-identical; everything else moves.

# %%
from moe_edu.experiments.adapting import Data

data = Data(tokenizer)
tuned, log = finetune(model, data.sampler(data.domain_train["italian"], 0), 6, regime="router_frozen", lr=1e-3)
pairs_of_layers = list(zip(model.model.layers, tuned.model.layers, strict=True))
same_router = all(torch.equal(a.mlp.gate.weight, b.mlp.gate.weight) for a, b in pairs_of_layers)
moved = not torch.equal(model.model.layers[0].mlp.experts.down_proj, tuned.model.layers[0].mlp.experts.down_proj)
print(
    "routers unchanged:",
    same_router,
    "| experts changed:",
    moved,
    "| training loss fell:",
    log[-1]["ce"] < log[0]["ce"],
)

# %% [markdown]
# The precomputed runs: the shipped model fine-tuned for 40 steps (8 × 64 tokens, lr 1e-3) on **Italian** —
# one of its five smallest training domains (5 % of the mix each; its training text is about 1,700 tokens, so
# 40 steps of 512 tokens pass over it about 12 times) — in each regime, with the aux loss at the coefficient it
# was trained with (1.0) and switched off (and one ESFT control, discussed with ESFT below). *Forgetting* is the mean rise of held-out loss on the seven other
# domains; *routing shift* is the total-variation distance between the Italian text's expert load before and
# after (mean over layers; 0 = unchanged, 1 = disjoint).

# %%
ft = results["finetuning"]
target, before = ft["target"], ft["before"]
others = [d for d in before["ce"] if d != target]


def tv_shift(a, b):
    return sum(0.5 * sum(abs(x - y) for x, y in zip(ra, rb, strict=True)) for ra, rb in zip(a, b, strict=True)) / len(a)


print(
    f"before: {target} {before['ce'][target]:.3f}, others mean {sum(before['ce'][d] for d in others) / len(others):.3f}"
)
print(f"{'run':33s} {target:>8} {'forgetting':>11} {'worst':>14} {'routing shift':>14} {'final train ce':>15}")
ft_rows = {}
for name, run in ft["runs"].items():
    forget = {d: run["ce"][d] - before["ce"][d] for d in others}
    worst = max(forget, key=forget.get)
    shift = tv_shift(before["load"][target], run["load"][target])
    ft_rows[name] = {"target": run["ce"][target], "forgetting": sum(forget.values()) / len(others), "shift": shift}
    print(
        f"{name:33s} {run['ce'][target]:8.3f} {ft_rows[name]['forgetting']:+11.3f} {worst:>8} {forget[worst]:+.2f} "
        f"{shift:14.3f} {run['train_ce'][-1]:15.3f}"
    )

# %%
classic = [n for n in ft_rows if not n.startswith("esft")]  # the three regimes that freeze whole kinds of weights
best = min(classic, key=lambda n: ft_rows[n]["target"])
least = min(classic, key=lambda n: ft_rows[n]["forgetting"])
print("of the first three regimes: lowest target loss:", best, "| least forgetting:", least)
train0 = next(iter(ft["runs"].values()))["train_ce"][0]  # step 0: the untouched model on the first training batch
print(f"train/held-out gap before fine-tuning: {before['ce'][target] - train0:.2f} nats")
gaps = {name: ft["runs"][name]["ce"][target] - ft["runs"][name]["train_ce"][-1] for name in classic}
print(
    "each of these runs' training loss fell at least 1.5x as much as its held-out loss:",
    all(
        train0 - ft["runs"][n]["train_ce"][-1] > 1.5 * (before["ce"][target] - ft["runs"][n]["ce"][target])
        for n in classic
    ),
)
print(
    "the gap ends smallest with the experts frozen (by > 0.2 nats):",
    max(g for n, g in gaps.items() if n.startswith("experts_frozen"))
    < min(g for n, g in gaps.items() if not n.startswith("experts_frozen")) - 0.2,
)
print(
    "aux loss on/off changes the target loss by < 0.02 in every regime:",
    all(abs(ft_rows[f"{r}, aux 1"]["target"] - ft_rows[f"{r}, aux 0"]["target"]) < 0.02 for r in REGIMES),
)

# %%
fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.2), sharey=True)
L, n_exp = len(before["load"][target]), len(before["load"][target][0])
panels = [
    ("before", before["load"][target]),
    ("after fine-tuning everything", ft["runs"]["everything, aux 1"]["load"][target]),
    ("after fine-tuning with experts frozen", ft["runs"]["experts_frozen, aux 1"]["load"][target]),
]
for ax, (title, load) in zip(axes, panels, strict=True):
    im = ax.imshow(load, norm=even_share_norm(n_exp, vmax=0.5), cmap=DIVERGING, aspect="auto")  # white = 1/E
    ax.set_title(f"{target} load,\n{title}", fontsize=9)  # two lines: side-by-side titles never collide
    ax.set_xlabel("expert")
    ax.set_xticks(range(n_exp))  # every expert labelled
    ax.set_yticks(range(L))
axes[0].set_ylabel("layer")
fig.colorbar(im, ax=axes, shrink=0.8, pad=0.02, label=f"share of assignments (white = 1/E = {1 / n_exp:.3f})")
plt.show()
print("every expert ticked in every panel:", all(list(ax.get_xticks()) == list(range(n_exp)) for ax in axes))

# %% [markdown]
# Read the first three regimes against what is known (ESFT's rows follow in their own subsection):
#
# - **Everything moves, and it memorises faster than it generalises.** The shipped model has seen the ~1,700
#   Italian training tokens in pretraining, so its loss on them (3.77 on the first training batch) is already
#   1.04 nats below the held-out Italian loss (4.81). Training everything, the training loss falls by about
#   0.7 nats (to ~3.08) in 40 steps while the held-out loss falls by only 0.17 (to ~4.64): the gap widens to
#   ~1.56. The held-out loss still improves, so this is not yet overfitting in the strict sense (held-out loss
#   rising), but the other domains pay: +0.47 nats on average, most on French and Spanish (+0.74 to +0.75),
#   least on zh-TW (+0.14), written in a different script. ST-MoE (Zoph et al., 2022) found sparse models more
#   prone to overfitting in fine-tuning than dense ones, and used more dropout inside the experts.
# - **Freezing the experts** gives here, of these three, both the lowest Italian loss (4.568) and the least
#   forgetting (+0.32 to +0.33): attention, norms, embeddings and routers adapt, the experts' knowledge stays, and the training loss
#   falls less (to ~3.32) — the gap ends near 1.25, the smallest. ST-MoE reports the same direction: freezing
#   the MoE parameters worked almost as well as updating everything (and updating *only* them hurt).
# - **Freezing the routers** changes little against "everything" (Italian 4.633 vs 4.636, forgetting +0.46 vs
#   +0.47). The routing shift is small in every regime (0.05–0.13): smallest with the routers frozen, where only
#   the hidden states feeding them move it, and largest with the experts frozen, where the routers are among
#   the few MoE weights that can still adapt.
# - **The aux loss** makes no measurable difference to the Italian loss in 40 steps on one domain (< 0.01). On a
#   single-domain fine-tune the load is *supposed* to be uneven (notebook 08: domains prefer experts); a strong
#   aux loss would fight that.
# - Mixtral – Instruct was made with SFT and DPO (paper §4) on top of the base model; the paper gives no
#   details of frozen parts or router losses. Flan-MoE (Shen et al., 2023) found that instruction tuning helps
#   MoEs more than dense models of equal active size.
#
# ### A fourth regime: ESFT, fine-tune only the experts the domain uses
#
# Wang et al. (2024, DeepSeek; "Let the Expert Stick to His Last", arXiv 2407.01906, EMNLP 2024) found that a
# task's routing concentrates on a few experts, and that the set differs between tasks. **Expert-Specialized
# Fine-Tuning** scores every expert on a sample of the task's data, keeps per layer the highest-scoring experts
# until their scores add up to a threshold $p$, and trains only those: attention, norms, embeddings, routers and
# all other experts stay frozen. Two scores (both sum to 1 per layer):
#
# - **token-selection ratio**: the share of the layer's top-k assignments that went to the expert;
# - **average gate score**: the renormalised routing weight the expert receives, averaged over tokens.
#
# Their abstract reports that ESFT "not only improves the tuning efficiency, but also matches or even surpasses
# the performance of full-parameter fine-tuning", and that finer-grained experts (their DeepSeek-V2-Lite has 64
# routed experts, top-6, plus 2 shared ones) make the selection work better. The course's model is the coarse
# case: 8 experts, top-2. Here $p = 0.5$ on 4 batches of Italian training text, with the token score. The live
# cell recomputes both scores and checks the shipped ones:

# %%
from moe_edu.adapting.finetune import esft_experts, expert_scores

esft = ft["esft"]
sample = data.sampler(data.domain_train[target], 100)  # the shipped run's sample: seed 0 + 100
ids = [sample(i) for i in range(esft["sample"][0])]
live = {kind: expert_scores(model, ids, kind) for kind in ("token", "gate")}  # kind -> (L, E)
print(
    "live scores match the shipped ones (max diff < 1e-3):",
    all((live[k] - torch.tensor(esft["scores"][k])).abs().max() < 1e-3 for k in live),
)
for l, row in enumerate(esft["scores"]["token"]):
    print(f"layer {l}: token scores {[round(v, 2) for v in row]} -> train experts {esft['experts'][l]}")
print("the gate score picks:", esft["experts_gate"], "| same as the token score in", end=" ")
print(
    sum(a == b for a, b in zip(esft["experts"], esft["experts_gate"], strict=True)),
    "of",
    len(esft["experts"]),
    "layers",
)
esft_counts = apply_regime(model, "esft", esft["experts"])
_ = apply_regime(model, "everything")
share = esft_counts["trainable"] / (esft_counts["trainable"] + esft_counts["frozen"])
print(
    f"ESFT trains {esft_counts['trainable']:,} parameters ({share:.0%} of the model), experts {esft['trainable_share']:.0%} of 32"
)

# %%
rows4 = {r: ft_rows[f"{r}, aux 1"] for r in REGIMES}
gain = {r: before["ce"][target] - v["target"] for r, v in rows4.items()}
ctrl_name = next(n for n in ft_rows if n.startswith("esft (least"))
ctrl_gain = before["ce"][target] - ft_rows[ctrl_name]["target"]
print(f"{'regime (aux 1)':16s} {target + ' gain':>13} {'forgetting':>11} {'gain / forgetting':>18}")
for r in REGIMES:
    print(f"{r:16s} {gain[r]:+13.3f} {rows4[r]['forgetting']:+11.3f} {gain[r] / rows4[r]['forgetting']:18.2f}")
print(
    f"{'control':16s} {ctrl_gain:+13.3f} {ft_rows[ctrl_name]['forgetting']:+11.3f}   (same number of experts, the least used)"
)
esft_forget = {d: ft["runs"]["esft, aux 1"]["ce"][d] - before["ce"][d] for d in others}
print(
    "ESFT forgets least of the four, less than a third of experts-frozen's:",
    rows4["esft"]["forgetting"] < rows4["experts_frozen"]["forgetting"] / 3,
)
print("ESFT gains the least on Italian of the four:", gain["esft"] < min(g for r, g in gain.items() if r != "esft"))
print("ESFT gains the most per nat forgotten:", max(REGIMES, key=lambda r: gain[r] / rows4[r]["forgetting"]) == "esft")
print(
    "its forgetting lands on french, german, spanish (> +0.15 each); the other four stay below +0.03:",
    min(esft_forget[d] for d in ("french", "german", "spanish")) > 0.15
    and max(esft_forget[d] for d in ("python", "english", "math", "zh-TW")) < 0.03,
)
print("the least-used experts, trained the same way, gain less than half as much:", ctrl_gain < gain["esft"] / 2)

# %% [markdown]
# - **ESFT forgets least** (+0.08 nats on the other seven domains, against +0.33 with the experts frozen and
#   +0.47 training everything) while training 10 of the 32 experts and nothing else. It also **gains least** on
#   Italian here (+0.10, against +0.17 to +0.23): with 8 coarse experts, the "Italian experts" are shared, and the
#   attention and embeddings that the other regimes adapt stay frozen. This is not the paper's result (ESFT
#   matching full fine-tuning); their own analysis credits finer-grained experts with making the selection work.
#   Per nat forgotten, ESFT is the best trade of the four.
# - **Which domains pay** is the lesson of notebook 08 again: the experts Italian uses most are the European
#   languages' experts (layer 0's expert 6 serves 40–45 % of their assignments), so French, German and Spanish
#   lose +0.16 to +0.20, while python, English, math and zh-TW, which route elsewhere, lose at most +0.02. ESFT
#   isolates domains exactly as well as their experts are separate.
# - **Relevance matters**: the same number of experts, but the ones Italian uses least, gains +0.03 — the gradient
#   reaches an expert only through the tokens routed to it.
# - The two scores disagree in 2 of 4 layers at this threshold: in layer 0 expert 6's gate share alone passes
#   $p = 0.5$. With top-2 and renormalised weights, the first choice's weight is above 1/2, so the gate score
#   concentrates more than the token ratio.
#
# ## 4 · Pruning and merging experts
#
# Dropping expert $d$ removes its router row and its weights. A token that had $d$ in its top-k now takes its
# next choice: it is exactly the old router with $\ell_d = -\infty$, renormalised top-k. In plain torch, on
# layer 0 of the shipped model:

# %%
from moe_edu.adapting.pruning import prune_experts

block = model.model.layers[0].mlp
h = torch.randn(1, 24, cfg.hidden_size)  # (1, T, H)
with torch.no_grad():
    logits = block.gate.logits(h[0]).clone()  # (T, E)
    d = 2
    logits[:, d] = float("-inf")
    w, e = torch.topk(torch.softmax(logits, -1), 2, dim=-1)  # (T, k)
    w = w / w.sum(-1, keepdim=True)
    all_out = block.experts.dense(h[0])  # (E, T, H): every expert on every token
    y_plain = (w[..., None] * all_out[e, torch.arange(24)[:, None]]).sum(1)  # (T, H)
    pruned = prune_experts(model, [d, 0, 0, 0])
    y_lib = pruned.model.layers[0].mlp(h)[0][0]  # (T, H)
print("pruned layer has", pruned.model.layers[0].mlp.experts.num_experts, "experts")
print("max |plain - prune_experts| < 1e-5:", (y_plain - y_lib).abs().max().item() < 1e-5)

# %% [markdown]
# **Merging** replaces the two most similar experts $i, j$ by one with weights $(u_iW_i + u_jW_j)/(u_i+u_j)$
# ($u$: usage shares), keeping the router row of the more used one. Similarity is measured on what the
# experts *compute* — cosine of their outputs on the layer's real inputs — because two experts trained from
# different random starts number their hidden units arbitrarily: their weights can be far apart while their
# functions are close, and averaging unaligned weights is a gamble (upcycled experts, which share a start,
# are the friendly case).
#
# A third criterion comes from Lu et al. (2024, below): drop the expert whose removal changes the layer's
# *output* least on calibration text — `reconstruction_errors` computes, for each expert $d$, the mean squared
# change of the block's output on the layer's real inputs when $d$ is dropped. Calibrated on the mixed sample,
# and on math training text (their domain-specific calibration used MATH).
#
# The precomputed comparison on the shipped model, one expert fewer per layer (held-out cross-entropy per
# domain; *rerouted* = share of the domain's assignments that went to the removed expert, mean over layers):

# %%
pr = results["pruning"]
domains = list(pr["methods"]["original"]["ce"])
print("usage per layer (held-out mixed text):")
for l, row in enumerate(pr["usage"]):
    print(f"  layer {l}: {[round(v, 3) for v in row]}")
merged = pr["methods"]["most similar merged"]
print(
    f"mean pairwise output similarity of experts: {pr['mean_similarity']:.3f}; "
    f"merged pairs {merged['pairs']} at {merged['similarity']}"
)
print(f"\n{'method':43s} " + " ".join(f"{d[:7]:>7}" for d in domains) + f" {'mean':>7} {'rerouted':>9}")
mean_ce = {}
for name, m in pr["methods"].items():
    mean_ce[name] = sum(m["ce"].values()) / len(domains)
    rer = sum(m["rerouted"].values()) / len(domains) if "rerouted" in m else 0.0
    print(f"{name:43s} " + " ".join(f"{m['ce'][d]:7.3f}" for d in domains) + f" {mean_ce[name]:7.3f} {rer:9.3f}")

# %%
orig_ce = pr["methods"]["original"]["ce"]
cost = {n: {d: m["ce"][d] - orig_ce[d] for d in domains} for n, m in pr["methods"].items()}  # CE rise per domain
mean_cost = {n: sum(c.values()) / len(domains) for n, c in cost.items()}
rand = [n for n in cost if n.startswith("random")]
least_cost, merged_cost = cost["least used dropped"], cost["most similar merged"]
print(
    "least-used drop costs more than every random drop:",
    all(mean_cost["least used dropped"] > mean_cost[n] for n in rand),
)
print(
    "its cost lands on french, german, spanish, italian (each > +0.5) while python and math stay < +0.05:",
    all(least_cost[d] > 0.5 for d in ("french", "german", "spanish", "italian"))
    and max(least_cost["python"], least_cost["math"]) < 0.05,
)
print(f"worst single domain after a random drop: +{max(cost[n][d] for n in rand for d in domains):.2f}")
print(
    "merging the most similar pair costs less than a quarter of the least-used drop:",
    mean_cost["most similar merged"] < 0.25 * mean_cost["least used dropped"],
)
print(
    "merging costs python and english the most:",
    set(sorted(merged_cost, key=merged_cost.get)[-2:]) == {"python", "english"},
)
rec_mixed, rec_math = (
    cost["reconstruction dropped (mixed calibration)"],
    cost["reconstruction dropped (math calibration)"],
)
print(
    "least reconstruction error (mixed calibration): mean cost < 0.03, no domain above +0.1:",
    mean_cost["reconstruction dropped (mixed calibration)"] < 0.03 and max(rec_mixed.values()) < 0.1,
)
print(
    "math calibration protects math (cost < +0.01, mixed calibration: > +0.05) and costs english more:",
    rec_math["math"] < 0.01 < 0.05 < rec_mixed["math"] and rec_math["english"] > rec_mixed["english"],
)

fig, ax = plt.subplots(figsize=(8.0, 3.4))
width = 0.8 / (len(pr["methods"]) - 1)
for i, name in enumerate(n for n in pr["methods"] if n != "original"):
    ax.bar(
        [j + i * width for j in range(len(domains))],
        [cost[name][d] for d in domains],
        width,
        label=name,
    )
ax.set_xticks([j + 0.4 - width / 2 for j in range(len(domains))], domains)
ax.set_ylabel("held-out CE increase")
headroom(ax, max(max(cost[n][d] for d in domains) for n in pr["methods"] if n != "original"))
legend_outside(ax)
plt.show()

# %% [markdown]
# - Dropping the **least-used** expert of each layer (1–9 % of the assignments on the mixed held-out text) costs
#   0.35 nats on average, far more than any random drop (0.02–0.08). The cost lands on French, German, Spanish
#   and Italian (+0.56 to +0.73), some on zh-TW (+0.17) and English (+0.12); python and math barely notice
#   (+0.01 or less). The *rerouted* column says why: 17–19 % of those four languages' assignments went to the
#   removed experts, against 3 % of python's.
# - A **random** expert costs 0.02–0.08 on average, but one draw (seed 1) cost math +0.43 on its own: it hit a
#   busy expert of a big domain, whose tokens all have to move. With 4 layers, one held-out sample and three
#   draws, the ranking of single draws is noisy.
# - **Merging** the most similar pair costs 0.06 on average: much less than the least-used drop, about as much
#   as a random one. Even the most similar pairs agree only weakly (output cosine 0.22–0.37), and averaging the
#   weights of two experts whose hidden units are not aligned yields a third function that neither expert
#   computed, used by every token that went to either. The cost lands on python (+0.18), English (+0.19) and
#   math (+0.08); the four European languages stay within ±0.03. MC-SMoE (below) first aligns the experts'
#   hidden units by permutation, then merges.
# - Dropping the expert with the **least reconstruction error** (mixed calibration) costs 0.02 nats on average,
#   with no domain above +0.07 (math +0.06, English +0.06): the output error on the layer's real inputs sees what
#   the average usage did not. Calibrated on **math** text instead, it keeps math intact (−0.002) and passes the
#   cost to English (+0.11): a calibration set protects what it contains.
#
# ### Beside the literature (theirs, as published; ours, measured above)
#
# Two papers make the same points on Mixtral-scale models. What they did and report is theirs; the last column
# is this notebook's tiny-scale analogue.
#
# | | **Lu et al. 2024**, "Not All Experts are Equal" (ACL 2024, arXiv 2402.14800) | **MC-SMoE**, Li et al. 2023, "Merge, Then Compress" (arXiv 2310.01334) | **ours** (1.55 M-parameter Mixtral, 4 layers) |
# |---|---|---|---|
# | model | Mixtral 8x7B | Switch Transformer (T5-based) and GPT-style SMoEs fine-tuned on 8 benchmarks; Mixtral support added to its code later | the course's tiny Mixtral, E = 8, top-2 |
# | what goes | keep r of 8 experts per layer (e.g. r = 6) | merge experts into fewer (groups around "dominant" experts), then low-rank + sparse compression | one of 8 experts per layer |
# | criterion | per layer, enumerate all expert subsets of size r, keep the one whose layer output on calibration data is closest to the full layer's | group by routing statistics (router-logit similarity by default); permutation-align hidden units; average weighted by activation frequency; distil during merging | usage, peak per-domain share, random, output reconstruction error; merge = usage-weighted average, no alignment, no retraining |
# | calibration | general text (C4) or domain-specific (MATH) | the downstream task's data | mixed held-out sample, or math training text |
# | what they report | post-training pruning plus dynamic expert skipping reduce model size and raise inference speed "while maintaining satisfactory performance"; task-specific pruning uses a MATH calibration set for math | "up to 80% memory and a 20% FLOPs reduction, with virtually no loss in performance" | least-used drop +0.35 nats; least reconstruction error +0.02; math calibration: math −0.002, English +0.11; merge +0.06 |
#
# The agreement is in the direction, not the numbers: scales, metrics (accuracy vs. our held-out
# cross-entropy), and the number of experts removed all differ. Lu et al.'s criterion is the one our
# "reconstruction" rows copy (with one expert to drop, its subsets are the 8 choices of the dropped one), and
# their task-specific (MATH) calibration is our math row. MC-SMoE's recipe names the two things our naive merge
# lacks — aligned hidden units and a short distillation after merging — and keeps our two ingredients (usage
# weights, the dominant expert's router row).
#
# ### Least used on average ≠ unimportant
#
# "Least used" was decided on `data.held_mixed`, the 4 × 8 rows of held-out text the experiment drew with the
# training mix (5 % for each small language). Which domains are those 32 rows from, and whom do the removed
# experts serve? `ft["before"]["load"]` holds the shipped model's usage on each domain's own held-out text.

# %%
from collections import Counter

from moe_edu.data.corpus import build_corpus, split_corpus
from moe_edu.training.data import TokenStreams

held_streams = TokenStreams(split_corpus(build_corpus())[1], tokenizer, dict.fromkeys(domains, 1.0)).streams


def domain_of(row: torch.Tensor) -> str:
    """The domain whose held-out token stream this window (T,) was cut from."""
    return next(d for d, s in held_streams.items() if (s.unfold(0, len(row), 1) == row).all(1).any())


rows = Counter(domain_of(row) for batch in data.held_mixed for row in batch)
print("rows of the usage sample per domain:", {d: rows[d] for d in domains})
domain_load = ft["before"]["load"]  # domain -> (L, E) share of assignments on that domain's held-out text
for name in ("least used dropped", "random dropped (seed 1)"):
    e = pr["methods"][name]["removed"][0]
    print(f"{name}, layer 0: expert {e}, {pr['usage'][0][e]:.3f} of the mixed sample's assignments; per domain:")
    print("   ", {d: round(domain_load[d][0][e], 2) for d in domains})
L, E = model.config.num_hidden_layers, model.config.num_local_experts
pairs = pr["methods"]["most similar merged"]["pairs"]
for l in (0, 3):
    busiest = {
        d: sorted(sorted(range(E), key=lambda e: -domain_load[d][l][e])[:2]) for d in ("python", "english", "math")
    }
    print(f"layer {l}: merged pair {pairs[l]}; each domain's two busiest experts: {busiest}")

# %% [markdown]
# The sample that decided "least used" holds **no** French, Spanish or Italian row and only 2 German ones out of
# 32: the mix gives each small language 5 %, and 32 rows are few. On it, layer 0's expert 6 looks idle (9 % of
# the assignments); per domain it is the European languages' expert, with 40–45 % of their assignments — with
# k = 2, that is most of their tokens. Seed 1's random draw hit layer 0's expert 5, a quarter of math's
# assignments (and of zh-TW's, which lost only +0.01: a share says how many tokens must move, not how well
# their next choice serves them). Even a sample with every language at its 5 % would give the four of them only
# a fifth of the text: an average over a mix favours the big domains.
#
# A criterion that looks at every domain: in each layer, drop the expert whose *busiest* domain uses it least
# (the lowest peak share). A live check on the same held-out batches:

# %%
peak = torch.tensor([[max(domain_load[d][l][e] for d in domains) for e in range(E)] for l in range(L)])  # (L, E)
drop = peak.argmin(dim=1).tolist()
peak_ce = data.domain_losses(prune_experts(model, drop))  # the pruned model on every domain's held-out batches
peak_cost = {d: peak_ce[d] - orig_ce[d] for d in domains}
print("drop experts", drop, "with peak shares", [round(float(peak[l, e]), 2) for l, e in enumerate(drop)])
print("mean cost < 0.03 nats:", sum(peak_cost.values()) / len(domains) < 0.03)
print(
    "costliest domain:", max(peak_cost, key=peak_cost.get), "| every domain below +0.1:", max(peak_cost.values()) < 0.1
)
print(
    "its worst domain costs less than every random draw's worst:",
    max(peak_cost.values()) < min(max(cost[n].values()) for n in rand),
)
print(
    "its mean cost is within 0.01 nats of Lu et al.'s reconstruction criterion (mixed calibration):",
    abs(sum(peak_cost.values()) / len(domains) - mean_cost["reconstruction dropped (mixed calibration)"]) < 0.01,
)

# %% [markdown]
# Judged by its busiest domain, every expert is somebody's: even the lowest peak shares are 11–16 %. Dropping
# those costs about 0.02 nats on average with no domain above +0.1 (math +0.07, English +0.06) — as cheap as the
# luckiest random draw, and no domain collapses — about what the output-error criterion of Lu et al. achieved
# above (+0.02, math and English +0.06), from a different signal. One held-out sample, four layers and three
# random draws make this an illustration, not a law; the lesson is what to measure before pruning: usage **per
# domain** (or the output error on a calibration set that covers every domain you care about), not one average
# over a mix.
#
# The same per-domain view explains the merge: the most similar pairs are similar because they do the same
# job. Layer 0 merged experts 1 and 4, the two that python and English use most there; layer 3 merged experts
# 0 and 2, math's top two. Those are the domains that paid.
#
# The first live cell of this section showed the re-routing is exact and the last one pruned live; the
# per-domain table comes from the shipped run.
#

# %% [markdown]
# > **中文回顧**　稀疏升級再造把稠密 FFN 複製到每個專家、再加上新的路由網路，第 0 步的輸出與稠密模型相同；微調比較凍結哪些部分，量測目標領域的損失與其他領域的遺忘。
# > 專家剪枝前要看各領域的使用率，平均最少用的專家可能是資料量少的語言共用的專家；專家合併則讓兩個專家原本服務的領域都變差。

# %% [markdown]
# ## Recap
#
# - **Upcycling** = copy the dense FFN into every expert + a fresh router; the renormalised top-k weights sum
#   to 1, so the MoE equals the dense model at step 0 (Komatsuzaki et al.'s Expert Choice encoder layers do not
#   have this property). Under the task loss the router gets zero gradient while experts are equal; a random
#   router sends different tokens to different experts and that breaks the symmetry — and an aux loss gives even
#   an all-zero router a gradient.
# - Upcycling reuses a dense model's training; from a cheap dense start, an MoE from scratch can win — here even
#   at equal learning rates, though the rate explained most of the first gap.
# - **Fine-tuning**: full fine-tuning on a small domain fits its training text far faster than the held-out
#   loss improves, and forgets the other domains; freezing the experts forgot least and fitted best here; the
#   aux loss barely matters over a short single-domain run. **ESFT** (train only the experts the domain uses
#   most) forgot least and gained least here; it forgets exactly the domains that share those experts.
# - **Pruning** re-routes exactly (masked logit, renormalised top-k), but *least used on average* is not
#   *unimportant*: on a mixed sample a small domain's specialist looks idle, and dropping it cost four languages
#   +0.56 to +0.73 nats. Look at usage per domain (or, as Lu et al. 2024 do on Mixtral, at the output error on
#   calibration data that covers your domains). **Merging** the most similar pair costs the domains both
#   experts served: similar experts are similar because they do the same job.
#
# ## Check your understanding
#
# 1. Why is the upcycled MoE equal to the dense model at step 0 only because of the *renormalisation*? What
#    would the output be with Switch's unrenormalised top-1 weight $p_i$?
#
# <details><summary>Answer</summary>
#
# With identical experts the output is $\mathrm{FFN}(x)\sum_i w_i$. Mixtral's renormalised weights sum to 1, so it
# is $\mathrm{FFN}(x)$. With Switch's $y = p_i\,\mathrm{FFN}(x)$ the output is scaled by the top probability — about
# $1/E$ for a fresh router — so the upcycled model would start far from the dense one (Switch-style upcycling has to
# compensate, e.g. by renormalising or rescaling).
# </details>
#
# 2. An upcycled model is trained with an all-zero router. Why do its experts never become different?
#
# <details><summary>Answer</summary>
#
# All logits tie, so every token picks the same two experts with weights 1/2 each. Those two
# receive identical gradients and stay identical; the other six receive no gradient at all. The router's own
# gradient from the task loss is zero while the experts it chooses between are equal, so under the task loss
# alone nothing ever breaks the tie. An auxiliary load-balancing loss does: it depends on the router's
# probabilities directly, pushes the two overloaded experts' logits down and the idle ones' up, and the cell in
# §1 shows all 8 experts in use and distinct after 30 steps with aux coefficient 0.01.
# </details>
#
# 3. Why can freezing the router still change the routing during fine-tuning?
#
# <details><summary>Answer</summary>
#
# The router reads the hidden state at its layer; attention, norms, embeddings and earlier layers' experts keep
# training, so the hidden states move and the same router weights pick different experts.
# </details>
#
# 4. Pruning expert $d$ equals setting its logit to $-\infty$. Why must the remaining top-k weights be
#    renormalised, and what does Mixtral's order (softmax → top-k → renormalise) give for free?
#
# <details><summary>Answer</summary>
#
# A token that had $d$ in its top-k takes its next choice; without renormalising, its weights would no longer sum
# to 1 and the layer's output would change scale. With softmax → top-k → renormalise, the softmax's normaliser
# cancels, so the weights are the same whether the softmax ran over all $E$ logits (with $\ell_d = -\infty$) or over
# the $E-1$ others: the pruned block is just a smaller Mixtral block.
# </details>
#
# 5. Why is merging two experts by averaging their weights riskier than averaging two fine-tuned copies of one
#    model?
#
# <details><summary>Answer</summary>
#
# A SwiGLU's hidden units can be permuted without changing the function, and two experts trained from different
# random starts have no reason to order them alike. Averaging then mixes unrelated units. Two fine-tunes of one
# model (or two upcycled experts) share their start, so their units stay roughly aligned and averaging is gentler.
# </details>
#
# 6. Layer 0's least-used expert received 9 % of the assignments on the mixed held-out text, yet dropping each
#    layer's least-used expert cost Italian +0.61 nats. How can both be true, and what would you measure before
#    pruning?
#
# <details><summary>Answer</summary>
#
# Usage was averaged over a sample dominated by python, English and math (no French, Spanish or Italian row,
# 2 German rows of 32). The expert is the European languages' specialist: 40–45 % of their assignments, so with
# k = 2 most of their tokens use it. Rare domains make a specialist look idle on average. Measure usage per
# domain on a calibration set that covers every domain you care about, and judge an expert by the domain that
# needs it most (its peak share), then check the per-domain loss after pruning.
# </details>
#
# 7. ESFT trained only the experts Italian uses most, yet French, German and Spanish lost +0.16 to +0.20 nats
#    while python lost +0.01. Why, and what would make ESFT isolate Italian better?
#
# <details><summary>Answer</summary>
#
# The experts Italian uses most are the ones the European languages share (notebook 08: layer 0's expert 6
# takes 40–45 % of their assignments). Training them on Italian changes them for every language that routes to
# them; python and math route mostly to other experts, which stayed frozen with everything else. ESFT protects
# a domain only as far as its experts are separate from the target's. Finer-grained experts (many small ones,
# as in the DeepSeek models ESFT was built on) give more, narrower experts to choose from, so a task's set
# overlaps less with others' — the paper's own explanation of why ESFT works better there.
# </details>
#
# 8. The first upcycling comparison ran the continuations at 2e-3 and the MoE from scratch at 5e-3. Which of
#    its conclusions survived the equal-rate controls?
#
# <details><summary>Answer</summary>
#
# The sign survived, the size did not. At the same peak rate (5e-3) the upcycled MoE ends 0.03 nats above the MoE
# from scratch instead of 0.20; on the identical schedule (dense recipe, then the continuation recipe) the MoE
# from scratch still wins by 0.08. So most of the first gap was the learning rate, and a cheap dense start still
# loses to the same number of MoE steps. A comparison that changes two things at once (architecture and
# learning rate) cannot say which one caused the difference.
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex12_adapting.ipynb`: upcycle a block and check equality, prune an expert and renormalise,
# and DeepSeek-V3's bias update rule — checkers in `moe_edu.course.exercises.adapting`.

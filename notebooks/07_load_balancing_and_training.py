# %% [markdown]
# # 07 · Load balancing & training
#
# > **中文導讀**　路由網路和模型其他部分一起用梯度訓練，但語言模型的損失並不要求它把 token 平均分給各專家；放著不管，
# > 少數專家會越用越多而「崩塌」。本章手算負載平衡損失（load-balancing loss，平衡時等於 k）
# > 與路由 z 損失（router z-loss，把每個 token logit 的 logsumexp 推向 0），並發現負載平衡損失的盲點：機率很平時，
# > 即使硬指派全擠在兩個專家也會得到 k。接著現場訓練單層 Mixtral，比較有無這些損失時的專家負載。注意：
# > 論文並未公開 Mixtral 的訓練配方；負載平衡損失是 transformers 實作的版本，路由 z 損失則來自 ST-MoE（transformers 的 Mixtral 沒有實作）。
#
# A router is trained by the same gradient as everything else, and nothing in the language-model
# loss asks it to spread tokens over the experts. Left alone, it tends to *collapse*: the experts
# that happen to be chosen early get the gradient, improve, and are chosen even more. The Mixtral
# paper does not publish its training recipe: no load-balancing loss, capacity or initialisation
# is described. What `transformers`' Mixtral implements is Switch Transformer's auxiliary
# **load-balancing loss** (added to the loss when `output_router_logits=True`; the released config
# sets `router_aux_loss_coef` to 0.02). ST-MoE adds a **router z-loss** that pushes the
# log-sum-exp of each token's router logits toward 0, which keeps them from growing large.
#
# **You will**
#
# 1. compute the load-balancing loss by hand, see that it equals $k$ under uniform routing, and
#    find the case where it equals $k$ although routing is *not* balanced;
# 2. compute the router z-loss and see what it does to logit magnitudes;
# 3. train a one-layer Mixtral live (a few seconds per run) without and with these losses and
#    watch the expert load;
# 4. read the training log of the tiny Mixtral shipped with `moe_edu` (notebook 08 analyses it).

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import math

import matplotlib.pyplot as plt
import torch

# %% [markdown]
# ## 1 · The load-balancing loss, by hand
#
# For router logits of $T$ tokens over $E$ experts, with top-$k$ routing:
#
# $$\mathcal{L}_{\text{aux}} = E \sum_{e=1}^{E} f_e \, P_e, \qquad
# f_e = \frac{1}{T}\#\{(t, j) : \text{slot } j \text{ of token } t \text{ is } e\},\quad
# P_e = \frac{1}{T}\sum_t \operatorname{softmax}(l_t)_e .$$
#
# $f_e$ counts hard assignments (so $\sum_e f_e = k$), $P_e$ averages soft probabilities
# ($\sum_e P_e = 1$). Under uniform routing $f_e = k/E$, $P_e = 1/E$ and the loss is
# $E \cdot E \cdot \frac{k}{E}\cdot\frac{1}{E} = k$.


# %%
def aux_loss_by_hand(logits: torch.Tensor, E: int, k: int) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=-1)  # (T, E)
    chosen = torch.topk(probs, k, dim=-1).indices  # (T, k)
    f = torch.zeros_like(probs).scatter_(-1, chosen, 1.0).mean(0)  # (E,) sums to k
    P = probs.mean(0)  # (E,) sums to 1
    return E * (f * P).sum()


E, k, T = 8, 2, 64
eps = 1e-3
balanced = torch.zeros(T, E)  # (T, E): flat probabilities ...
balanced[torch.arange(T), torch.arange(T) % E] += 2 * eps  # ... token t prefers expert t mod E
balanced[torch.arange(T), (torch.arange(T) + 1) % E] += eps  # ... then expert t+1 mod E
collapsed = torch.zeros(T, E)
collapsed[:, 0] = 5.0  # every token strongly prefers expert 0 ...
collapsed[:, 1] = 4.0  # ... and then expert 1
for name, logits in [("balanced", balanced), ("collapsed", collapsed)]:
    ours = aux_loss_by_hand(logits, E, k)
    lib = moe_edu.load_balancing_loss([logits], E, k)
    print(f"{name:9s}: aux loss {ours.item():.4f} (moe_edu {lib.item():.4f})")

# %% [markdown]
# Balanced routing gives $k = 2$ (up to the tiny $\epsilon$); collapsed routing gives
# $E\,(f_0 P_0 + f_1 P_1)$ with $f_0 = f_1 = 1$ and $P_0 + P_1 \approx 0.97$: about 7.8, close to the
# maximum $E = 8$. The same function in `transformers` (it adds `router_aux_loss_coef` times this
# to Mixtral's loss when `output_router_logits=True`) agrees:

# %%
try:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
except Exception as err:  # not installed, or an installed version that fails to import
    load_balancing_loss_func = None
    print(f"transformers unavailable ({type(err).__name__}): skipping the comparison")

if load_balancing_loss_func is not None:
    for name, logits in [("balanced", balanced), ("collapsed", collapsed)]:
        print(f"{name:9s}: transformers {load_balancing_loss_func((logits,), E, k).item():.4f}")

# %% [markdown]
# **The blind spot.** $f_e$ comes from a hard top-$k$ and has no gradient; only $P_e$ does. If the
# router's probabilities are *flat* ($P_e = 1/E$) the loss is $E \sum_e f_e / E = \sum_e f_e = k$ —
# whatever the hard assignments are. A router with tiny logits that still sends every token to
# the same two experts scores a perfect $k$:

# %%
sneaky = torch.zeros(T, E)
sneaky[:, 0], sneaky[:, 1] = 2e-3, 1e-3  # every token: experts 0 and 1, by a hair
f = torch.zeros(T, E).scatter_(-1, torch.topk(sneaky, k).indices, 1.0).mean(0)  # (E,)
print(
    f"aux loss {moe_edu.load_balancing_loss([sneaky], E, k).item():.4f}, "
    f"hard load per expert {[round(v, 2) for v in (f / k).tolist()]}"
)

# %% [markdown]
# So we will always look at the **hard load** too: the share of assignments each expert actually
# receives. We summarise it by the *imbalance* max/mean (1 = balanced, $E$ = all on one expert).
#
# **Where this loss comes from.** The blind spot is as old as the sparse MoE layer itself:
#
# - Shazeer et al. 2017 (§4 and Appendix A) used *two* losses. The **importance loss**
#   $w\cdot\mathrm{CV}(\mathrm{Importance}(X))^2$, with $\mathrm{Importance}(X) = \sum_{x\in X} G(x)$ the batch sum of
#   each expert's gate values, makes the *soft* shares equal. Because equal importance does not mean equal numbers
#   of examples — the blind spot above — they added a **load loss** $w\cdot\mathrm{CV}(\mathrm{Load}(X))^2$ on a
#   smooth estimate of how many examples each expert receives (made differentiable by their gating noise).
# - GShard (Lepikhin et al. 2020) and Switch (Fedus et al. 2021) replaced the pair by one product of a hard share
#   and a soft share: Switch's $\alpha N \sum_i f_i P_i$ "simplifies the original design in Shazeer et al. (2017)
#   which had separate load-balancing and importance-weighting losses" (Switch, §2.2). `transformers`' Mixtral uses
#   that form with top-$k$ counts, the formula of this section.
#
# On our three routings, the squared coefficient of variation (std/mean) of the soft shares $P_e$ and of the hard
# shares $f_e/k$:


# %%
def cv2(shares: torch.Tensor) -> float:
    return (shares.std(correction=0) / shares.mean()).pow(2).item()  # 0 = all experts equal


for name, logits in [("balanced", balanced), ("collapsed", collapsed), ("sneaky", sneaky)]:
    probs = torch.softmax(logits, -1)  # (T, E)
    hard = torch.zeros(T, E).scatter_(-1, torch.topk(logits, k).indices, 1.0).mean(0) / k  # (E,) hard shares
    print(f"{name:9s}: importance CV^2 {cv2(probs.mean(0)):.4f}, hard load CV^2 {cv2(hard):.4f}")
p_sneaky = torch.softmax(sneaky, -1).mean(0)  # (E,)
print(
    "the importance loss alone misses the sneaky router (CV^2 < 1e-4); its hard load has CV^2 = 3 (2 of 8 experts):",
    cv2(p_sneaky) < 1e-4 and abs(cv2(f / k) - 3.0) < 1e-6,
)

# %% [markdown]
# ## 2 · The router z-loss
#
# ST-MoE (Zoph et al., 2022) penalises the squared log-sum-exp of each token's router logits,
# $\mathcal{L}_z = \frac{1}{T}\sum_t \big(\log\sum_e e^{l_{t,e}}\big)^2$, because large logits make
# the softmax's exponentials round badly and training unstable (especially in bf16). The loss is 0
# when the log-sum-exp is 0, i.e. $\sum_e e^{l_{t,e}} = 1$: it pushes the log-sum-exp **toward 0**,
# not the logits toward 0. Small logits do not give 0 — all-zero logits give $(\log E)^2 = 4.32$,
# close to the first line below — and the loss can fall both by shrinking large logits and by
# shifting all of a token's logits down together (which changes no routing). Large logits are
# what it punishes hardest:

# %%
torch.manual_seed(0)
base = torch.randn(T, E)  # (T, E)
for scale in (0.1, 1.0, 5.0, 20.0):
    z = moe_edu.router_z_loss([scale * base])
    print(f"logits x {scale:>4}: rms {scale * base.pow(2).mean().sqrt().item():6.2f}, z-loss {z.item():8.2f}")

# %% [markdown]
# ## 3 · Training live: no aux loss, aux loss, aux + z-loss
#
# We train a one-layer Mixtral (the `tiny` preset's width: 8 experts, top-2) on a slice of the
# course corpus (Python code, English docstrings, arithmetic, French/German/Spanish/Italian/zh-TW pages;
# see `moe_edu.data.corpus`) with the shipped tokenizer. Each run takes a few seconds. After every
# few steps we route a fixed probe batch and record the hard expert load.

# %%
from moe_edu.analysis import load_imbalance, routing_load
from moe_edu.data.corpus import LANGUAGES, language_documents, math_documents, stdlib_documents
from moe_edu.training.config import DEFAULT_WEIGHTS
from moe_edu.training.data import TokenStreams
from moe_edu.training.loop import train_steps

_, tokenizer = moe_edu.load_pretrained()
code, prose = stdlib_documents(("textwrap.py", "heapq.py", "fnmatch.py", "colorsys.py", "shlex.py"))
docs = code + prose + math_documents(40) + [d for lang in LANGUAGES for d in language_documents(lang)]
streams = TokenStreams(docs, tokenizer, DEFAULT_WEIGHTS)
probe = streams.sample(16, 64, torch.Generator().manual_seed(123))  # (16, 64) fixed probe batch
print(f"{sum(len(s) for s in streams.streams.values()):,} training tokens; probe batch {tuple(probe.shape)}")

# %%
STEPS, EVERY = 24, 3


def probe_stats(model) -> dict:
    """Hard load, mean logsumexp and mean spread (std over experts) of the router logits on the probe."""
    with torch.no_grad():
        logits = model(probe, output_router_logits=True).router_logits  # 1 layer: ((B*T, E),)
    return {
        "load": routing_load(logits, 2).tolist(),
        "lse": torch.logsumexp(logits[0], -1).mean().item(),
        "spread": logits[0].std(-1).mean().item(),
    }


def live_run(aux_coef: float, z_coef: float) -> dict:
    torch.manual_seed(0)
    cfg = moe_edu.PRESETS["tiny"].replace(
        vocab_size=tokenizer.vocab_size, num_hidden_layers=1, router_aux_loss_coef=aux_coef, router_z_loss_coef=z_coef
    )
    model = moe_edu.MixtralForCausalLM(cfg)
    gen = torch.Generator().manual_seed(0)
    history = []  # probe statistics every EVERY steps

    def next_batch(step: int) -> torch.Tensor:
        if step % EVERY == 0:
            history.append({"step": step, **probe_stats(model)})
        return streams.sample(8, 64, gen)  # (8, 64)

    log = train_steps(model, next_batch, STEPS, lr=1e-2, warmup=3, progress=False)
    history.append({"step": STEPS, **probe_stats(model)})
    return {"log": log, "history": history}


runs = {
    "no aux loss": live_run(0.0, 0.0),
    "aux loss (coef 1.0)": live_run(1.0, 0.0),
    "aux 1.0 + z-loss 0.05": live_run(1.0, 0.05),
}
imbalance = {name: load_imbalance(torch.tensor(run["history"][-1]["load"])) for name, run in runs.items()}
lse = {name: run["history"][-1]["lse"] for name, run in runs.items()}

# %% [markdown]
# The exact numbers of a 24-step run depend on your CPU's floating-point kernels (they change the last bits of every
# step, and training amplifies them), so the table is not compared by the tests and yours will differ a little. The
# three lines after it are what the runs show on every machine.

# %% tags=["nbval-ignore-output"]
for name, run in runs.items():
    last, probe_end = run["log"][-1], run["history"][-1]
    print(
        f"{name:22s} ce {last['ce']:.2f}  aux {last['aux']:.2f}  z {last['z']:5.2f} | probe: imbalance "
        f"{imbalance[name]:.2f}, logsumexp {probe_end['lse']:5.2f}, spread {probe_end['spread']:.2f}"
    )

# %%
print("the aux loss lowers the probe's imbalance:", imbalance["aux loss (coef 1.0)"] < imbalance["no aux loss"])
print(
    "imbalance without aux loss > 3.0, and the aux loss cuts it by more than a quarter:",
    imbalance["no aux loss"] > 3.0 and imbalance["aux loss (coef 1.0)"] < 0.75 * imbalance["no aux loss"],
)
print("the z-loss lowers the router's logsumexp:", lse["aux 1.0 + z-loss 0.05"] < lse["aux loss (coef 1.0)"])

# %%
from moe_edu.course.plots_training import load_colorbar, load_history
from moe_edu.io.shipped import load_train_log

fig, axes = plt.subplots(3, 1, figsize=(6.4, 6.6), sharex=True, layout="constrained")
top = max(0.5, *(max(h["load"][0]) for run in runs.values() for h in run["history"]))  # one scale for all three
for ax, (name, run) in zip(axes, runs.items(), strict=False):
    load_history(run["history"], 0, ax=ax, title=name, colorbar=False, vmax=top)
load_colorbar(fig, axes[0].collections[0], axes, len(runs[next(iter(runs))]["history"][0]["load"][0]))
plt.show()

# %%
import seaborn as sns

from moe_edu.course.plots import shared_legend

fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.4))
for name, run in runs.items():
    sns.lineplot(x=[e["step"] for e in run["log"]], y=[e["aux"] for e in run["log"]], ax=axes[0], label=name)
    for ax, key in zip(axes[1:], ("lse", "spread"), strict=False):
        sns.lineplot(x=[h["step"] for h in run["history"]], y=[h[key] for h in run["history"]], ax=ax, label=name)
axes[0].axhline(2, color="k", ls="--", lw=0.8)
axes[0].set_title("load-balancing loss (k = 2)")
axes[1].set_title("router logsumexp (probe)")
axes[2].set_title("router logit spread (probe)")
for ax in axes:
    ax.set_xlabel("step")
shared_legend(fig)  # one legend below the three panels, off the data
plt.show()

# %% [markdown]
# What the live runs show (the numbers above):
#
# - **Without** the aux loss the load-balancing loss climbs well above $k = 2$ and the probe's hard
#   load collapses onto a few experts (imbalance about 4: the dark red rows of the top heatmap).
# - **With** it (coefficient 1.0, the value the shipped model was trained with) the loss stays near 2
#   and the load is much more even (imbalance about 2, a little lower with the z-loss too). Note the
#   router's logit *spread* is small: part of the balance comes from nearly flat probabilities — the
#   blind spot of §1.
# - The **z-loss** lowers the router's log-sum-exp (and the spread a little); its job is stability
#   of large models in low precision, which a 24-step toy run cannot show.
#
# Twenty-four steps on one layer is a toy. The shipped model below trained for 300 steps.

# %% [markdown]
# ## 4 · The shipped tiny Mixtral: its training log
#
# `moe_edu.load_pretrained()` returns a 4-layer, 8-expert, top-2 Mixtral trained on the CPU with
# `python -m moe_edu.train` (the exact command is in its log and in
# `moe_edu/checkpoints/tiny/README.md`). Its log records, every step, the losses and the hard
# expert load of the training batch.

# %%
log = load_train_log()
tc, final = log["train_config"], log["final"]
print(log["command"])
print(
    f"{log['parameters']:,} parameters; {tc['steps']} steps of {tc['batch_size']} x {tc['seq_len']} tokens; "
    f"aux coef {tc['aux_loss_coef']}, z coef {tc['z_loss_coef']}"
)
print(
    f"final train cross-entropy {final['ce']:.3f}, held-out {final['eval_ce']:.3f} "
    f"(uniform guess: ln {log['model_config']['vocab_size']} = {math.log(log['model_config']['vocab_size']):.3f})"
)

# %%
from moe_edu.course.plots_training import loss_curves

fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))  # legends beside each panel
loss_curves(log["steps"], ax=axes[0], keys=("ce", "eval_ce"), title="cross-entropy")
loss_curves(log["steps"], ax=axes[1], keys=("aux",), title="load-balancing loss")
axes[1].axhline(2, color="k", ls="--", lw=0.8)
fig.tight_layout()
plt.show()

# %%
layers = log["model_config"]["num_hidden_layers"]
fig, axes = plt.subplots(layers, 1, figsize=(6.4, 8.0), sharex=True, layout="constrained")
top = max(0.5, *(max(share) for e in log["steps"] if "load" in e for share in e["load"]))
for layer, ax in enumerate(axes):
    load_history(log["steps"], layer, ax=ax, every=3, colorbar=False, vmax=top)
load_colorbar(fig, axes[0].collections[0], axes, len(log["steps"][-1]["load"][0]))  # one scale for the panels
plt.show()

# %%
last = torch.tensor(log["steps"][-1]["load"])  # (L, E)
for layer in range(layers):
    print(
        f"layer {layer}: final batch load {[round(v, 2) for v in last[layer].tolist()]}, "
        f"imbalance {load_imbalance(last[layer]):.2f}"
    )
imb = [load_imbalance(last[layer]) for layer in range(layers)]
even = 1 / last.shape[1]
aux_end = log["steps"][-1]["aux"]
print(
    f"final batch aux loss {aux_end:.4f}: within 0.01 of k = 2 (its value for uniform routing):",
    abs(aux_end - 2) < 0.01,
)
print(
    f"yet no layer is balanced (imbalance > 1.5 in every layer): {min(imb) > 1.5}; mean over layers {sum(imb) / layers:.2f}"
)
print(
    "layers 1 and 3: one expert above 2x the even share 1/8, another below a third of it:",
    all(last[layer].max() > 2 * even and last[layer].min() < even / 3 for layer in (1, 3)),
)

# %% [markdown]
# Read the last printout with §1–3 in mind. The final batch's aux loss is within 0.01 of 2, the value of perfectly
# uniform routing, yet no layer is balanced: the max/mean load is about 1.5 at layers 0 and 2, and about 2.5 at
# layers 1 and 3, where one expert takes almost a third of the batch's assignments (2.5 times the even 1/8) while
# another gets almost none. This is the blind spot on the real model: the loss sits at its floor as soon as the
# router's *probabilities* are nearly flat on average, while the hard top-2 choices — the load that decides compute
# and memory — still follow small, consistent differences between logits. An aux coefficient of 1.0 (50 times the
# released Mixtral config's 0.02) narrowed the skew — the mean imbalance over layers printed above is 2.04, against
# 3.14 for the README's run at 0.01 (question 4) — but did not remove it, and it is uneven per layer. Notebook 08 finds the same skew per domain (imbalance up to 3.97),
# and that is one reason its experts can afford to specialise.

# %% [markdown]
# > **中文回顧**　負載平衡損失 $E\sum_e f_e P_e$ 在均勻路由時等於 k，機率很平時也等於 k，所以要同時看硬指派的專家負載；路由 z 損失把每個 token 的 logsumexp 推向 0。
# > 論文沒有公開訓練配方：transformers 的 Mixtral 只實作負載平衡損失（係數 0.02），路由 z 損失來自 ST-MoE。

# %% [markdown]
# ## Recap
#
# - $\mathcal{L}_{\text{aux}} = E\sum_e f_e P_e$ equals $k$ under uniform routing and grows as routing
#   collapses; only $P_e$ carries gradient, so flat router probabilities also give $k$. Watch the
#   hard load as well as the loss.
# - The z-loss $\operatorname{mean}_t(\operatorname{logsumexp}(l_t))^2$ pushes each token's log-sum-exp
#   toward 0, so the router logits cannot grow large.
# - The Mixtral paper publishes no training recipe; `transformers` implements the Switch-style aux
#   loss (coefficient 0.02 in the released config).
# - `moe_edu.train` logs both losses and the per-layer expert load at every step; the shipped
#   tiny model is the one notebook 08 analyses.
#
# ## Check your understanding
#
# 1. Why is $f_e$ multiplied by $P_e$ rather than used alone, e.g. $\sum_e f_e^2$?
#
# <details><summary>Answer</summary>
#
# $f_e$ comes from a hard top-$k$ and has no gradient, so $\sum_e f_e^2$ would give the router nothing to learn
# from. $P_e$ is a mean of softmax probabilities and is differentiable: in $E\sum_e f_e P_e$ the gradient lowers
# the probability of experts in proportion to how overloaded they are ($f_e$ acts as a constant weight).
#
# </details>
#
# 2. With $E = 8$, $k = 2$, what is the largest value the aux loss can take, and for which routing?
#
# <details><summary>Answer</summary>
#
# $E = 8$, approached when every token goes to the same two experts ($f_0 = f_1 = 1$) and those two hold all the
# probability ($P_0 + P_1 \to 1$): $8 \cdot (P_0 + P_1) \to 8$. The "collapsed" example gives 7.7703.
#
# </details>
#
# 3. A router outputs logits of exactly zero for every token. What are the aux loss and the z-loss?
#    Which experts does top-2 pick?
#
# <details><summary>Answer</summary>
#
# $P_e = 1/8$ for every expert, so the aux loss is $\sum_e f_e = k = 2$ whatever is chosen; the z-loss is
# $(\log 8)^2 \approx 4.32$. Every row is an 8-way tie, so `topk` picks an implementation-defined pair (notebook
# 02) — in practice the same pair for every identical row: complete collapse onto two experts, scored as perfectly
# balanced. That is the blind spot.
#
# </details>
#
# 4. The shipped model uses an aux coefficient of 1.0 where Switch used 0.01. Its README compares
#    0.01, 0.1, 0.3 and 1.0: why could a small coefficient leave the hard load skewed while the aux
#    loss reads almost exactly 2?
#
# <details><summary>Answer</summary>
#
# The loss only sees $P_e$ through its gradient. A router can drive $P_e$ towards $1/E$ by making its
# probabilities nearly flat, and then the loss reads $\approx k$ whatever the hard top-2 choices are — small logit
# differences still send most tokens to a few experts. With a weak coefficient, that cheap way out is all the
# router learns (the README's 0.01 run: imbalance 3.14, and at layers 1–3 an expert with under 1 % of the load).
#
# </details>
#
# 5. Which of the two losses would you raise if bf16 training diverged with huge router logits?
#
# <details><summary>Answer</summary>
#
# The router z-loss. It penalises the squared log-sum-exp of each token's logits, and the log-sum-exp is at least
# the largest logit, so huge logits — what makes the softmax's exponentials round badly in low precision — cost the
# most. It does not pull the logits to 0 (all-zero logits still give $(\log E)^2 = 4.32$, §2): it pulls the
# log-sum-exp to 0, which a router can also reach by shifting all of a token's logits down together. The
# load-balancing loss only looks at how the load is spread: its shares $f_e$ and $P_e$ do not change when all of a
# token's logits shift together, so nothing in it stops the logits from growing.
#
# </details>
#
# ## Exercises
#
# `notebooks/exercises/ex07_load_balancing.ipynb`: write the load-balancing loss (7.1) and the
# router z-loss (7.2) yourself — the checkers compare them with the library — see uniform routing
# give $k$ and collapse give more, and answer an open question on what the loss cannot see (7.3).

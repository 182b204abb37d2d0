# %% [markdown]
# # Exercises 05 — The Mixtral SMoE block
#
# Companion to **notebook 05 (The Mixtral SMoE block)**. You will write Mixtral's SwiGLU expert,
# assemble the whole sparse MoE block from plain tensors, check it against `moe_edu`'s block,
# and count the parameters a token actually uses.
#
# Replace each `raise NotImplementedError()`, run the checker below it (`✓` / `✗ ...` /
# `not attempted`), and ask for help with `ex.hint("name")`. Later cells fall back to the
# library's reference while an exercise is not done.

# %%
import moe_edu
from moe_edu.course.notebook import setup

setup()

import torch
import torch.nn.functional as F

from moe_edu.course.exercises import smoe_block as ex

# %% [markdown]
# ## Exercise 5.1 — the SwiGLU expert
#
# Seed §1: each expert is a standard feed-forward block — in Mixtral the SwiGLU of Llama:
#
# $$\text{expert}(x) = W_2\big(\text{SiLU}(W_1 x) \odot W_3 x\big)$$
#
# Write `swiglu_expert(x, w1, w3, w2)`: `x` `(N, H)`, `w1` and `w3` `(I, H)`, `w2` `(H, I)` -> `(N, H)`.


# %%
def swiglu_expert(x, w1, w3, w2):
    """x (N, H), w1/w3 (I, H), w2 (H, I) -> (N, H)."""
    ### BEGIN SOLUTION
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T  # (N, H)
    ### END SOLUTION


# %%
from moe_edu.course.exercises import smoe_block as ex  # fetched afresh: grading calls the original checker

ex.check_swiglu_expert(swiglu_expert)

# %% [markdown]
# ## Exercise 5.2 — the whole block
#
# The paper's eq. 1–2: $y = \sum_{i \in \text{top-k}} \text{Softmax}(\text{TopK}(x W_g))_i \cdot \text{SwiGLU}_i(x)$.
#
# Write `moe_block(x, gate, w1, w3, w2, k)` from plain tensors: `x` `(B, T, H)`, `gate` `(E, H)`,
# `w1`, `w3` `(E, I, H)`, `w2` `(E, H, I)`. Return `(y, router_logits)` like `transformers`:
# `y` `(B, T, H)` in `x`'s dtype (bf16 in, bf16 out) and the router logits `(B*T, E)` in
# float32, computed from float32 copies of `x` and `gate` (not cast after a bf16 product). The
# number of experts is `E = gate.shape[0]` (also `w1.shape[0]`); if you count tokens per expert,
# `torch.bincount` gives int64 counts. Your `swiglu_expert` is used when it passes, else the reference.

# %%
swiglu_fn = ex.use("swiglu_expert", swiglu_expert)


def moe_block(x, gate, w1, w3, w2, k):
    """x (B, T, H) -> y (B, T, H), router_logits (B*T, E) float32."""
    ### BEGIN SOLUTION
    B, T, H = x.shape
    flat = x.reshape(-1, H)  # (B*T, H)
    logits = flat.float() @ gate.float().T  # (B*T, E)
    probs = torch.softmax(logits, dim=-1)  # (B*T, E)
    top_p, chosen = torch.topk(probs, k, dim=-1)  # (B*T, k), (B*T, k)
    weights = top_p / top_p.sum(dim=-1, keepdim=True)  # (B*T, k)
    y = torch.zeros_like(flat)  # (B*T, H)
    for e in range(gate.shape[0]):
        token, slot = torch.where(chosen == e)  # (n_e,), (n_e,)
        if token.numel():
            out = swiglu_fn(flat[token], w1[e], w3[e], w2[e])  # (n_e, H)
            y.index_add_(0, token, (out * weights[token, slot, None]).to(y.dtype))  # (B*T, H)
    return y.reshape(B, T, H), logits
    ### END SOLUTION


# %%
from moe_edu.course.exercises import smoe_block as ex  # fetched afresh: grading calls the original checker

ex.check_moe_block(moe_block)

# %% [markdown]
# ## Parity with `moe_edu.SparseMoeBlock` (and `transformers`)
#
# Feed the weights of a tiny library block into your function (or the reference). When
# `transformers` is installed, its `MixtralSparseMoeBlock` with the same weights joins in.

# %%
moe_block_fn = ex.use("moe_block", moe_block)

config = moe_edu.PRESETS["tiny"]
block = moe_edu.SparseMoeBlock(config).eval()
x = torch.randn(2, 5, config.hidden_size)  # (B, T, H)
with torch.no_grad():
    y_lib, logits_lib = block(x)  # (B, T, H), (B*T, E)
    e = block.experts
    y_mine, logits_mine = moe_block_fn(x, block.gate.weight, e.w1, e.w3, e.w2, config.num_experts_per_tok)
print(
    "y matches moe_edu:",
    bool(torch.allclose(y_mine, y_lib, atol=1e-5)),
    "| router logits match:",
    bool(torch.allclose(logits_mine, logits_lib, atol=1e-5)),
)

try:
    import transformers
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
except Exception as err:  # not installed, or an installed version that fails to import
    print(f"transformers unavailable ({type(err).__name__}): skipping the transformers comparison")
else:
    transformers.logging.set_verbosity_error()  # a standalone expert block logs a harmless notice
    hf = MixtralSparseMoeBlock(config.to_hf()).eval()
    hf.load_state_dict(block.export_state_dict("v5"))
    with torch.no_grad():
        hf_out = hf(x)
    y_hf = hf_out[0] if isinstance(hf_out, tuple) else hf_out  # (B, T, H)
    print("y matches transformers:", bool(torch.allclose(y_mine, y_hf, atol=1e-5)))

# %% [markdown]
# ## Exercise 5.3 — active parameters
#
# Seed §1: *47B parameters in total, but only 13B active per token.* Write
# `active_parameters(config)` returning a Python `int`: the parameters a single token touches —
# embedding, attention, router, norms, LM head, and only `k` of the `E` experts in each layer.
# Use the config's fields (`vocab_size`, `hidden_size`, `intermediate_size`, `num_hidden_layers`,
# `num_attention_heads`, `num_key_value_heads`, `attention_head_dim`, `num_local_experts`,
# `num_experts_per_tok`, `tie_word_embeddings`).


# %%
def active_parameters(config) -> int:
    """Parameters used for one token: everything except the E - k unchosen experts per layer."""
    ### BEGIN SOLUTION
    c = config
    H, I, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    q_out, kv_out = c.num_attention_heads * c.attention_head_dim, c.num_key_value_heads * c.attention_head_dim
    attention = L * (2 * H * q_out + 2 * H * kv_out)  # wq, wo and wk, wv
    router = L * c.num_local_experts * H
    experts = L * c.num_experts_per_tok * 3 * H * I  # only the k chosen experts: w1, w3, w2
    norms = (2 * L + 1) * H
    embedding = c.vocab_size * H
    lm_head = 0 if c.tie_word_embeddings else H * c.vocab_size
    return embedding + attention + router + experts + norms + lm_head
    ### END SOLUTION


# %%
from moe_edu.course.exercises import smoe_block as ex  # fetched afresh: grading calls the original checker

ex.check_active_parameters(active_parameters)

# %%
active_fn = ex.use("active_parameters", active_parameters)
for name in ("tiny", "mixtral-8x7b", "mixtral-8x22b"):
    c = moe_edu.PRESETS[name]
    total = moe_edu.count_parameters(c).total
    print(f"{name:>14}: total {total:>15,}  active {active_fn(c):>15,}  ({active_fn(c) / total:.1%})")

# %% [markdown]
# ## Open question 5.4 — active parameters vs speed
#
# Mixtral 8x7B runs about as fast per token as a 13B dense model *in compute*, but it needs the
# memory of a 47B model. Explain why, and say when (batch size, hardware) the sparse model's
# speed advantage shrinks.

# %% [markdown]
# <!-- BEGIN SOLUTION -->
# **Answer.** FLOPs per token follow the *active* parameters (each token multiplies only the
# weights of its 2 experts plus the shared attention), but every expert must be resident because
# different tokens choose different experts: memory follows the *total*. At batch size 1 decoding
# is memory-bandwidth bound: a token reads only its experts' weights, so it is fast. With large
# batches the tokens together touch all 8 experts in every layer, so each step reads all 47B
# weights and the layer's arithmetic intensity per expert drops (small, uneven groups), while
# routing, sorting and all-to-all communication (expert parallelism) add overhead — the advantage
# over a dense 47B model remains in FLOPs, but latency per step approaches that of reading 47B weights.
# <!-- END SOLUTION -->

# %% [markdown]
# ## Recap
#
# A Mixtral block = fp32 router, softmax -> top-2 -> renormalise, SwiGLU experts, weighted sum.
# 46.7B parameters in total, 12.9B active per token. Next: **exercises 06**, the routing explorer.

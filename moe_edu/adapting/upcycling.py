"""Sparse upcycling (Komatsuzaki et al. 2022): start an MoE from a trained dense model.

A dense decoder here is a Mixtral with one expert and k = 1 (`dense_config`): its MoE layer
is a single SwiGLU FFN whose one routing weight is softmax over one logit = 1. Upcycling
copies that FFN into all E experts and adds a fresh router. Because the top-k weights are
renormalised to sum to 1 and every expert is the same function,

    y = sum_{i in top-k} w_i FFN(x) = FFN(x) * sum_i w_i = FFN(x)

so the upcycled model computes the dense function at step 0 (up to float rounding). What
breaks the symmetry afterwards is the router: different tokens reach different copies, so
the copies receive different gradients (optionally also a little `noise_std` on the copies).
"""

from __future__ import annotations

import torch

from ..config import MixtralConfig
from ..model import MixtralForCausalLM
from ..moe_block import SparseMoeBlock
from ..validation import nonnegative_float


def dense_config(config: MixtralConfig) -> MixtralConfig:
    """The dense twin of an MoE config: same width and depth, one SwiGLU FFN per layer (E = k = 1)."""
    return config.replace(
        num_local_experts=1,
        num_experts_per_tok=1,
        router_aux_loss_coef=0.0,
        router_z_loss_coef=0.0,
        name=f"{config.name}-dense",
    )


def upcycle_weights(gate_up: torch.Tensor, down: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy one FFN into E experts: gate_up (1, 2I, H), down (1, H, I) -> (E, 2I, H), (E, H, I) (new memory)."""
    if gate_up.dim() != 3 or down.dim() != 3 or gate_up.shape[0] != 1 or down.shape[0] != 1:
        raise ValueError(
            f"upcycle_weights expects one expert: gate_up (1, 2I, H) and down (1, H, I), "
            f"got {tuple(gate_up.shape)} and {tuple(down.shape)}"
        )
    return gate_up.repeat(num_experts, 1, 1), down.repeat(num_experts, 1, 1)  # (E, 2I, H), (E, H, I)


def _check_dense(experts, where: str) -> None:
    if experts.num_experts != 1:
        raise ValueError(f"{where}: expected a dense FFN (num_experts=1), got {experts.num_experts} experts")


def upcycle_block(
    dense: SparseMoeBlock,
    num_experts: int,
    top_k: int,
    *,
    router_std: float | None = None,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> SparseMoeBlock:
    """A new E-expert block whose experts are all copies of `dense`'s one FFN, with a fresh router.

    router_std: std of the fresh router's normal init (default: the config's initializer_range).
    noise_std: relative Gaussian noise added to each copy (0 keeps the step-0 function exact).
    """
    _check_dense(dense.experts, "upcycle_block")
    config = dense.config.replace(num_local_experts=num_experts, num_experts_per_tok=top_k)
    block = SparseMoeBlock(config, dispatch=dense.dispatch)
    block.to(device=dense.experts.gate_up_proj.device, dtype=dense.experts.gate_up_proj.dtype)
    _copy_into(block, dense, router_std if router_std is not None else config.initializer_range, noise_std, generator)
    return block


def _copy_into(
    block: SparseMoeBlock, dense: SparseMoeBlock, router_std: float, noise_std: float, generator: torch.Generator | None
) -> None:
    """Fill `block` (E experts) from `dense` (1 expert): copies of the FFN, a normal(0, router_std) router."""
    with torch.no_grad():
        copies = upcycle_weights(dense.experts.gate_up_proj, dense.experts.down_proj, block.experts.num_experts)
        for name, copy in zip(("gate_up_proj", "down_proj"), copies, strict=True):
            src = getattr(dense.experts, name)  # (1, ., .)
            dst = getattr(block.experts, name)  # (E, ., .)
            dst.copy_(copy)
            if noise_std > 0:
                noise = torch.randn(dst.shape, generator=generator, dtype=dst.dtype).to(dst.device)  # (E, ., .)
                dst.add_(noise * noise_std * src.std())
        w = block.gate.weight  # (E, H)
        w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device) * router_std)


def upcycle_model(
    dense: MixtralForCausalLM,
    num_experts: int = 8,
    top_k: int = 2,
    *,
    router_std: float | None = None,
    noise_std: float = 0.0,
    seed: int = 0,
    aux_loss_coef: float | None = None,
) -> MixtralForCausalLM:
    """The whole model upcycled: every non-MoE weight copied, every layer's FFN copied E times.

    aux_loss_coef: the new config's router_aux_loss_coef (default: the dense config's value).
    """
    cfg = dense.config
    if router_std is not None:
        nonnegative_float("router_std", router_std)  # NaN or inf gave a NaN model; 0 is the zero router (notebook 12)
    nonnegative_float("noise_std", noise_std)  # NaN or -1 were ignored silently
    for i, layer in enumerate(dense.model.layers):
        _check_dense(layer.mlp.experts, f"upcycle_model: layer {i}")
    changes = {
        "num_local_experts": num_experts,
        "num_experts_per_tok": top_k,
        "name": cfg.name.removesuffix("-dense") + "-upcycled",
    }
    if aux_loss_coef is not None:
        changes["router_aux_loss_coef"] = aux_loss_coef
    config = cfg.replace(**changes)
    model = MixtralForCausalLM(config).to(device=dense.device, dtype=dense.lm_head.weight.dtype)
    moe_keys = (".mlp.gate.", ".mlp.experts.")
    shared = {k: v for k, v in dense.state_dict().items() if not any(m in k for m in moe_keys)}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    if unexpected or any(not any(m in k for m in moe_keys) for k in missing):
        raise ValueError(f"upcycle_model: dense and MoE layouts differ: missing {missing}, unexpected {unexpected}")
    gen = torch.Generator().manual_seed(seed)
    std = router_std if router_std is not None else config.initializer_range
    for layer, dense_layer in zip(model.model.layers, dense.model.layers, strict=True):
        _copy_into(layer.mlp, dense_layer.mlp, std, noise_std, gen)
    return model.train(dense.training)


@torch.no_grad()
def expert_spread(block: SparseMoeBlock) -> float:
    """How far the experts have moved apart: mean over e of ||W_e - W_0|| / ||W_0|| (exactly 0 for copies)."""
    if block.experts.num_experts < 2:
        return 0.0
    w = torch.cat([block.experts.gate_up_proj.flatten(1), block.experts.down_proj.flatten(1)], dim=1)  # (E, P)
    return float(((w[1:] - w[:1]).norm(dim=1) / w[0].norm().clamp_min(1e-12)).mean())

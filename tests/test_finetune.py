"""Fine-tuning regimes (moe_edu.adapting.finetune): what is frozen stays bit-identical; the original is untouched."""

from __future__ import annotations

import pytest
import torch

import moe_edu
from moe_edu.adapting.finetune import REGIMES, apply_regime, finetune

CFG = moe_edu.get_config("tiny").replace(vocab_size=128, num_hidden_layers=2)


def batches(step: int) -> torch.Tensor:
    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(step))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return moe_edu.MixtralForCausalLM(CFG).eval()


@pytest.mark.parametrize("regime", REGIMES)
def test_regime_freezes_what_it_says(model, regime):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned, log = finetune(model, batches, 3, regime=regime, lr=1e-2)
    assert len(log) == 3
    for n, p in tuned.named_parameters():
        changed = not torch.equal(p, before[n])
        frozen = (regime == "router_frozen" and ".mlp.gate." in n) or (
            regime == "experts_frozen" and ".mlp.experts." in n
        )
        assert changed != frozen, (regime, n)
    for n, p in model.named_parameters():  # the original is untouched
        assert torch.equal(p, before[n])


def test_counts_and_aux_coefficient(model):
    counts = apply_regime(model, "experts_frozen")
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    assert counts["frozen"] == experts and counts["trainable"] + experts == sum(p.numel() for p in model.parameters())
    apply_regime(model, "everything")
    tuned, log = finetune(model, batches, 2, aux_loss_coef=0.0)
    assert tuned.config.router_aux_loss_coef == 0.0 and model.config.router_aux_loss_coef == CFG.router_aux_loss_coef
    assert abs(log[-1]["loss"] - log[-1]["ce"] - tuned.config.router_z_loss_coef * log[-1]["z"]) < 1e-5
    with pytest.raises(ValueError, match="regime"):
        apply_regime(model, "lora")

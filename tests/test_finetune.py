"""Fine-tuning regimes (moe_edu.adapting.finetune): what is frozen stays bit-identical; the original is untouched."""

from __future__ import annotations

import pytest
import torch

import moe_edu
from moe_edu.adapting.finetune import REGIMES, apply_regime, esft_experts, expert_scores, finetune

CFG = moe_edu.get_config("tiny").replace(vocab_size=128, num_hidden_layers=2)
ESFT_EXPERTS = [[1, 6], [0, 3, 5]]  # the experts ESFT may train, per layer


def batches(step: int) -> torch.Tensor:
    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(step))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return moe_edu.MixtralForCausalLM(CFG).eval()


def _frozen(regime: str, name: str, row: int | None) -> bool:
    if regime == "router_frozen":
        return ".mlp.gate." in name
    if regime == "experts_frozen":
        return ".mlp.experts." in name
    if regime == "esft":
        layer = int(name.split("layers.")[1].split(".")[0]) if "layers." in name else None
        return ".mlp.experts." not in name or row not in ESFT_EXPERTS[layer]
    return False


@pytest.mark.parametrize("regime", REGIMES)
def test_regime_freezes_what_it_says(model, regime):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    experts = ESFT_EXPERTS if regime == "esft" else None
    tuned, log = finetune(model, batches, 3, regime=regime, experts=experts, lr=1e-2)
    assert len(log) == 3
    for n, p in tuned.named_parameters():
        if ".mlp.experts." in n:  # fused (E, ., .): judge each expert's row
            for e in range(p.shape[0]):
                changed = not torch.equal(p[e], before[n][e])
                assert changed != _frozen(regime, n, e), (regime, n, e)
        else:
            changed = not torch.equal(p, before[n])
            assert changed != _frozen(regime, n, None), (regime, n)
    for n, p in model.named_parameters():  # the original is untouched
        assert torch.equal(p, before[n])
    assert all(not p._backward_hooks for p in tuned.parameters())  # ESFT's gradient mask was removed
    assert all(p.requires_grad for p in tuned.parameters())


def test_counts_and_aux_coefficient(model):
    counts = apply_regime(model, "experts_frozen")
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    assert counts["frozen"] == experts and counts["trainable"] + experts == sum(p.numel() for p in model.parameters())
    esft = apply_regime(model, "esft", ESFT_EXPERTS)
    assert esft["trainable"] == experts * (2 + 3) / (2 * CFG.num_local_experts)
    assert esft["trainable"] + esft["frozen"] == sum(p.numel() for p in model.parameters())
    apply_regime(model, "everything")
    tuned, log = finetune(model, batches, 2, aux_loss_coef=0.0)
    assert tuned.config.router_aux_loss_coef == 0.0 and model.config.router_aux_loss_coef == CFG.router_aux_loss_coef
    assert abs(log[-1]["loss"] - log[-1]["ce"] - tuned.config.router_z_loss_coef * log[-1]["z"]) < 1e-5
    with pytest.raises(ValueError, match="regime"):
        apply_regime(model, "lora")
    with pytest.raises(ValueError, match="experts"):
        apply_regime(model, "esft")  # ESFT needs the experts per layer
    with pytest.raises(ValueError, match="experts"):
        apply_regime(model, "esft", [[0], [8]])  # expert 8 does not exist
    with pytest.raises(ValueError, match="weight_decay"):
        finetune(model, batches, 1, regime="esft", experts=ESFT_EXPERTS, weight_decay=0.1)


def test_expert_scores_are_shares_and_agree_with_the_routing(model):
    ids = [batches(0), batches(1)]
    token, gate = expert_scores(model, ids, "token"), expert_scores(model, ids, "gate")
    assert token.shape == gate.shape == (CFG.num_hidden_layers, CFG.num_local_experts)
    torch.testing.assert_close(token.sum(1), torch.ones(CFG.num_hidden_layers))
    torch.testing.assert_close(gate.sum(1), torch.ones(CFG.num_hidden_layers))
    # token score by hand: count top-2 picks of layer 0 on the first batch
    logits = model(ids[0], output_router_logits=True).router_logits[0]  # (T, E)
    picks = torch.bincount(logits.topk(2, dim=-1).indices.flatten(), minlength=CFG.num_local_experts)
    one = expert_scores(model, ids[:1], "token")[0]
    torch.testing.assert_close(one, picks.float() / picks.sum())
    with pytest.raises(ValueError, match="kind"):
        expert_scores(model, ids, "flops")


def test_esft_experts_take_the_top_until_the_threshold():
    scores = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]])
    assert esft_experts(scores, 0.5) == [[0], [0, 1]]
    assert esft_experts(scores, 0.6) == [[0, 2], [0, 1, 2]]
    assert esft_experts(scores, 1.0) == [[0, 1, 2, 3], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="p"):
        esft_experts(scores, 0.0)

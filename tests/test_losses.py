"""The router losses: the aux loss equals transformers' (masked or not), k under uniform routing; the z-loss formula."""

import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func  # a test dependency

from moe_edu import load_balancing_loss, router_z_loss


@pytest.mark.parametrize(("e", "k"), [(8, 2), (4, 1), (16, 4), (8, 8)])
def test_uniform_routing_gives_k(e, k):
    # every expert equally likely and chosen equally often: f_e = k/E, P_e = 1/E -> loss = k
    tokens = e * 10
    logits = torch.zeros(tokens, e)
    logits[torch.arange(tokens), torch.arange(tokens) % e] = 1e-4  # break ties evenly, ~uniform probs
    rolled = torch.stack([logits.roll(s, dims=1) for s in range(e)]).reshape(-1, e)
    assert load_balancing_loss(rolled, e, k).item() == pytest.approx(k, rel=1e-3)


def test_collapsed_routing_is_penalised():
    e, k = 8, 2
    balanced = load_balancing_loss(torch.randn(512, e) * 0.01, e, k)
    collapsed_logits = torch.zeros(512, e)
    collapsed_logits[:, :2] = 10.0  # everyone picks experts 0 and 1
    collapsed = load_balancing_loss(collapsed_logits, e, k)
    assert collapsed.item() > 3 * balanced.item()
    assert collapsed.item() == pytest.approx(e * 1.0, rel=1e-3)  # f = (1,1,0..), P ≈ (0.5,0.5,0..)


@pytest.mark.parametrize("masked", [False, True])
def test_matches_transformers(masked):
    torch.manual_seed(0)
    b, t, e, k, layers = 3, 7, 8, 2, 4
    logits = tuple(torch.randn(b * t, e) * 2 for _ in range(layers))
    mask = (torch.rand(b, t) > 0.3).long() if masked else None
    want = load_balancing_loss_func(logits, e, k, mask)
    got = load_balancing_loss(logits, e, k, mask)
    torch.testing.assert_close(got, want)


def test_padding_is_left_out():
    e, k = 4, 1
    real = torch.randn(6, e)
    padded = torch.cat([real, torch.full((2, e), 50.0)])  # junk rows for padding positions
    mask = torch.tensor([[1] * 6 + [0] * 2])
    torch.testing.assert_close(load_balancing_loss(padded, e, k, mask), load_balancing_loss(real, e, k))


def test_z_loss_formula():
    logits = torch.randn(10, 8) * 3
    want = (torch.log(torch.exp(logits).sum(-1)) ** 2).mean()
    torch.testing.assert_close(router_z_loss(logits), want)
    torch.testing.assert_close(router_z_loss((logits, logits)), want)
    assert router_z_loss(logits * 10) > router_z_loss(logits)


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        load_balancing_loss((), 8, 2)
    with pytest.raises(ValueError, match="num_experts=4"):
        load_balancing_loss(torch.randn(5, 8), 4, 2)
    with pytest.raises(ValueError, match="one shape"):
        load_balancing_loss((torch.randn(5, 8), torch.randn(6, 8)), 8, 2)
    with pytest.raises(ValueError, match="attention_mask has 3 positions"):
        load_balancing_loss(torch.randn(5, 8), 8, 2, torch.ones(1, 3))

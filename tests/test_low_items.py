"""The reliability review's low items in library helpers: a named ValueError instead of a raw error or a silent result."""

import random

import pytest
import torch

import moe_edu
from moe_edu.adapting.upcycling import dense_config, upcycle_model
from moe_edu.experiments.passkey import WordVocab
from moe_edu.serving.expert_cache import RoutingTrace, simulate_cache
from moe_edu.serving.memory import dtype_bits
from moe_edu.serving.offload import offload_tokens_per_second
from moe_edu.serving.passkey import PasskeyPrompt, make_prompt, passkey_grid, random_key, retrieved
from moe_edu.serving.quantize import quantize_int4, quantize_int8

CFG = moe_edu.get_config("tiny").replace(vocab_size=64, num_hidden_layers=1)
VOCAB = WordVocab.passkey()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: quantize_int4(torch.randn(4, 64), group_size=16.0), "group_size must be an int"),  # TypeError
        (lambda: quantize_int4(torch.randn(4, 64), group_size=None), "group_size must be an int"),
        (lambda: quantize_int4(torch.randn(4, 64), group_size="32"), "group_size must be an int"),
        (lambda: quantize_int8(torch.randn(4, 0)), "non-empty"),  # IndexError
        (lambda: quantize_int8(torch.tensor([[1.0, float("inf")]])), "NaN or infinite"),  # a NaN row, silently
        (lambda: quantize_int4(torch.tensor([[1.0, float("inf")]]), group_size=2), "NaN or infinite"),
        (lambda: dtype_bits(torch.bool), "real floating-point or integer"),  # TypeError from iinfo
        (lambda: dtype_bits(torch.complex64), "real floating-point or integer"),
        (lambda: offload_tokens_per_second(CFG, -1, pcie_gbs=32), "loads_per_token must be"),  # 85.7 tokens/s
        (lambda: offload_tokens_per_second(CFG, float("nan"), pcie_gbs=32), "loads_per_token must be"),  # NaN
        (lambda: make_prompt(VOCAB.encode, length=64, depth="0.5", key="12345"), "depth must be"),  # TypeError
        (lambda: make_prompt(VOCAB.encode, length=64, depth=None, key="12345"), "depth must be"),
        (lambda: make_prompt(VOCAB.encode, length=64, depth=0.5, key=12345), "key must be a string"),  # AttributeError
        (lambda: passkey_grid(None, VOCAB.encode, lengths=[64], depths=[0.5], trials=2.5), "trials must be an int"),
        (lambda: passkey_grid(None, VOCAB.encode, lengths=[64], depths=[0.5], batch_size=0), "batch_size must be"),
        (lambda: retrieved(None, [PasskeyPrompt([1, 2], [], "", 0.0, 0)]), "empty prompt or answer"),
    ],
)
def test_helpers_raise_named_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_cache_simulation_refuses_non_sizes_and_empty_traces():
    trace = RoutingTrace(torch.zeros(3, 1, 2, dtype=torch.long), torch.zeros(3, 1, 2, dtype=torch.long), [0])
    for capacity in (True, 1.5, None, -1):  # True counted as 1; 1.5 and None were TypeErrors
        with pytest.raises(ValueError, match="capacity must be an int"):
            simulate_cache(trace, capacity)
    empty = RoutingTrace(torch.zeros(0, 1, 2, dtype=torch.long), torch.zeros(0, 1, 2, dtype=torch.long), [])
    with pytest.raises(ValueError, match="no tokens"):  # ZeroDivisionError
        simulate_cache(empty, 2)


def test_upcycling_refuses_non_finite_or_negative_noise():
    torch.manual_seed(0)
    dense = moe_edu.MixtralForCausalLM(dense_config(CFG))
    for kwargs in ({"router_std": float("nan")}, {"router_std": float("inf")}, {"router_std": -0.1}):
        with pytest.raises(ValueError, match="router_std"):  # a NaN model
            upcycle_model(dense, **kwargs)
    for noise in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="noise_std"):  # ignored silently
            upcycle_model(dense, noise_std=noise)
    assert random_key(random.Random(0), 5, distinct=True).isdigit()


def test_labels_out_of_range_or_all_ignored_are_named_errors():
    """A label of 9999 was a raw IndexError (a device-side assert on CUDA); all -100 gave a NaN loss."""
    torch.manual_seed(0)
    model = moe_edu.MixtralForCausalLM(CFG)
    ids = torch.randint(0, CFG.vocab_size, (2, 6))
    for labels in (torch.full_like(ids, 9999), torch.full_like(ids, -5), torch.full_like(ids, -100)):
        with pytest.raises(ValueError, match=r"labels\[:, 1:\] must hold at least one target"):
            model(ids, labels=labels)
    with pytest.raises(ValueError, match="the prompt is empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)
    assert torch.isfinite(model(ids, labels=ids).loss)

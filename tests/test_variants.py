"""Invariants of the MoE family in `moe_edu.variants` (notebook 09)."""

from __future__ import annotations

import math

import pytest
import torch

import moe_edu
from moe_edu.capacity import capacity_dispatch, expert_capacity, keep_within_capacity
from moe_edu.dispatch import loop_dispatch
from moe_edu.moe_block import MoEBlock
from moe_edu.routing import Router, TopKRouter
from moe_edu.variants import VARIANTS, SoftMoE, build_variant, build_variants, moe_output
from moe_edu.variants.base import MoEOutput, active_parameters, copy_from_block, flops_per_token, total_parameters
from moe_edu.variants.compare import Table, compare, load_stats
from moe_edu.variants.expert_choice import ExpertChoiceRouter
from moe_edu.variants.noisy_topk import NoisyTopKRouter, prob_in_topk

CFG = moe_edu.get_config("tiny")
H, I, E = CFG.hidden_size, CFG.intermediate_size, CFG.num_local_experts


def hidden(n: int = 96, seed: int = 0, skew: float = 1.0) -> torch.Tensor:
    """(2, n/2, H) hidden states with a shared offset, so the router is unbalanced and capacity bites."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, n // 2, H, generator=g) + skew * torch.randn(H, generator=g)  # (2, n/2, H)


def seeded(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_variant(name, CFG, **options).eval()


def fcfs_keep(chosen: torch.Tensor, capacity: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """Plain-Python reference: slot-major first come, first served."""
    N, k = chosen.shape
    used, keep = [0] * E, torch.zeros(N, k, dtype=torch.bool)
    for slot in range(k):
        for t in range(N):
            if active is not None and not active[t, slot]:
                continue
            e = int(chosen[t, slot])
            if used[e] < capacity:
                used[e] += 1
                keep[t, slot] = True
    return keep


# --- capacity -------------------------------------------------------------------
def test_expert_capacity_formula_and_errors():
    assert expert_capacity(96, 8, 1, 1.25) == 15
    assert expert_capacity(96, 8, 2, 1.25) == 30
    assert expert_capacity(10, 8, 2, 100.0) == 10  # clamped to N
    for bad in (0, -1.0, "1", True):
        with pytest.raises(ValueError, match="capacity_factor"):
            expert_capacity(8, 4, 1, bad)
    with pytest.raises(ValueError, match="num_tokens"):
        expert_capacity(0, 4, 1, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_within_capacity_matches_python_reference(seed):
    g = torch.Generator().manual_seed(seed)
    chosen = torch.stack([torch.randperm(E, generator=g)[:2] for _ in range(40)])  # (40, 2) distinct per token
    active = torch.rand(40, 2, generator=g) < 0.8
    for capacity in (0, 3, 7, 40):
        assert torch.equal(keep_within_capacity(chosen, E, capacity), fcfs_keep(chosen, capacity))
        assert torch.equal(keep_within_capacity(chosen, E, capacity, active), fcfs_keep(chosen, capacity, active))


def test_capacity_dispatch_matches_python_reference_and_masked_loop():
    block = seeded("mixtral")
    x = hidden()[0]  # (48, H): skewed, so capacity 0.75 drops assignments
    r = block.gate(x)
    weights, chosen = r.weights, r.expert_ids
    out = capacity_dispatch(x, block.experts, weights, chosen, 0.75)
    want_keep = fcfs_keep(chosen, expert_capacity(48, E, 2, 0.75))  # plain-Python first come, first served
    assert out.capacity == expert_capacity(48, E, 2, 0.75) and torch.equal(out.kept, want_keep)
    assert not want_keep.all()  # something was dropped: the test can fail
    want_y = loop_dispatch(x, block.experts, weights * want_keep, chosen)  # dropped = weight 0 in the reference
    torch.testing.assert_close(out.y, want_y, atol=1e-6, rtol=1e-5)


# --- Switch -----------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.5, 1.0, 1.25])
def test_switch_respects_capacity_and_counts_drops_exactly(factor):
    moe = seeded("switch", capacity_factor=factor)
    x = hidden()
    out = moe_output(moe, x)
    N = x.shape[0] * x.shape[1]
    C = expert_capacity(N, E, 1, factor)
    assert int(out.load_counts.max()) <= C
    flat = x.reshape(-1, H)
    probs = torch.softmax(moe.gate.logits(flat), -1)
    p, chosen = probs.max(-1, keepdim=True)
    keep = fcfs_keep(chosen, C)
    assert out.dropped == out.dropped_assignments == int((~keep).sum()) > 0  # the skew makes drops happen
    assert int(out.load_counts.sum()) + out.dropped == N
    assert torch.equal(out.demand_counts, torch.bincount(chosen[:, 0], minlength=E))
    assert torch.equal(out.load_counts, out.demand_counts.clamp(max=C))  # top-1: overflow = demand - C
    y = out.y.reshape(-1, H)
    assert torch.all(y[~keep[:, 0]] == 0)  # dropped tokens: output 0, the residual carries them
    expected = loop_dispatch(flat, moe.experts, p * keep, chosen)  # kept: p * expert(x)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-5)


def test_switch_with_full_capacity_is_p_times_the_top1_block():
    moe = seeded("switch", capacity_factor=float(E))
    block = moe_edu.SparseMoeBlock(CFG.replace(num_experts_per_tok=1)).eval()
    experts = {f"experts.{k}": v for k, v in moe.experts.state_dict().items()}
    block.load_state_dict({"gate.weight": moe.gate.weight, **experts})
    x = hidden()
    out = moe_output(moe, x)
    y_block, logits = block(x)
    p = torch.softmax(logits, -1).max(-1).values  # (N,)
    assert out.dropped == 0
    torch.testing.assert_close(out.y.reshape(-1, H), y_block.reshape(-1, H) * p[:, None], atol=1e-6, rtol=1e-5)


# --- GShard -----------------------------------------------------------------------
def test_gshard_capacity_priority_and_drop_count():
    moe = seeded("gshard", capacity_factor=0.5)
    x = hidden()
    out = moe_output(moe, x)
    flat = x.reshape(-1, H)
    N = flat.shape[0]
    C = expert_capacity(N, E, 2, 0.5)
    assert int(out.load_counts.max()) <= C
    _, chosen = moe_edu.softmax_topk(moe.gate.logits(flat), 2)
    keep = fcfs_keep(chosen, C)
    assert out.dropped_assignments == int((~keep).sum()) > 0
    assert out.dropped == int((~keep.any(1)).sum())
    assert int(out.load_counts.sum()) == int(keep.sum())
    y = out.y.reshape(-1, H)
    assert torch.all(y[~keep.any(1)] == 0)


def test_gshard_random_routing_only_in_training():
    moe = seeded("gshard", capacity_factor=float(E))
    x = hidden()
    a, b = moe_output(moe, x), moe_output(moe, x)
    assert torch.equal(a.y, b.y) and int(a.load_counts.sum()) == 2 * 96  # eval: both experts, deterministic
    moe.train()
    torch.manual_seed(1)
    c = moe_output(moe, x)
    assert int(c.load_counts.sum()) < 2 * 96  # some second experts skipped at random
    assert c.dropped_assignments == 0  # skipping is not dropping
    moe.gate.random_routing = False
    assert torch.equal(moe_output(moe, x).y, a.y)


# --- dropless equivalence ------------------------------------------------------------
def block_with(moe, k: int = 2) -> moe_edu.SparseMoeBlock:
    block = moe_edu.SparseMoeBlock(CFG.replace(num_experts_per_tok=k)).eval()
    with torch.no_grad():
        block.gate.weight.copy_(moe.gate.weight)
        block.experts.load_state_dict(moe.experts.state_dict())
    return block


@pytest.mark.parametrize(
    "make",
    [
        lambda: seeded("mixtral"),
        lambda: seeded("noisy_topk"),
        lambda: seeded("gshard", capacity_factor=float(E)),
        lambda: seeded("gshard", capacity_factor=2.0 * E, random_routing=True),
    ],
    ids=["mixtral", "noisy_topk_eval", "gshard_full_capacity", "gshard_more_capacity"],
)
def test_topk_variants_without_noise_and_with_capacity_equal_the_dropless_block(make):
    moe = make()
    x = hidden()
    out = moe_output(moe, x)
    y_block, logits = block_with(moe)(x)
    assert out.dropped == out.dropped_assignments == 0
    torch.testing.assert_close(out.router_logits, logits)
    torch.testing.assert_close(out.y, y_block, atol=1e-6, rtol=1e-5)


def test_variants_accept_bf16_and_keep_dtype():
    x = hidden().to(torch.bfloat16)
    for name, moe in build_variants(CFG).items():
        out = moe_output(moe.to(torch.bfloat16).eval(), x)
        assert out.y.dtype == torch.bfloat16 and out.y.shape == x.shape, name
        assert out.router_logits.dtype == torch.float32, name


# --- noisy top-k ---------------------------------------------------------------------
def test_noise_only_in_training():
    moe = seeded("noisy_topk")
    x = hidden()
    a, b = moe_output(moe, x), moe_output(moe, x)
    assert torch.equal(a.y, b.y)
    torch.testing.assert_close(a.router_logits, moe.gate.logits(x.reshape(-1, H)))
    moe.train()
    c, d = moe_output(moe, x), moe_output(moe, x)
    assert not torch.equal(c.router_logits, a.router_logits) and not torch.equal(c.y, d.y)
    moe.eval()
    assert torch.equal(moe_output(moe, x).y, a.y)


def test_noisy_aux_losses_are_differentiable_and_prob_in_topk_is_a_probability():
    moe = seeded("noisy_topk").train()
    torch.manual_seed(0)
    out = moe_output(moe, hidden())
    assert set(out.aux_losses) == {"importance", "load"}
    (out.aux_losses["importance"] + out.aux_losses["load"]).backward()
    assert moe.gate.weight.grad.abs().sum() > 0 and moe.gate.noise.weight.grad.abs().sum() > 0
    clean = torch.randn(50, E)
    noisy = clean + torch.randn(50, E)
    p = prob_in_topk(clean, noisy, torch.ones(50, E), 2)
    assert torch.all((p >= 0) & (p <= 1))
    p_big = prob_in_topk(clean, clean, torch.full((50, E), 1e-6), 2)  # tiny noise: P -> 1 inside top-k, 0 outside
    top = torch.zeros(50, E, dtype=torch.bool).scatter(1, clean.topk(2).indices, True)
    assert torch.equal(p_big > 0.5, top)


# --- expert choice -----------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_expert_choice_gives_each_expert_exactly_its_capacity(factor):
    moe = seeded("expert_choice", capacity_factor=factor)
    x = hidden()
    flat = x.reshape(-1, H)
    out = moe_output(moe, x)
    C = expert_capacity(flat.shape[0], E, 1, factor)
    assert out.load_counts.tolist() == [C] * E
    scores = torch.softmax(moe.gate.logits(flat), -1)  # (N, E)
    gate, token = scores.t().topk(C, dim=-1)  # (E, C)
    y = torch.zeros_like(flat)
    for e in range(E):
        y.index_add_(0, token[e], gate[e, :, None] * moe.experts.expert(e, flat[token[e]]))
    torch.testing.assert_close(out.y.reshape(-1, H), y, atol=1e-6, rtol=1e-5)
    unrouted = torch.ones(flat.shape[0], dtype=torch.bool)
    unrouted[token.reshape(-1)] = False
    assert out.dropped == int(unrouted.sum())
    assert torch.all(out.y.reshape(-1, H)[unrouted] == 0)
    if factor == 0.5:
        assert out.dropped > 0  # some tokens get no expert


# --- shared experts --------------------------------------------------------------------
def test_shared_experts_see_every_token():
    cfg = CFG
    moe = build_variant("shared_experts", cfg, granularity=2, num_shared=1).eval()
    x = hidden()
    full = moe_output(moe, x).y
    with torch.no_grad():
        moe.experts.down_proj.zero_()  # silence the routed experts: only the shared one is left
    flat = x.reshape(-1, H)
    only_shared = moe_output(moe, x).y.reshape(-1, H)
    torch.testing.assert_close(only_shared, moe.shared.expert(0, flat), atol=1e-6, rtol=1e-5)
    assert torch.all(only_shared.abs().sum(-1) > 0)  # every token got the shared expert
    assert not torch.equal(full.reshape(-1, H), only_shared)


def test_shared_experts_keep_mixtrals_parameter_budget():
    big = moe_edu.get_config("mixtral-8x7b")
    with torch.device("meta"):
        mixtral = build_variant("mixtral", big)
        shared = build_variant("shared_experts", big, granularity=2, num_shared=1)
    per_layer = 8 * 3 * 4096 * 14336
    assert total_parameters(mixtral) == 8 * 4096 + per_layer
    assert active_parameters(mixtral) == 8 * 4096 + per_layer // 4
    assert total_parameters(shared) - shared.gate.weight.numel() == per_layer
    assert active_parameters(shared) - shared.gate.weight.numel() == per_layer // 4
    assert flops_per_token(mixtral) == 2 * active_parameters(mixtral)
    with pytest.raises(ValueError, match="granularity"):
        build_variant("shared_experts", big, granularity=3)


# --- registry, output, table, errors ------------------------------------------------------
def test_registry_builds_every_variant_and_outputs_have_one_shape():
    variants = build_variants(CFG)
    assert list(variants) == list(VARIANTS)
    x = hidden()
    for name, moe in variants.items():
        out = moe_output(moe.eval(), x)
        assert isinstance(out, MoEOutput), name
        assert out.y.shape == x.shape and out.num_tokens == 96, name
        assert out.router_logits.shape == (96, moe.num_experts), name
        assert out.load_counts.shape == (moe.num_experts,), name
        assert set(out.aux_losses) == set(moe.gate.aux_loss_names), name
        assert all(math.isfinite(float(v.detach())) for v in out.aux_losses.values()), name
    with pytest.raises(ValueError, match="unknown MoE variant"):
        build_variant("dense", CFG)


def test_copy_from_block_shares_router_and_experts():
    block = moe_edu.SparseMoeBlock(CFG).eval()
    moe = copy_from_block(seeded("switch"), block)
    assert torch.equal(moe.gate.weight, block.gate.weight)
    with pytest.raises(ValueError, match=r"gate.weight"):
        copy_from_block(build_variant("shared_experts", CFG), block)


@pytest.mark.parametrize(
    ("bad", "err"),
    [
        (torch.randn(4, 3), ValueError),
        (torch.randn(8), ValueError),
        (torch.ones(2, 4, H, dtype=torch.long), TypeError),
        ([1.0], TypeError),
    ],
)
def test_bad_input_raises_clear_errors(bad, err):
    for moe in build_variants(CFG).values():
        with pytest.raises(err, match="expects"):
            moe_output(moe, bad)


def test_constructor_validation():
    with pytest.raises(ValueError, match="capacity_factor"):
        build_variant("switch", CFG, capacity_factor=0)
    with pytest.raises(ValueError, match="top_k"):
        NoisyTopKRouter(H, E, top_k=E)
    with pytest.raises(ValueError, match="num_experts"):
        ExpertChoiceRouter(H, 0, 1.0)


def test_compare_table_is_deterministic_and_complete():
    torch.manual_seed(0)
    variants = build_variants(CFG)
    variants["noisy_topk"].train()
    x = hidden()
    table, outputs = compare(variants, x)
    assert variants["noisy_topk"].training  # measured in eval mode, then put back
    again, _ = compare(variants, x)
    assert isinstance(table, Table) and table.to_markdown() == again.to_markdown()
    assert len(table.rows) == len(VARIANTS) and set(outputs) == set(VARIANTS)
    needed = {
        "variant",
        "experts",
        "k",
        "gating",
        "capacity",
        "aux losses",
        "total params",
        "active params",
        "FLOPs/token",
        "load CV",
        "max/mean load",
        "dropped tokens %",
        "dropped assignments %",
    }
    assert needed <= set(table.header())
    rows = {r["variant"]: r for r in table.rows}
    assert rows["Expert choice"]["load CV"] == 0.0
    assert rows["Mixtral dropless top-k"]["dropped tokens %"] == 0.0
    md = table.select("variant", "load CV").to_markdown().splitlines()
    assert md[0] == "| variant | load CV |" and len(md) == 2 + len(VARIANTS)
    html = table.select("variant", "load CV").to_html()
    assert html.startswith("<table><thead><tr><th>variant</th><th>load CV</th></tr>")
    assert html.count("<tr>") == 1 + len(VARIANTS)
    assert load_stats(torch.tensor([2, 2, 2, 2]))["load CV"] == 0.0
    with pytest.raises(KeyError, match="no such columns"):
        table.select("nope")


# --- exercise checkers (moe_edu.course.exercises.family), imported lazily: importing registers them in
# moe_edu.course.exercises.ALL, which tests/test_exercises.py compares with its own list -------------------
def _switch_route_renormalised(logits, factor):  # weight = 1 after renormalising a single expert
    from moe_edu.variants.switch import switch_route

    w, e, keep = switch_route(logits, factor)
    return torch.ones_like(w), e, keep


def _switch_route_floor(logits, factor):  # C rounded down instead of up
    N, E = logits.shape
    p, e = torch.softmax(logits.float(), -1).max(-1)
    keep = keep_within_capacity(e[:, None], E, int(factor * N / E))[:, 0]
    return p, e, keep


def _switch_route_last_first(logits, factor):  # the last tokens win the buffer
    from moe_edu.variants.switch import switch_route

    w, e, keep = switch_route(logits.flip(0), factor)
    return w.flip(0), e.flip(0), keep.flip(0)


def _switch_moe_passthrough(x, experts, logits, factor):  # dropped tokens output x instead of 0
    from moe_edu.course.exercises.family import switch_moe_reference
    from moe_edu.variants.switch import switch_route

    y, dropped = switch_moe_reference(x, experts, logits, factor)
    keep = switch_route(logits, factor)[2]
    return torch.where(keep[:, None], y, x), dropped


def _switch_moe_counts_kept(x, experts, logits, factor):
    from moe_edu.course.exercises.family import switch_moe_reference

    y, dropped = switch_moe_reference(x, experts, logits, factor)
    return y, x.shape[0] - dropped


def _ec_softmax_over_tokens(logits, factor):  # normalised down the wrong axis
    N, E = logits.shape
    return torch.topk(torch.softmax(logits.float(), 0).t(), expert_capacity(N, E, 1, factor), dim=-1)


def _ec_token_choice(logits, factor):  # top-C along each token's row: wrong shape
    N, E = logits.shape
    return torch.topk(torch.softmax(logits.float(), -1), min(E, expert_capacity(N, E, 1, factor)), dim=-1)


def _ec_moe_renormalised(x, experts, logits, factor):  # renormalises each token's gates to sum 1
    from moe_edu.variants.expert_choice import expert_choice_route

    gate, token = expert_choice_route(logits, factor)
    E, _C = gate.shape
    total = torch.zeros(x.shape[0]).index_add_(0, token.reshape(-1), gate.reshape(-1))
    gate = gate / total[token]
    y = torch.zeros_like(x)
    for e in range(E):
        y.index_add_(0, token[e], gate[e, :, None] * experts.expert(e, x[token[e]]))
    return y, int((torch.bincount(token.reshape(-1), minlength=x.shape[0]) == 0).sum())


def _ec_moe_no_count(x, experts, logits, factor):
    from moe_edu.course.exercises.family import expert_choice_moe_reference

    return expert_choice_moe_reference(x, experts, logits, factor)[0], 0


FAMILY_WRONG = {
    "switch_route": [
        (_switch_route_renormalised, "weight differs"),
        (_switch_route_floor, "keep differs"),
        (_switch_route_last_first, "keep differs"),
    ],
    "switch_moe": [(_switch_moe_passthrough, "y differs"), (_switch_moe_counts_kept, "dropped: expected")],
    "expert_choice_route": [(_ec_softmax_over_tokens, "gate differs"), (_ec_token_choice, "gate shape")],
    "expert_choice_moe": [(_ec_moe_renormalised, "y differs"), (_ec_moe_no_count, "unrouted: expected")],
}


@pytest.mark.parametrize("name", sorted(FAMILY_WRONG))
def test_family_checker_reference_stub_and_mistakes(capsys, one_line, name):
    from moe_edu.course.exercises import family

    ex = family.exercises.get(name)
    assert len(ex.hints) >= 2
    ok, line = one_line(ex.check, ex.reference)
    assert ok and line.startswith(f"✓ {name}: all ")

    def stub(*args, **kwargs):
        raise NotImplementedError()

    ok, line = one_line(ex.check, stub)
    assert not ok and "not attempted" in line
    for fn, phrase in FAMILY_WRONG[name]:
        ok, line = one_line(ex.check, fn)
        assert not ok and line.startswith(f"✗ {name}: case ") and phrase in line, line
        assert ex.use(fn) is ex.reference
        assert "reference" in capsys.readouterr().out  # use() says it fell back to the reference


def test_family_references_are_the_layers():
    from moe_edu.course.exercises.family import expert_choice_moe_reference, switch_moe_reference

    x = hidden()
    for name, ref in (("switch", switch_moe_reference), ("expert_choice", expert_choice_moe_reference)):
        moe = seeded(name, capacity_factor=1.0)
        out = moe_output(moe, x)
        flat = x.reshape(-1, H)
        y, dropped = ref(flat, moe.experts, moe.gate.logits(flat), 1.0)
        torch.testing.assert_close(out.y.reshape(-1, H), y)
        assert out.dropped == dropped


@pytest.mark.gpu
def test_variants_on_cuda_in_bf16():
    x = hidden().to("cuda", torch.bfloat16)
    for name, moe in build_variants(CFG).items():
        moe = moe.to("cuda", torch.bfloat16).eval()
        out = moe_output(moe, x)
        assert out.y.device.type == "cuda" and out.y.dtype == torch.bfloat16 and out.y.shape == x.shape, name
        assert out.router_logits.dtype == torch.float32 and torch.isfinite(out.y).all(), name
        if name in ("switch", "gshard"):
            assert int(out.load_counts.max()) <= moe.gate.capacity(out.num_tokens), name
        if name == "expert_choice":
            assert out.load_counts.tolist() == [moe.gate.capacity(out.num_tokens)] * moe.num_experts
    mixtral, noisy = seeded("mixtral"), seeded("noisy_topk")
    noisy.load_state_dict(mixtral.state_dict(), strict=False)
    mixtral, noisy = mixtral.cuda(), noisy.cuda()
    torch.testing.assert_close(moe_output(noisy, x.float()).y, moe_output(mixtral, x.float()).y)


def test_output_names_have_one_meaning_and_no_old_aliases():
    out = moe_output(seeded("switch", capacity_factor=0.5), hidden())
    assert out.load_counts.dtype == torch.int64 and int(out.load_counts.sum()) + out.dropped == 96  # counts, not shares
    assert not hasattr(out, "expert_load") and not hasattr(out, "expert_demand")  # one name per field


def test_capacity_factor_can_be_changed_on_the_router():
    moe = seeded("switch", capacity_factor=1.25)
    x = hidden()
    moe.gate.capacity_factor = 0.5
    assert moe.gate.capacity(96) == expert_capacity(96, E, 1, 0.5)
    assert moe.gate.capacity_rule == "C = ceil(0.5 N/E), overflow dropped"
    assert moe_output(moe, x).dropped > 0
    with pytest.raises(ValueError, match="capacity_factor"):
        moe.gate.capacity_factor = 0


# --- variants are values: every public method runs (D1, D2) -------------------------------------
def test_every_variants_forward_mix_and_route_run_or_are_absent():
    x = hidden()  # (2, 48, H)
    for name, moe in build_variants(CFG).items():
        moe.eval()
        if isinstance(moe, MoEBlock):
            y, logits = moe(x)
            assert y.shape == x.shape and logits.shape == (96, moe.num_experts), name
            y_mix, routing = moe.mix(x.reshape(-1, H))
            torch.testing.assert_close(y_mix, y.reshape(-1, H), msg=name)
            assert torch.equal(moe.route(x).expert_ids, routing.expert_ids), name
            assert routing.weights.shape == routing.expert_ids.shape == (96, moe.gate.top_k), name
        else:  # Soft MoE routes nothing: no mix, no route to inherit and crash
            assert isinstance(moe, SoftMoE) and name == "soft_moe"
            assert not hasattr(moe, "mix") and not hasattr(moe, "route")
            assert moe(x).y.shape == x.shape


def test_a_variant_is_the_block_with_another_router():
    assert type(build_variant("mixtral", CFG)) is moe_edu.SparseMoeBlock  # the Mixtral row is the library's block
    for name in ("noisy_topk", "switch", "gshard", "expert_choice", "shared_experts", "aux_free"):
        moe = build_variant(name, CFG)
        assert type(moe) is MoEBlock and isinstance(moe.gate, Router), name
        assert moe.gate.label and moe.gate.gating and moe.gate.capacity_rule, name  # table text lives on the router
    assert build_variant("shared_experts", CFG).shared.num_experts == 1
    assert build_variant("switch", CFG).shared is None


def test_router_declares_top_k_with_clear_errors():
    bare = Router(H, E)
    assert bare.top_k is None
    with pytest.raises(NotImplementedError, match="Router sets no top_k"):  # not a masked AttributeError
        _ = bare.experts_per_token
    ec = build_variant("expert_choice", CFG, capacity_factor=1.5)
    assert ec.gate.top_k == E  # its Routing has one candidate slot per expert, `keep` marks the chosen
    assert ec.gate.experts_per_token == 1.5 and ec.gate.k_text == "1.5 on average"
    assert build_variant("switch", CFG).gate.top_k == 1 and moe_edu.SparseMoeBlock(CFG).top_k == CFG.num_experts_per_tok


def test_routing_is_read_by_name_not_unpacked():
    router = TopKRouter(H, E, 2)
    router.reset_parameters()
    routing = router(torch.randn(5, H))
    assert routing.weights.shape == routing.expert_ids.shape == (5, 2)
    with pytest.raises(TypeError):
        _, _, _ = routing


def test_every_variant_takes_init_and_jitter_from_the_config():
    cfg = CFG.replace(initializer_range=0.5, router_jitter_noise=0.1)
    for name, moe in build_variants(cfg).items():
        assert 0.4 < float(moe.experts.gate_up_proj.detach().std()) < 0.6, name
        if isinstance(moe, MoEBlock):
            assert moe.jitter_noise == 0.1, name

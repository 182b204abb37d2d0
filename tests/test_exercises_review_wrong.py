"""C1–C5 of the classroom review: five wrong answers the checkers used to accept, each now rejected
by a case aimed at exactly that answer (the answer is the one from the review, verbatim)."""

from __future__ import annotations

import math

import torch

from moe_edu.course.exercises import adapting, family, gating, serving


def test_c1_int8_round_trip_without_a_zero_row_guard():
    def no_guard(w):
        s = w.abs().amax(1, keepdim=True) / 127
        return torch.round(w / s).clamp(-127, 127).to(torch.int8).float() * s

    symbol, message = serving.exercises.get("int8_round_trip").outcome(no_guard)
    assert symbol == "✗" and message.startswith("case 3 (a row of zeros): NaN was cast to an integer"), message

    def guarded(w):  # the same with the guard passes, and so does a where() that computes 0/0 but never casts it
        s = (w.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12)
        return torch.round(w / s).clamp(-127, 127).to(torch.int8).float() * s

    def masked(w):
        s = w.abs().amax(1, keepdim=True) / 127
        q = torch.where(s > 0, w / s, torch.zeros_like(w))
        return torch.round(q).clamp(-127, 127).to(torch.int8).float() * s

    assert serving.exercises.get("int8_round_trip").outcome(guarded)[0] == "✓"
    assert serving.exercises.get("int8_round_trip").outcome(masked)[0] == "✓"


def test_c2_upcycled_experts_as_expand_views():
    def views(gate_up, down, num_experts):
        return gate_up.expand(num_experts, -1, -1), down.expand(num_experts, -1, -1)

    symbol, message = adapting.exercises.get("upcycle_weights").outcome(views)
    assert symbol == "✗" and "case 1" in message and "view" in message, message

    def copies(gate_up, down, num_experts):
        return gate_up.expand(num_experts, -1, -1).clone(), down.repeat(num_experts, 1, 1)

    assert adapting.exercises.get("upcycle_weights").outcome(copies)[0] == "✓"


def test_c3_bias_update_with_an_integer_mean():
    def integer_mean(bias, load_counts, speed):
        return bias - speed * torch.sign(load_counts - load_counts.sum() // len(load_counts)).to(bias.dtype)

    symbol, message = adapting.exercises.get("bias_update").outcome(integer_mean)
    assert symbol == "✗" and message.startswith("case 4 (counts [3, 2, 2, 2]"), message


def test_c4_expert_choice_route_without_the_cap_at_n():
    def uncapped(logits, capacity_factor):
        N, E = logits.shape
        C = math.ceil(capacity_factor * N / E)
        gate, token = torch.softmax(logits.float(), dim=-1).T.topk(C, dim=-1)
        return gate, token

    symbol, message = family.exercises.get("expert_choice_route").outcome(uncapped)
    assert symbol == "✗" and message.startswith("case 5 (factor 5 > E"), message


def test_c5_router_probs_naive_softmax():
    def naive(logits):
        l = logits.float()
        return l.exp() / l.exp().sum(-1, keepdim=True)

    symbol, message = gating.exercises.get("router_probs").outcome(naive)
    assert symbol == "✗" and message.startswith("case 5 (huge logits"), message

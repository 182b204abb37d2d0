"""Serving-time expert parallelism: which experts a step hits, and how the load lands on devices.

Under expert parallelism (EP) each device holds some experts; a step's tokens go to the devices of their
experts, and the step takes as long as the busiest device. Three pieces of arithmetic:

- `expected_experts_hit`: with uniform, independent routing, T tokens hit E(1 - (1 - k/E)^T) of the E
  experts (notebook 10 §1) — a decode step of batch 32 reads nearly every expert of a layer;
- `device_loads`: rows per device for one step's routing, given which device(s) hold each expert;
- `replicate_hot_experts`: "redundant experts" (DeepSeek-V3 §3.4; the open-source EPLB balancer):
  copy the busiest experts onto spare slots of the least-loaded devices and split their rows
  between the copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..validation import int_in_range, nonnegative_int, positive_int

Placement = list[list[int]]  # placement[e] = the devices holding a copy of expert e


def expected_experts_hit(num_experts: int, top_k: int, tokens: int) -> float:
    """E (1 - (1 - k/E)^T): experts at least one of T uniformly routed tokens chooses."""
    positive_int("num_experts", num_experts)
    int_in_range("top_k", top_k, 1, num_experts)
    nonnegative_int("tokens", tokens)
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def contiguous_placement(num_experts: int, world: int) -> Placement:
    """Expert e on device e // (E / world): the layout of `moe_edu.parallel` (E divisible by world)."""
    positive_int("world", world)
    if positive_int("num_experts", num_experts) % world:
        raise ValueError(f"num_experts ({num_experts}) must be divisible by world ({world})")
    per = num_experts // world
    return [[e // per] for e in range(num_experts)]


def expert_counts(expert_ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """expert_ids (T, k) -> rows per expert (E,) as float."""
    return torch.bincount(expert_ids.reshape(-1), minlength=num_experts).float()  # (E,)


def device_loads(counts: torch.Tensor, placement: Placement, world: int) -> torch.Tensor:
    """Rows per device (world,): each expert's rows split evenly between the devices holding it."""
    if counts.dim() != 1 or counts.shape[0] != len(placement):
        raise ValueError(f"counts must be (E,) with E = len(placement) = {len(placement)}, got {tuple(counts.shape)}")
    loads = torch.zeros(world)  # (world,)
    for e, devices in enumerate(placement):
        if not devices or any(not 0 <= d < world for d in devices):
            raise ValueError(f"placement[{e}] must list devices in [0, {world}), got {devices}")
        for d in devices:
            loads[d] += counts[e] / len(devices)
    return loads


def balance(loads: torch.Tensor) -> float:
    """mean / max of the per-device loads: 1.0 = every device equally busy; the step runs at this fraction."""
    top = loads.max().item()
    return 1.0 if top == 0 else loads.mean().item() / top


def replicate_hot_experts(
    counts: torch.Tensor, placement: Placement, world: int, replicas: int, max_per_device: int | None = None
) -> Placement:
    """Greedy redundant experts: `replicas` times, copy the expert with the most rows per copy onto the
    least-loaded device that does not hold it yet (and has a free slot when `max_per_device` is given)."""
    nonnegative_int("replicas", replicas)
    new = [list(devices) for devices in placement]
    for _ in range(replicas):
        loads = device_loads(counts, new, world)  # (world,)
        held = [sum(d == dev for devices in new for d in devices) for dev in range(world)]
        per_copy = torch.tensor([counts[e].item() / len(new[e]) for e in range(len(new))])  # (E,)
        for e in per_copy.argsort(descending=True).tolist():
            free = [d for d in range(world) if d not in new[e] and (max_per_device is None or held[d] < max_per_device)]
            if free:
                new[e].append(min(free, key=lambda d: loads[d].item()))
                break
    return new


def step_balance(expert_ids: torch.Tensor, num_experts: int, placement: Placement, world: int) -> float:
    """`balance` of one step's routing (T, k) under `placement`."""
    return balance(device_loads(expert_counts(expert_ids, num_experts), placement, world))


def mean_step_balance(steps: Sequence[torch.Tensor], num_experts: int, placement: Placement, world: int) -> float:
    """Average `step_balance` over several steps' routings."""
    if not steps:
        raise ValueError("mean_step_balance needs at least one step")
    return sum(step_balance(s, num_experts, placement, world) for s in steps) / len(steps)

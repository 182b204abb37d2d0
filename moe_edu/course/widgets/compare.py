"""Compare mode: the same text through an untrained and the trained model, side by side.

Routing that emerges from training is what none of the usual pictures can show: a freshly initialised
router (same config, seeded) already sends tokens somewhere, but its choices follow the random embedding
of each token, while the trained router's follow what the token does. Both rows are the by-layer
view's lean rendering (layers.py) at the explorer's layer and k, each with its share of neighbouring
tokens that keep their first expert (Table 5's statistic) and its top-2 share of the busiest expert.
"""

from __future__ import annotations

import torch

from moe_edu.course.widgets.layers import layer_text, repeat_share
from moe_edu.course.widgets.render import NOTE, check_prefix, style_block
from moe_edu.course.widgets.trace import RoutingTrace, trace_routing
from moe_edu.model import MixtralForCausalLM


def untrained_twin(model: MixtralForCausalLM, seed: int = 0) -> MixtralForCausalLM:
    """A freshly initialised model of the same config (seeded, so the picture is the same every run)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        twin = MixtralForCausalLM(model.config).eval()
    finally:
        torch.random.set_rng_state(state)
    return twin


def compare_html(
    traces: dict[str, RoutingTrace],
    layer: int,
    k: int | None = None,
    *,
    id_prefix: str = "moe-compare",
    selected: int | None = None,
    dimmed: int | None = None,
) -> str:
    """One row per (name, trace), same layer and k, for traces of the same text."""
    p = check_prefix(id_prefix)
    first = next(iter(traces.values()))
    layer, k = first.check_layer(layer), first.check_k(k)
    rows = []
    for name, trace in traces.items():
        share = repeat_share(trace, layer)
        load = trace.load(layer, k)  # (E,)
        head = (
            f'<p class="moe-layer-head" data-model="{name}" data-repeat="{share:.4f}" style="font-weight:bold;'
            f'margin:6px 0 0;font-size:12px">{name} · layer {layer} · neighbours sharing their first expert: '
            f"{100 * share:.0f} % · busiest expert's share of the slots: {100 * float(load.max()):.0f} % "
            f"(even: {100 / trace.num_experts:.1f} %)</p>"
        )
        rows.append(f'<div class="moe-compare-row">{head}{layer_text(trace, layer, k, selected, dimmed)}</div>')
    note = (
        f'<p style="{NOTE}">The same text through an untrained model (same config, random initial weights, seed 0) '
        "and the trained one, at the same layer and k. Training turns routing by token identity into routing "
        "by what the token does: compare the runs and the busiest expert's share.</p>"
    )
    root = f"{p}-L{layer}"
    return f'<div id="{root}" class="moe-compare">{style_block(root, first.num_experts)}{note}{"".join(rows)}</div>'


def compare_traces(
    untrained: MixtralForCausalLM, trained: RoutingTrace, model_tokenizer, max_tokens: int | None
) -> dict[str, RoutingTrace]:
    """{"untrained": its trace, "trained": `trained`} for the trained trace's text."""
    return {"untrained": trace_routing(untrained, model_tokenizer, trained.text, max_tokens), "trained": trained}

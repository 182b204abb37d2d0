"""Expert profiles: what one expert receives, in this text and in the presets.

Clicking an expert in the legend dims the others; its profile then answers the next question, "what
does this expert do?": the tokens (as the tokenizer cut them) whose top-k includes it most often at this
layer, in the current text and in the preset texts (the ST-MoE specialisation tables, and the Mixtral
paper's `self` / indentation examples, for our tiny model). Counts are exact; ties keep the order of
first appearance, so the HTML is the same on every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from html import escape

from moe_edu.course.widgets.render import NOTE
from moe_edu.course.widgets.trace import RoutingTrace
from moe_edu.course.widgets.views import token_labels


def top_tokens(traces: Sequence[RoutingTrace], layer: int, expert: int, k: int | None = None, top: int = 8):
    """The `top` token labels most often routed to `expert` (within their top-k) at `layer`, with counts,
    and the share of all routed tokens they stand for: ([(label, count), ...], tokens to the expert, tokens)."""
    counts: Counter[str] = Counter()
    routed = total = 0
    for trace in traces:
        chosen = trace.topk(layer, k)[1].tolist()  # (T, k)
        labels = token_labels(trace)
        for t, row in enumerate(chosen):
            total += 1
            if expert in row:
                routed += 1
                counts[labels[t]] += 1
    return counts.most_common(top), routed, total


def profile_html(
    trace: RoutingTrace, presets: Sequence[RoutingTrace], layer: int, expert: int, k: int | None = None
) -> str:
    """Two lines: the expert's favourite tokens in this text, then in the presets."""
    lines = []
    for what, traces in (("this text", [trace]), ("the presets", list(presets))):
        if not traces:
            continue
        pairs, routed, total = top_tokens(traces, layer, expert, k)
        items = " ".join(
            f'<span class="moe-prof-tok" style="border:1px solid var(--jp-border-color1,#999);border-radius:3px;'
            f'padding:0 3px">{escape(label)}</span>×{n}'
            for label, n in pairs
        )
        lines.append(f"in {what}: {routed} of {total} tokens have it in their top-{trace.check_k(k)}; most: {items}")
    return (
        f'<div class="moe-profile" data-expert="{expert}" style="{NOTE};line-height:1.9">'
        f"<b>expert {expert} at layer {layer}</b> — {'<br>'.join(lines)}</div>"
    )

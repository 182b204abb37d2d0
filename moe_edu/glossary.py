"""The seed article's Traditional Chinese terms, their English names, and where they live in code.

The seed (a zh-TW summary of the Mixtral paper) names every idea of the course in
Chinese; students read it side by side with English papers and with this library.
`GLOSSARY` is the single table that links the three; notebook 00 renders it with
`glossary_table()`, and later notebooks quote single rows with `term(...)`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One glossary row: the seed's wording, the usual English, and the code that implements it."""

    zh: str  # as written in the seed article (Traditional Chinese)
    english: str  # the term used in the Mixtral paper / English literature
    code: str  # the name in moe_edu (or transformers) that implements it
    notebook: str  # where the course teaches it, e.g. "01"
    meaning: str  # one plain-English sentence


GLOSSARY: tuple[Term, ...] = (
    Term("混合專家（MoE）", "mixture of experts", "SparseMoeBlock", "00",
         "A layer made of several sub-networks whose outputs are mixed per input."),
    Term("稀疏混合專家模型（SMoE）", "sparse mixture of experts", "SparseMoeBlock", "00, 05",
         "An MoE where each token runs only k of the E experts."),
    Term("專家", "expert", "Experts / experts.expert(e, x)", "05",
         "One SwiGLU feed-forward network; Mixtral has 8 per layer."),
    Term("每層 8 個專家", "8 experts per layer", "config.num_local_experts", "00",
         "E, the number of experts in every MoE layer."),
    Term("前饋神經網路", "feed-forward network (FFN)", "swiglu(x, w1, w3, w2)", "05",
         "What each expert is: w2(silu(w1 x) * (w3 x))."),
    Term("路由網絡", "router network", "TopKRouter / block.gate", "01",
         "A bias-free linear layer that scores every expert for a token."),
    Term("門控網絡", "gating network", "TopKRouter / block.gate", "01",
         "Another name for the router: it opens the gate to some experts."),
    Term("相關性分數", "router logits (relevance scores)", "router_logits", "01",
         "x W_g^T: one unnormalised score per expert, shape (T, E)."),
    Term("專家權重", "gate weights (routing weights)", "weights", "01, 04",
         "Softmax of the scores: how much each expert's answer counts."),
    Term("前 k 個專家", "top-k experts", "torch.topk / config.num_experts_per_tok", "02",
         "The k highest-scoring experts of a token; Mixtral uses k = 2."),
    Term("稀疏激活", "sparse activation", "DISPATCHES['grouped']", "03",
         "Only the chosen experts run; the others cost no FLOPs for that token."),
    Term("動態路由機制", "dynamic routing", "TopKRouter.forward", "01, 02",
         "The choice of experts depends on the input, token by token."),
    Term("加權輸出", "weighted output", "softmax_topk(logits, k)", "04",
         "Each chosen expert's output is scaled by its renormalised gate weight."),
    Term("加權融合", "weighted combination", "y.index_add_(0, token, w * out)", "04",
         "The sum of the k weighted expert outputs: the layer's answer."),
    Term("總參數量", "total parameters", "count_parameters(c).total", "00",
         "Every weight stored: 46.7B for Mixtral 8x7B."),
    Term("活動參數", "active parameters", "count_parameters(c).active", "00",
         "The weights one token actually multiplies: 12.9B for Mixtral 8x7B."),
    Term("計算成本", "compute cost (FLOPs per token)", "flops_per_token(c)", "00, 03",
         "About 2 FLOPs per active parameter per token in the forward pass."),
    Term("上下文視窗", "context window", "config.max_position_embeddings", "00",
         "How many tokens the model attends over: 32k for Mixtral."),
    Term("集成學習", "ensemble learning", "k = E (dense mixture)", "04",
         "Combining several models' predictions; an MoE is a learned, per-token ensemble."),
)


def term(zh: str) -> Term:
    """Look a row up by its Chinese wording (exact match), e.g. `term("稀疏激活")`."""
    for t in GLOSSARY:
        if t.zh == zh:
            return t
    raise KeyError(f"{zh!r} is not in the glossary; known terms: {[t.zh for t in GLOSSARY]}")


COLUMNS = ("zh-TW (seed)", "English", "code", "notebook", "meaning")


class GlossaryTable:
    """Renders as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, terms: tuple[Term, ...] | list[Term]) -> None:
        self.terms = tuple(terms)
        if not self.terms:
            raise ValueError("glossary_table needs at least one term")

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        return [(t.zh, t.english, t.code, t.notebook, t.meaning) for t in self.terms]

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(
                f"<td style='text-align:left'>{'<code>' + html.escape(v) + '</code>' if i == 2 else html.escape(v)}</td>"
                for i, v in enumerate(row)
            ) + "</tr>"
            for row in self.rows()
        )
        return f"<table class='moe-edu-glossary'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row[:2]) + f" | `{row[2]}` | " + " | ".join(row[3:]) + " |"
                  for row in self.rows()]
        return "\n".join(lines)

    def __repr__(self) -> str:  # plain text: one term per line (CJK widths make columns unreliable)
        return "\n".join(f"{zh} | {en} | {code}" for zh, en, code, _, _ in self.rows())


def glossary_table(terms: list[str] | None = None) -> GlossaryTable:
    """The glossary (or the rows named by their Chinese wording) as a displayable table."""
    return GlossaryTable(GLOSSARY if terms is None else [term(z) for z in terms])

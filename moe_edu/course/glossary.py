"""The course's Traditional Chinese terms, their English names, and where they live in code.

The seed (a zh-TW summary of the Mixtral paper) names the ideas of notebooks 00-05 in
Chinese; students read it side by side with English papers and with this library.
`GLOSSARY` is the single table that links the three; notebook 00 renders it with
`glossary_table()`, and later notebooks quote single rows with `term(...)`. Rows from the
seed keep its wording (with the Taiwan form beside it where the seed uses a Mainland one);
the terms of notebooks 05-12, which the seed does not use, are written in Taiwan usage.
`TAIWAN_USAGE` lists the seed's Mainland forms and the words a Taiwan reader expects.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One glossary row: the seed's wording, the usual English, and the code that implements it."""

    zh: str  # as written in the seed article, or in Taiwan usage for terms the seed does not use
    english: str  # the term used in the Mixtral paper / English literature
    code: str  # the name in moe_edu (or transformers) that implements it
    notebook: str  # where the course teaches it, e.g. "01"
    meaning: str  # one plain-English sentence
    taiwan: str = ""  # the Taiwan form where the seed's wording is a Mainland one ("" when they agree)


@dataclass(frozen=True)
class Usage:
    """A Mainland form found in the seed, and what a Taiwan reader writes instead."""

    seed: str  # the form the seed article uses
    taiwan: str  # the usual Taiwan form
    english: str
    example: str  # where the seed uses it


GLOSSARY: tuple[Term, ...] = (
    Term(
        "混合專家（MoE）",
        "mixture of experts",
        "SparseMoeBlock",
        "00",
        "A layer made of several sub-networks whose outputs are mixed per input.",
    ),
    Term(
        "稀疏混合專家模型（SMoE）",
        "sparse mixture of experts",
        "SparseMoeBlock",
        "00, 05",
        "An MoE where each token runs only k of the E experts.",
    ),
    Term(
        "專家",
        "expert",
        "Experts / experts.expert(e, x)",
        "05",
        "One SwiGLU feed-forward network; Mixtral has 8 per layer.",
    ),
    Term(
        "每層 8 個專家",
        "8 experts per layer",
        "config.num_local_experts",
        "00",
        "E, the number of experts in every MoE layer.",
    ),
    Term(
        "前饋神經網路",
        "feed-forward network (FFN)",
        "swiglu(x, w1, w3, w2)",
        "05",
        "What each expert is: w2(silu(w1 x) * (w3 x)).",
    ),
    Term(
        "路由網絡",
        "router network",
        "TopKRouter / block.gate",
        "01",
        "A bias-free linear layer that scores every expert for a token.",
        taiwan="路由網路",
    ),
    Term(
        "門控網絡",
        "gating network",
        "TopKRouter / block.gate",
        "01",
        "Another name for the router: it opens the gate to some experts.",
        taiwan="門控網路",
    ),
    Term(
        "相關性分數",
        "router logits (relevance scores)",
        "router_logits",
        "01",
        "x W_g^T: one unnormalised score per expert, shape (T, E).",
    ),
    Term(
        "專家權重",
        "gate weights (routing weights)",
        "weights",
        "01, 04",
        "Softmax of the scores: how much each expert's answer counts.",
    ),
    Term(
        "前 k 個專家",
        "top-k experts",
        "torch.topk / config.num_experts_per_tok",
        "02",
        "The k highest-scoring experts of a token; Mixtral uses k = 2.",
    ),
    Term(
        "稀疏激活",
        "sparse activation",
        "DISPATCHES['grouped']",
        "03",
        "Only the chosen experts run; the others cost no FLOPs for that token.",
        taiwan="稀疏啟用",
    ),
    Term(
        "動態路由機制",
        "dynamic routing",
        "TopKRouter.forward",
        "01, 02",
        "The choice of experts depends on the input, token by token.",
    ),
    Term(
        "加權輸出",
        "weighted output",
        "softmax_topk(logits, k)",
        "04",
        "Each chosen expert's output is scaled by its renormalised gate weight.",
    ),
    Term(
        "加權融合",
        "weighted combination",
        "y.index_add_(0, token, w * out)",
        "04",
        "The sum of the k weighted expert outputs: the layer's answer.",
    ),
    Term(
        "總參數量",
        "total parameters",
        "count_parameters(c).total",
        "00",
        "Every weight stored: 46.7B for Mixtral 8x7B.",
    ),
    Term(
        "活動參數",
        "active parameters",
        "count_parameters(c).active",
        "00",
        "The weights one token actually multiplies: 12.9B for Mixtral 8x7B.",
        taiwan="啟用參數",
    ),
    Term(
        "計算成本",
        "compute cost (FLOPs per token)",
        "flops_per_token(c)",
        "00, 03",
        "About 2 FLOPs per active parameter per token in the forward pass.",
    ),
    Term(
        "上下文視窗",
        "context window",
        "config.max_position_embeddings",
        "00, 11",
        "How many tokens the model attends over: 32k for Mixtral, densely (config sliding_window = None).",
    ),
    Term(
        "集成學習",
        "ensemble learning",
        "k = E (dense mixture)",
        "04",
        "Combining several models' predictions; an MoE is a learned, per-token ensemble.",
    ),
    # Notebooks 05-12: terms the seed does not use, in Taiwan usage.
    Term(
        "SwiGLU 專家",
        "SwiGLU expert",
        "moe_edu.experts.Experts",
        "05",
        "w2(silu(w1 x) * (w3 x)): three H x I matrices, 3HI parameters per expert.",
    ),
    Term(
        "路由分析",
        "routing analysis",
        "moe_edu.analysis.repetition_rates",
        "06, 08",
        "The paper's section 5: which experts each domain's tokens use per layer; how often neighbours share them.",
    ),
    Term(
        "負載平衡損失",
        "load-balancing (auxiliary) loss",
        "moe_edu.losses.load_balancing_loss",
        "07",
        "E * sum_e f_e * P_e (Switch style): k when routing is balanced, up to E when it collapses.",
    ),
    Term(
        "路由 z 損失",
        "router z-loss",
        "moe_edu.losses.router_z_loss",
        "07",
        "Mean over tokens of logsumexp(logits)^2 (ST-MoE): pushes the log-sum-exp toward 0, keeping logits small.",
    ),
    Term(
        "專家負載",
        "expert load",
        "moe_edu.analysis.routing_load",
        "06, 07",
        "The share of the T x k routed slots each expert receives; 1/E each when balanced.",
    ),
    Term(
        "位元組層級 BPE",
        "byte-level BPE tokenizer",
        "moe_edu.tokenizer.Tokenizer.piece",
        "06, 08",
        "Tokens merged from UTF-8 bytes: any text round-trips, but a rare character may span several byte tokens.",
    ),
    Term(
        "容量因子",
        "capacity factor",
        "moe_edu.capacity.capacity_dispatch",
        "03, 09",
        "Each expert takes at most C = ceil(factor * T * k / E) assignments; the overflow is dropped.",
    ),
    Term(
        "丟棄 / 無丟棄",
        "token dropping / dropless",
        "moe_edu.capacity.keep_within_capacity",
        "03, 09",
        "Dropped assignments add nothing (the token keeps its residual); dropless layers run every assignment.",
    ),
    Term(
        "雜訊前 k 名閘控",
        "noisy top-k gating",
        "moe_edu.variants.noisy_topk.NoisyTopKRouter",
        "09",
        "Shazeer et al. 2017: trainable Gaussian noise on the logits in training, importance and load losses.",
    ),
    Term(
        "專家選擇路由",
        "expert choice routing",
        "moe_edu.variants.expert_choice.ExpertChoiceRouter",
        "09",
        "Each expert picks its top-C tokens (Zhou et al. 2022): perfect balance, but some tokens get no expert.",
    ),
    Term(
        "共享專家",
        "shared experts",
        "moe_edu.variants.shared_experts.build_shared_experts",
        "09",
        "Experts every token runs, beside the routed ones (DeepSeekMoE).",
    ),
    Term(
        "細粒度專家",
        "fine-grained experts",
        "moe_edu.variants.shared_experts.FineGrainedRouter",
        "09",
        "Many narrower experts with more chosen per token: more combinations for the same cost (DeepSeekMoE).",
    ),
    Term(
        "無輔助損失負載平衡",
        "auxiliary-loss-free load balancing",
        "moe_edu.variants.aux_free.AuxFreeRouter",
        "09",
        "DeepSeek-V3: a per-expert bias used only to select experts, nudged towards even load.",
    ),
    Term(
        "分組矩陣乘法",
        "grouped GEMM",
        "moe_edu.grouped_mm.grouped_matmul",
        "03, 10",
        "One call that multiplies each contiguous block of rows by its own expert's matrix.",
    ),
    Term(
        "專家平行",
        "expert parallelism",
        "moe_edu.parallel.ExpertParallelMoeBlock",
        "10",
        "Experts split across devices; tokens travel to their experts' devices and back.",
    ),
    Term(
        "全對全通訊",
        "all-to-all communication",
        "moe_edu.parallel.all_to_all",
        "10",
        "Every rank sends a block of rows to every other rank: twice per MoE layer under expert parallelism.",
    ),
    Term(
        "鍵值快取",
        "KV cache",
        "moe_edu.serving.memory.kv_cache_bytes",
        "11",
        "The stored keys and values of past tokens: 128 KiB per token for Mixtral in bf16, 4 GiB at 32k.",
    ),
    Term(
        "滑動視窗注意力",
        "sliding-window attention",
        "config.sliding_window",
        "11",
        "Attention over the last W tokens only (Mistral 7B: 4096); Mixtral attends densely over 32k.",
    ),
    Term(
        "Passkey 檢索",
        "passkey retrieval",
        "moe_edu.serving.passkey.passkey_grid",
        "11",
        "Find a number hidden in long filler text; Mixtral scores 100 % at every length and position (paper Fig. 4).",
    ),
    Term(
        "量化",
        "quantisation",
        "moe_edu.serving.quantize.quantize_model_experts",
        "11",
        "Store weights in fewer bits (int8, int4) with a scale; less memory, a small error.",
    ),
    Term(
        "卸載",
        "offloading",
        "moe_edu.serving.offload.OffloadedMoeBlock",
        "11",
        "Keep expert weights in slower memory (CPU RAM, disk) and load the ones a token needs.",
    ),
    Term(
        "專家快取",
        "expert cache",
        "moe_edu.serving.expert_cache.LRUCache",
        "11",
        "Keep recently used experts in fast memory; routing locality makes hits likely.",
    ),
    Term(
        "稀疏升級",
        "sparse upcycling",
        "moe_edu.adapting.upcycling.upcycle_model",
        "12",
        "Turn a dense model into an MoE by copying its FFN into every expert, then training on.",
    ),
    Term(
        "微調",
        "fine-tuning",
        "moe_edu.adapting.finetune.finetune",
        "12",
        "Further training on new data; for an MoE: which parts (router, experts) to train or freeze.",
    ),
    Term(
        "剪枝",
        "expert pruning",
        "moe_edu.adapting.pruning.prune_experts",
        "12",
        "Remove experts (e.g. the least used); tokens re-route among the rest.",
    ),
    Term(
        "合併",
        "expert merging",
        "moe_edu.adapting.pruning.merge_experts",
        "12",
        "Replace two similar experts by one (a usage-weighted average of their weights).",
    ),
)

TAIWAN_USAGE: tuple[Usage, ...] = (
    Usage("網絡", "網路", "network", "路由網絡、門控網絡 → 路由網路、門控網路"),
    Usage("數據", "資料", "data", "輸入數據、處理數據 → 輸入資料、處理資料"),
    Usage("活動參數", "啟用參數", "active parameters", "130 億活動參數 → 130 億啟用參數"),
    Usage("激活", "啟用", "activate / activation", "稀疏激活、被激活 → 稀疏啟用、被啟用"),
    Usage("推理", "推論", "inference", "LLM 訓練與推理 → LLM 訓練與推論（種子的 §1 已用「推論」）"),
    Usage("優化", "最佳化", "optimise / optimised", "經過優化的 SMoE → 經過最佳化的 SMoE"),
    Usage("性能", "效能", "performance", "性能表現 → 效能表現"),
    Usage("許可", "授權", "licence", "Apache 2.0 許可 → Apache 2.0 授權"),
)


def term(zh: str) -> Term:
    """Look a row up by its Chinese wording or its Taiwan form (exact match), e.g. `term("稀疏激活")`."""
    for t in GLOSSARY:
        if zh in (t.zh, t.taiwan):
            return t
    raise KeyError(f"{zh!r} is not in the glossary; known terms: {[t.zh for t in GLOSSARY]}")


COLUMNS = ("zh-TW", "English", "code", "notebook", "meaning", "Taiwan usage (where the seed differs)")


class GlossaryTable:
    """Renders as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, terms: tuple[Term, ...] | list[Term]) -> None:
        self.terms = tuple(terms)
        if not self.terms:
            raise ValueError("glossary_table needs at least one term")

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        return [(t.zh, t.english, t.code, t.notebook, t.meaning, t.taiwan) for t in self.terms]

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='text-align:left'>{f'<code>{html.escape(v)}</code>' if i == 2 else html.escape(v)}</td>"
                for i, v in enumerate(row)
            )
            + "</tr>"
            for row in self.rows()
        )
        return f"<table class='moe-edu-glossary'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row[:2]) + f" | `{row[2]}` | " + " | ".join(row[3:]) + " |" for row in self.rows()]
        return "\n".join(lines)

    def __repr__(self) -> str:  # plain text: one term per line (CJK widths make columns unreliable)
        return "\n".join(f"{zh} | {en} | {code}" for zh, en, code, *_ in self.rows())


def glossary_table(terms: list[str] | None = None) -> GlossaryTable:
    """The glossary (or the rows named by their Chinese wording) as a displayable table."""
    return GlossaryTable(GLOSSARY if terms is None else [term(z) for z in terms])

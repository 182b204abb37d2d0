"""The course's Traditional Chinese terms, their English names, and where they live in code.

The seed (a zh-TW summary of the Mixtral paper) names the ideas of notebooks 00-05 in
Chinese; students read it side by side with English papers and with this library.
`GLOSSARY` is the single table that links the three; notebook 00 renders it with
`glossary_table()`, and later notebooks quote single rows with `term(...)`. Rows from the
seed keep its wording (with the Taiwan form beside it where the seed uses a Mainland one);
the terms of notebooks 05-12, which the seed does not use, are written in Taiwan usage.
`TAIWAN_USAGE` lists the seed's Mainland forms and the words a Taiwan reader expects;
`SYSTEMS_USAGE` does the same for the systems words of other Chinese MoE material.

One concept, one Chinese name: a row's preferred form is `taiwan` (or `zh` when the seed's
wording is already Taiwan usage); `aliases` are the other names a reader will meet, which the
course writes only in parentheses right after the preferred form (`tests/test_glossary.py`).
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
    aliases: tuple[str, ...] = ()  # other Chinese names of the same concept, found by term() but not preferred

    @property
    def preferred(self) -> str:
        """The form the course writes: the Taiwan form, or the seed's wording when that is already Taiwan usage."""
        return self.taiwan or self.zh

    @property
    def names(self) -> tuple[str, ...]:
        """Every Chinese name of the concept: the seed's wording, the Taiwan form and the aliases."""
        return tuple(dict.fromkeys(n for n in (self.zh, self.taiwan, *self.aliases) if n))


@dataclass(frozen=True)
class Usage:
    """A Mainland form (in the seed or in other Chinese MoE material), and what a Taiwan reader writes instead."""

    mainland: str  # the Mainland form
    taiwan: str  # the usual Taiwan form
    english: str
    example: str  # where the seed uses it, or a phrase that shows it


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
        "router network (router, gating network)",
        "TopKRouter / block.gate",
        "01",
        "A bias-free linear layer that scores every expert for a token; the seed's 路由網絡 glosses both"
        " 'Router Network' and 'Gating Network'.",
        taiwan="路由網路",
        aliases=("門控網路", "路由器"),
    ),
    Term(
        "相關性分數",
        "router logits (logits, relevance scores)",
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
        "config.sliding_window (None) + max_position_embeddings",
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
    # Terms the seed does not use (notebooks 01-12), in Taiwan usage.
    Term(
        "溫度",
        "temperature",
        "torch.softmax(logits / tau, dim=-1)",
        "01",
        "Dividing the logits by tau sharpens (tau < 1) or flattens (tau > 1) the routing; W_g's scale acts as one.",
    ),
    Term(
        "熵",
        "entropy",
        "-(p * p.log()).sum(-1)",
        "01",
        "How spread a token's routing is: log E = 2.0794 when uniform over 8 experts, 0 when one expert takes all.",
    ),
    Term(
        "重新正規化",
        "renormalise (top-k renormalisation)",
        "moe_edu.routing.softmax_topk",
        "02, 04",
        "Divide the k kept probabilities by their sum, so the weights of the chosen experts add up to 1.",
    ),
    Term(
        "分派",
        "dispatch",
        "moe_edu.dispatch.grouped_dispatch",
        "03",
        "Send each token's k assignments to their experts, run them, and add the weighted results back.",
    ),
    Term(
        "殘差連接",
        "residual connection",
        "moe_edu.model.DecoderLayer",
        "00, 03",
        "h <- h + MoE(h): the layer adds to the hidden state, so a token whose assignments are all dropped passes on.",
    ),
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
        "load-balancing loss (auxiliary loss)",
        "moe_edu.losses.load_balancing_loss",
        "07",
        "E * sum_e f_e * P_e (Switch style): k when routing is balanced, up to E when it collapses.",
        aliases=("輔助損失",),
    ),
    Term(
        "路由 z 損失",
        "router z-loss",
        "moe_edu.losses.router_z_loss",
        "07",
        "Mean over tokens of logsumexp(logits)^2 (ST-MoE): pushes each token's log-sum-exp toward 0 (not the"
        " logits); large logits cost most. transformers' Mixtral has no z-loss.",
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
        "The course model's tokenizer: tokens merged from UTF-8 bytes, so any text round-trips, but a rare"
        " character may span several tokens. (Mixtral's own is SentencePiece BPE with byte fallback.)",
    ),
    Term(
        "容量因子",
        "capacity factor",
        "moe_edu.capacity.capacity_dispatch",
        "03, 09",
        "Each expert takes at most C = ceil(factor * T * k / E) assignments; the overflow is dropped.",
    ),
    Term(
        "丟棄",
        "token dropping",
        "moe_edu.capacity.keep_within_capacity",
        "03, 09",
        "An assignment beyond the capacity is not computed; a token keeps only its residual if all k are dropped.",
    ),
    Term(
        "無丟棄",
        "dropless",
        "DISPATCHES['grouped']",
        "03, 09",
        "Every assignment runs, however uneven the load (Mixtral's inference code, transformers, MegaBlocks).",
    ),
    Term(
        "雜訊前 k 個門控",
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
        "軟性混合專家",
        "soft MoE",
        "moe_edu.variants.soft_moe.SoftMoE",
        "09",
        "Puigcerver et al. 2023: each expert slot takes a softmax mix of all tokens; no drops, no discrete choice.",
        aliases=("Soft MoE",),
    ),
    Term(
        "無輔助損失負載平衡",
        "auxiliary-loss-free load balancing",
        "moe_edu.variants.aux_free.AuxFreeRouter",
        "09",
        "Wang et al. 2024 (arXiv 2408.15664), used by DeepSeek-V3: a per-expert bias used only to select experts,"
        " nudged towards even load.",
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
        aliases=("KV 快取",),
    ),
    Term(
        "分組查詢注意力",
        "grouped-query attention (GQA)",
        "config.num_key_value_heads",
        "11",
        "Several query heads share one K/V head: Mixtral's 32 query heads read 8 K/V heads, a 4x smaller KV cache.",
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
        "預取",
        "prefetch",
        "moe_edu.serving.expert_cache.prefetch_accuracy",
        "11",
        "Load the experts a token will probably need before it asks; it overlaps loading with compute but adds"
        " bus traffic when the guess is wrong.",
    ),
    Term(
        "局部性",
        "locality (routing locality)",
        "moe_edu.analysis.repetition_rates",
        "08, 11",
        "Consecutive tokens often choose the same experts (paper Table 5); an expert cache lives on it.",
    ),
    Term(
        "稀疏升級再造",
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
        "遺忘",
        "forgetting (catastrophic forgetting)",
        "moe_edu.experiments.adapting.Data.domain_losses",
        "12",
        "After fine-tuning on one domain, the loss on the others rises; notebook 12 reports the mean rise.",
        aliases=("災難性遺忘",),
    ),
    Term(
        "監督式微調",
        "supervised fine-tuning (SFT)",
        "- (cited: paper section 4; not run in the course)",
        "12",
        "Training on instruction-answer pairs; the first step from Mixtral to Mixtral - Instruct.",
    ),
    Term(
        "直接偏好最佳化",
        "direct preference optimisation (DPO)",
        "- (cited: paper section 4; not run in the course)",
        "12",
        "Training on pairs of preferred and rejected answers, without a reward model; Mixtral - Instruct's second step.",
    ),
    Term(
        "專家剪枝",
        "expert pruning",
        "moe_edu.adapting.pruning.prune_experts",
        "12",
        "Remove experts (e.g. the least used); tokens re-route among the rest.",
    ),
    Term(
        "專家合併",
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

# Systems words a student meets in Mainland-written MoE material (not in the seed), and the Taiwan forms
# the course uses.
SYSTEMS_USAGE: tuple[Usage, ...] = (
    Usage("內存", "記憶體", "memory (RAM)", "專家權重放在內存 → 專家權重放在記憶體"),
    Usage("顯存", "顯示卡記憶體（GPU 記憶體）", "GPU memory", "顯存不夠 → GPU 記憶體不夠"),
    Usage("緩存", "快取", "cache", "KV 緩存、專家緩存 → KV 快取、專家快取"),
    Usage("並行", "平行", "parallel", "專家並行 → 專家平行"),
    Usage("進程", "行程", "process", "每個進程放兩個專家 → 每個行程放兩個專家"),
    Usage("帶寬", "頻寬", "bandwidth", "內存帶寬 → 記憶體頻寬"),
    Usage("默認", "預設", "default", "默認值 → 預設值"),
    Usage("代碼", "程式碼", "code", "推理代碼 → 推論程式碼"),
    Usage("信息", "資訊", "information", "位置信息 → 位置資訊"),
    Usage("模塊", "模組", "module", "MoE 模塊 → MoE 模組"),
    Usage("歸一化", "正規化", "normalise", "重新歸一化 → 重新正規化"),
    Usage("通信", "通訊", "communication", "全對全通信 → 全對全通訊"),
    Usage("內核", "核心", "kernel", "融合內核 → 融合核心"),
    Usage("批量", "批次", "batch", "批量大小 → 批次大小"),
)


def term(zh: str) -> Term:
    """Look a row up by any of its Chinese names (exact match), e.g. `term("稀疏激活")` or `term("門控網路")`."""
    for t in GLOSSARY:
        if zh in t.names:
            return t
    raise KeyError(f"{zh!r} is not in the glossary; known terms: {[t.zh for t in GLOSSARY]}")


COLUMNS = ("zh-TW", "English", "code", "notebook", "meaning", "Taiwan usage (where the seed differs)", "also called")


class GlossaryTable:
    """Renders as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, terms: tuple[Term, ...] | list[Term]) -> None:
        self.terms = tuple(terms)
        if not self.terms:
            raise ValueError("glossary_table needs at least one term")

    def rows(self) -> list[tuple[str, str, str, str, str, str, str]]:
        return [(t.zh, t.english, t.code, t.notebook, t.meaning, t.taiwan, "、".join(t.aliases)) for t in self.terms]

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

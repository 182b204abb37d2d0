"""Precompute notebook 11's slow parts on the shipped model, into `moe_edu/results/serving/`.

    python -m moe_edu.experiments.serving --overwrite   # or: make serving-results

Writes `routing_trace.safetensors` (experts chosen and guessed per held-out token, layer and
slot), `cache.json` (token-aware LRU hit rates per cache size: real token order, shuffled, with
prefetch, and uniform random routing of the same size — the no-locality baseline)
and `quantization.json` (memory, routing changes and
held-out loss of the shipped model with int8 / int4 experts, router quantised or not).
Deterministic: the shipped checkpoint, the frozen corpus, one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..data.corpus import build_corpus, by_domain, split_corpus
from ..io.atomic import atomic_directory
from ..io.lock import LockedError, out_lock
from ..io.results import check_out_files
from ..io.shipped import load_pretrained
from ..serving.expert_cache import RoutingTrace, prefetch_accuracy, random_trace, routing_trace, simulate_cache
from ..serving.quantize import quantize_model_experts

RESULTS = Path(__file__).resolve().parents[1] / "results" / "serving"
MAX_TOKENS = 192  # per document: the shipped model's context is 256


def held_out_ids(tokenizer, docs_per_domain: int = 30) -> list[list[int]]:
    """Token ids of the first `docs_per_domain` held-out documents of each domain (>= 16 tokens each)."""

    _, held = split_corpus(build_corpus())
    ids = []
    for docs in by_domain(held).values():
        chosen = [tokenizer.encode(d.text)[:MAX_TOKENS] for d in docs]
        ids += [x for x in chosen if len(x) >= 16][:docs_per_domain]
    return ids


def save_trace(trace: RoutingTrace, path: Path) -> None:
    save_file(
        {
            "chosen": trace.chosen.to(torch.int8).contiguous(),
            "guess": trace.guess.to(torch.int8).contiguous(),
            "doc_starts": torch.tensor(trace.doc_starts),
        },
        str(path),
    )


def load_trace(path: Path = RESULTS / "routing_trace.safetensors") -> RoutingTrace:
    """The shipped model's routing trace on held-out text (see this module's docstring)."""
    t = load_file(str(path))
    return RoutingTrace(t["chosen"].long(), t["guess"].long(), t["doc_starts"].tolist())


@torch.no_grad()
def evaluate(model, docs: list[list[int]], reference: list[torch.Tensor] | None = None):
    """(held-out cross-entropy, per-layer share of tokens whose top-k set differs from `reference`, routing)."""
    k = model.config.num_experts_per_tok
    loss_sum, count, routes = 0.0, 0, []
    changed = torch.zeros(model.config.num_hidden_layers, dtype=torch.float64)
    for i, ids in enumerate(docs):
        x = torch.tensor(ids)[None]  # (1, T)
        out = model(x, output_router_logits=True)
        loss_sum += F.cross_entropy(out.logits[0, :-1].float(), x[0, 1:], reduction="sum").item()
        count += x.shape[1] - 1
        top = torch.stack(
            [torch.topk(lg.float(), k, -1).indices.sort(-1).values for lg in out.router_logits]
        )  # (L, T, k)
        routes.append(top)
        if reference is not None:
            changed += (top != reference[i]).any(-1).double().sum(-1)  # (L,)
    tokens = sum(len(d) for d in docs)
    return loss_sum / count, (changed / tokens).tolist(), routes


def cache_table(trace: RoutingTrace) -> dict:
    """Hit rates (overall and per layer) and loads per token for every cache size, four ways."""
    E = int(trace.chosen.max()) + 1
    T, L, k = trace.chosen.shape
    uniform = random_trace(T, L, E, k, seed=0)
    rows = []
    for capacity in range(E + 1):
        for mode, t, pre in (
            ("ordered", trace, False),
            ("shuffled", trace.shuffled(0), False),
            ("prefetch", trace, True),
            ("random", uniform, False),
        ):
            s = simulate_cache(t, capacity, prefetch=pre)
            rows.append(
                {
                    "capacity": capacity,
                    "mode": mode,
                    "hit_rate": s.hit_rate,
                    "per_layer": s.hit_rate_per_layer.tolist(),
                    "loads_per_token": s.loads_per_token,
                }
            )
    acc = prefetch_accuracy(trace)
    return {"tokens": trace.chosen.shape[0], "prefetch_accuracy": [None, *acc[1:].tolist()], "rows": rows}


def quantization_table(model, docs: list[list[int]]) -> list[dict]:
    base_loss, _, base_routes = evaluate(model, docs)
    experts_fp32 = (
        sum(
            layer.mlp.experts.gate_up_proj.numel() + layer.mlp.experts.down_proj.numel() for layer in model.model.layers
        )
        * 4
    )
    rows = [
        {
            "experts": "fp32",
            "router": "fp32",
            "expert_bytes": experts_fp32,
            "loss": base_loss,
            "loss_change": 0.0,
            "topk_changed": [0.0] * model.config.num_hidden_layers,
        }
    ]
    for scheme, group in (("int8", None), ("int4", 16), ("int4", 32)):
        for router in (None, scheme):
            q, stored = quantize_model_experts(model, scheme, group_size=group or 32, router=router)
            loss, changed, _ = evaluate(q, docs, base_routes)
            rows.append(
                {
                    "experts": scheme if group is None else f"{scheme} g{group}",
                    "router": router or "fp32",
                    "expert_bytes": stored,
                    "loss": loss,
                    "loss_change": loss - base_loss,
                    "topk_changed": changed,
                }
            )
    return rows


OUTPUTS = ("routing_trace.safetensors", "cache.json", "quantization.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moe_edu.experiments.serving", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--cache-only",
        action="store_true",
        help="recompute cache.json from the stored trace (the trace is deterministic)",
    )
    ap.add_argument("--overwrite", action="store_true", help="replace the three result files in --out (at the end)")
    a = ap.parse_args(argv)
    if a.cache_only:  # the trace is deterministic: only the cache table is recomputed from it
        cache = cache_table(load_trace(a.out / "routing_trace.safetensors"))
        with out_lock(a.out), atomic_directory(a.out, owned={"cache.json"}.__contains__) as tmp:
            (tmp / "cache.json").write_text(json.dumps(cache, indent=1) + "\n")
        print(f"wrote {a.out / 'cache.json'}")
        return 0
    try:  # before the work: a folder the final swap can take, not already holding results unasked
        check_out_files(a.out, OUTPUTS, overwrite=a.overwrite)
    except ValueError as err:
        ap.error(str(err))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.time()
    try:
        with out_lock(a.out), atomic_directory(a.out, owned=set(OUTPUTS).__contains__) as tmp:
            meta = write_results(tmp)  # the three files are swapped in together, or not at all
    except LockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for r in meta["rows"]:
        print(
            f"{r['experts']:8s} router {r['router']:5s} {r['expert_bytes'] / 2**20:6.2f} MiB  loss {r['loss']:.4f} "
            f"({r['loss_change']:+.4f})  top-k changed " + " ".join(f"{c:.3f}" for c in r["topk_changed"])
        )
    print(f"wrote {a.out} in {time.time() - start:.0f} s ({meta['tokens']} tokens, {meta['documents']} documents)")
    return 0


def write_results(out: Path) -> dict:
    """Compute the trace, the cache table and the quantisation table into `out`; returns the latter's JSON."""
    model, tokenizer = load_pretrained()
    docs = held_out_ids(tokenizer)
    save_trace(routing_trace(model, docs), out / "routing_trace.safetensors")
    cache = cache_table(load_trace(out / "routing_trace.safetensors"))
    (out / "cache.json").write_text(json.dumps(cache, indent=1) + "\n")
    rows = quantization_table(model, docs)
    if not all(math.isfinite(r["loss"]) for r in rows):
        raise ValueError("a quantised model gave a non-finite loss: nothing was written")
    meta = {
        "command": "python -m moe_edu.experiments.serving",
        "documents": len(docs),
        "tokens": sum(len(d) for d in docs),
        "torch": torch.__version__,
        "rows": rows,
    }
    (out / "quantization.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


if __name__ == "__main__":
    sys.exit(main())

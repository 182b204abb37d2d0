"""Notebook 12's precomputed experiments: upcycling, fine-tuning regimes (ESFT included), pruning and merging.

    python -m moe_edu.experiments.adapting --out moe_edu/results/adapting.json --overwrite   (2-3 min, 1 thread)

All runs use the shipped tokenizer and corpus split, batches of 8 x 64 tokens, one CPU thread,
fixed seeds. The notebook reads the JSON (`load_results`); its live cells redo small pieces.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ..accounting import count_parameters
from ..adapting.finetune import REGIMES, esft_experts, expert_scores, finetune
from ..adapting.pruning import (
    expert_similarity,
    expert_usage,
    layer_inputs,
    least_used,
    merge_experts,
    most_similar_pair,
    prune_experts,
    random_experts,
    reconstruction_errors,
)
from ..adapting.upcycling import dense_config, expert_spread, upcycle_model
from ..data.corpus import DOMAINS, build_corpus, split_corpus
from ..io.lock import LockedError, out_lock
from ..io.results import check_out_file, write_text
from ..io.shipped import load_pretrained
from ..model import MixtralForCausalLM
from ..training.config import DEFAULT_WEIGHTS
from ..training.data import TokenStreams
from ..training.loop import NonFiniteError, eval_loss, train_steps
from ..validation import positive_int
from .args import arg_type

RESULTS = Path(__file__).resolve().parents[1] / "results" / "adapting.json"
BATCH, SEQ = 8, 64


def load_results(path: str | Path = RESULTS) -> dict:
    """The shipped results of `python -m moe_edu.experiments.adapting`."""
    return json.loads(Path(path).read_text())


class Data:
    """Training streams (mixed and per domain) and fixed held-out batches (mixed and per domain)."""

    def __init__(self, tokenizer, seed: int = 0, eval_batches: int = 2) -> None:
        train_docs, held_docs = split_corpus(build_corpus())
        self.train = TokenStreams(train_docs, tokenizer, DEFAULT_WEIGHTS)
        self.domain_train = {d: TokenStreams(train_docs, tokenizer, {d: 1.0}) for d in DOMAINS}
        held = TokenStreams(held_docs, tokenizer, DEFAULT_WEIGHTS)
        g = torch.Generator().manual_seed(seed + 1)
        self.held_mixed = [held.sample(BATCH, SEQ, g) for _ in range(4)]
        self.held = {}
        for d in DOMAINS:
            stream = TokenStreams(held_docs, tokenizer, {d: 1.0})
            self.held[d] = [stream.sample(BATCH, SEQ, g) for _ in range(eval_batches)]

    def sampler(self, streams: TokenStreams, seed: int):
        g = torch.Generator().manual_seed(seed)
        return lambda step: streams.sample(BATCH, SEQ, g)

    def domain_losses(self, model) -> dict[str, float]:
        return {d: round(eval_loss(model, b), 4) for d, b in self.held.items()}

    def domain_loads(self, model) -> dict[str, list[list[float]]]:
        return {d: rounded(expert_usage(model, b)) for d, b in self.held.items()}


def rounded(t: torch.Tensor, digits: int = 4) -> list:
    return [[round(float(v), digits) for v in row] for row in t]


def _curve(log: list[dict], offset: int = 0) -> list[dict]:
    return [
        {
            "step": e["step"] + offset,
            "train_ce": round(e["ce"], 4),
            "eval_ce": round(e["eval_ce"], 4),
            "imbalance": round(e["imbalance"], 3),
        }
        for e in log
        if "eval_ce" in e
    ]


def upcycling(data: Data, vocab_size: int, dense_steps: int, more_steps: int, every: int, seed: int = 0) -> dict:
    """Dense pretrain -> (dense continued | upcycled MoE) vs an MoE from scratch for dense_steps + more_steps."""
    moe_cfg = load_pretrained()[0].config.replace(vocab_size=vocab_size, router_aux_loss_coef=0.1)
    opts = {"eval_every": every, "log_every": every, "progress": False}
    ev = lambda m: lambda: eval_loss(m, data.held_mixed)
    torch.manual_seed(seed)
    dense = MixtralForCausalLM(dense_config(moe_cfg))
    dense_log = train_steps(
        dense, data.sampler(data.train, seed), dense_steps, lr=5e-3, warmup=10, evaluate=ev(dense), **opts
    )
    upcycled = upcycle_model(
        dense,
        moe_cfg.num_local_experts,
        moe_cfg.num_experts_per_tok,
        seed=seed,
        aux_loss_coef=moe_cfg.router_aux_loss_coef,
    )
    ids = data.held_mixed[0]
    with torch.no_grad():
        step0 = float((upcycled.eval()(ids).logits - dense.eval()(ids).logits).abs().max())
    spread = []
    more = dict(lr=2e-3, warmup=5, **opts)

    def spread_sampler(model, sample):
        def next_batch(step):
            if step % every == 0:
                layers = model.model.layers
                mean = sum(expert_spread(layer.mlp) for layer in layers) / len(layers)
                spread.append({"step": dense_steps + step, "spread": round(mean, 5)})
            return sample(step)

        return next_batch

    up_log = train_steps(
        upcycled,
        spread_sampler(upcycled, data.sampler(data.train, seed + 1)),
        more_steps,
        evaluate=ev(upcycled),
        **more,
    )
    cont = MixtralForCausalLM(dense.config)
    cont.load_state_dict(dense.state_dict())
    cont_log = train_steps(cont, data.sampler(data.train, seed + 1), more_steps, evaluate=ev(cont), **more)
    torch.manual_seed(seed)
    scratch = MixtralForCausalLM(moe_cfg)
    scratch_log = train_steps(
        scratch,
        data.sampler(data.train, seed),
        dense_steps + more_steps,
        lr=5e-3,
        warmup=10,
        evaluate=ev(scratch),
        **opts,
    )
    # Equal-learning-rate controls. (1) An MoE from scratch on the upcycled run's exact schedule: the
    # dense recipe (5e-3) for dense_steps, then a fresh optimizer and the continuation recipe (2e-3):
    # only the first phase's architecture differs from dense -> upcycled.
    torch.manual_seed(seed)
    matched = MixtralForCausalLM(moe_cfg)
    matched_log = train_steps(
        matched, data.sampler(data.train, seed), dense_steps, lr=5e-3, warmup=10, evaluate=ev(matched), **opts
    )
    matched_log += [
        {**e, "step": e["step"] + dense_steps}
        for e in train_steps(matched, data.sampler(data.train, seed + 1), more_steps, evaluate=ev(matched), **more)
    ]
    # (2) Both continuations at the from-scratch run's peak rate (5e-3, warm-up 10).
    high = dict(lr=5e-3, warmup=10, **opts)
    up_hi = upcycle_model(
        dense,
        moe_cfg.num_local_experts,
        moe_cfg.num_experts_per_tok,
        seed=seed,
        aux_loss_coef=moe_cfg.router_aux_loss_coef,
    )
    up_hi_log = train_steps(up_hi, data.sampler(data.train, seed + 1), more_steps, evaluate=ev(up_hi), **high)
    cont_hi = MixtralForCausalLM(dense.config)
    cont_hi.load_state_dict(dense.state_dict())
    cont_hi_log = train_steps(cont_hi, data.sampler(data.train, seed + 1), more_steps, evaluate=ev(cont_hi), **high)
    return {
        "settings": {
            "dense_steps": dense_steps,
            "more_steps": more_steps,
            "batch": [BATCH, SEQ],
            "aux_loss_coef": moe_cfg.router_aux_loss_coef,
            "lr_pretrain": 5e-3,
            "lr_continue": 2e-3,
            "lr_scratch": 5e-3,
            "lr_continue_high": 5e-3,
        },
        "active_params": {"dense": count_parameters(dense.config).active, "moe": count_parameters(moe_cfg).active},
        "total_params": {"dense": count_parameters(dense.config).total, "moe": count_parameters(moe_cfg).total},
        "step0_max_abs_logit_diff": step0,
        "curves": {
            "dense_pretrain": _curve(dense_log),
            "dense_continued": _curve(cont_log, dense_steps),
            "upcycled": _curve(up_log, dense_steps),
            "moe_scratch": _curve(scratch_log),
            "moe_scratch_matched_lr": _curve(matched_log),
            "dense_continued_lr5e-3": _curve(cont_hi_log, dense_steps),
            "upcycled_lr5e-3": _curve(up_hi_log, dense_steps),
        },
        "expert_spread": spread,
        "final_domain_ce": {
            "dense_continued": data.domain_losses(cont),
            "upcycled": data.domain_losses(upcycled),
            "moe_scratch": data.domain_losses(scratch),
            "moe_scratch_matched_lr": data.domain_losses(matched),
            "dense_continued_lr5e-3": data.domain_losses(cont_hi),
            "upcycled_lr5e-3": data.domain_losses(up_hi),
        },
    }


def esft_selection(model, data: Data, target: str, p: float, seed: int = 0, batches: int = 4) -> dict:
    """ESFT's expert choice for `target`: both scores on its training text, the experts covering >= p."""
    sample = data.sampler(data.domain_train[target], seed + 100)
    ids = [sample(i) for i in range(batches)]
    scores = {kind: expert_scores(model, ids, kind) for kind in ("token", "gate")}  # kind -> (L, E)
    chosen = {kind: esft_experts(s, p) for kind, s in scores.items()}
    E = model.config.num_local_experts
    least = [  # the control: as many experts per layer, the ones the domain uses least
        sorted(sorted(range(E), key=lambda e, row=row: (float(row[e]), e))[: len(picked)])
        for row, picked in zip(scores["token"], chosen["token"], strict=True)
    ]
    return {
        "p": p,
        "sample": [batches, BATCH, SEQ],
        "scores": {kind: rounded(s) for kind, s in scores.items()},
        "experts": chosen["token"],
        "experts_gate": chosen["gate"],
        "least_used": least,
        "trainable_share": round(sum(len(r) for r in chosen["token"]) / (E * model.config.num_hidden_layers), 4),
    }


def finetuning(data: Data, target: str, steps: int, lr: float, seed: int = 0, esft_p: float = 0.5) -> dict:
    """The shipped model fine-tuned on one domain: 4 regimes x aux loss on/off, + an ESFT control."""
    model, _ = load_pretrained()
    before = {"ce": data.domain_losses(model), "load": data.domain_loads(model)}
    esft = esft_selection(model, data, target, esft_p, seed)
    plan = [(regime, aux, None) for regime in REGIMES for aux in (model.config.router_aux_loss_coef, 0.0)]
    plan.append(("esft", model.config.router_aux_loss_coef, "least_used"))
    runs = {}
    for regime, aux, variant in plan:
        experts = esft["least_used" if variant else "experts"] if regime == "esft" else None
        torch.manual_seed(seed)
        tuned, log = finetune(
            model,
            data.sampler(data.domain_train[target], seed),
            steps,
            regime=regime,
            experts=experts,
            aux_loss_coef=aux,
            lr=lr,
            warmup=3,
        )
        name = f"{regime} ({variant.replace('_', '-')} experts), aux {aux:g}" if variant else f"{regime}, aux {aux:g}"
        runs[name] = {
            "regime": regime,
            "aux_loss_coef": aux,
            "experts": experts,
            "ce": data.domain_losses(tuned),
            "load": data.domain_loads(tuned),
            "train_ce": [round(e["ce"], 4) for e in log],
        }
    return {
        "target": target,
        "steps": steps,
        "lr": lr,
        "batch": [BATCH, SEQ],
        "before": before,
        "esft": esft,
        "runs": runs,
    }


def pruning(data: Data, random_seeds: int = 3) -> dict:
    """Drop the least-used expert per layer / merge the two most similar / drop a random one."""
    model, _ = load_pretrained()
    mixed = data.held_mixed
    usage = expert_usage(model, mixed)  # (L, E) on held-out mixed text
    domain_usage = {d: expert_usage(model, b) for d, b in data.held.items()}  # domain -> (L, E)
    xs = [torch.cat(t) for t in zip(*(layer_inputs(model, ids) for ids in mixed), strict=True)]  # L x (N, H)
    sims = [expert_similarity(layer.mlp.experts, x) for layer, x in zip(model.model.layers, xs, strict=True)]
    pairs = [most_similar_pair(s) for s in sims]

    def rerouted(removed: list[int]) -> dict[str, float]:
        """Share of each domain's assignments that went to a removed expert (mean over layers)."""
        return {
            d: round(float(sum(u[l, e] for l, e in enumerate(removed)) / len(removed)), 4)
            for d, u in domain_usage.items()
        }

    methods = {
        "original": {"removed": [], "ce": data.domain_losses(model)},
        "least used dropped": {"removed": least_used(usage)},
        "most similar merged": {
            "removed": [j for _, j in pairs],
            "pairs": [list(p) for p in pairs],
            "similarity": [round(float(s[i, j]), 4) for s, (i, j) in zip(sims, pairs, strict=True)],
        },
    }
    # Lu et al. 2024's layer-wise criterion: drop the expert whose removal changes the layer's output
    # least on calibration text; general (the mixed sample) or domain-specific (math training text).
    math_sample = data.sampler(data.domain_train["math"], 200)
    math_xs = [torch.cat(t) for t in zip(*(layer_inputs(model, math_sample(i)) for i in range(4)), strict=True)]
    for name, calib in (("mixed", xs), ("math", math_xs)):
        errors = [reconstruction_errors(layer.mlp, x) for layer, x in zip(model.model.layers, calib, strict=True)]
        methods[f"reconstruction dropped ({name} calibration)"] = {
            "removed": [int(e.argmin()) for e in errors],
            "errors": [[round(float(v), 6) for v in e] for e in errors],
        }
    for name, m in methods.items():
        if name.startswith("reconstruction"):
            m["ce"] = data.domain_losses(prune_experts(model, m["removed"]))
    least = methods["least used dropped"]
    least["ce"] = data.domain_losses(prune_experts(model, least["removed"]))
    methods["most similar merged"]["ce"] = data.domain_losses(merge_experts(model, pairs, usage))
    for s in range(random_seeds):
        drop = random_experts(model.config.num_hidden_layers, model.config.num_local_experts, seed=s)
        methods[f"random dropped (seed {s})"] = {"removed": drop, "ce": data.domain_losses(prune_experts(model, drop))}
    for name, m in methods.items():
        if name != "original":
            m["rerouted"] = rerouted(m["removed"])
    return {
        "usage": rounded(usage),
        "mean_similarity": round(
            float(torch.stack([s[~torch.eye(len(s), dtype=torch.bool)].mean() for s in sims]).mean()), 4
        ),
        "methods": methods,
    }


def run(
    dense_steps: int = 150,
    more_steps: int = 150,
    every: int = 25,
    target: str = "italian",
    ft_steps: int = 40,
    ft_lr: float = 1e-3,
    seed: int = 0,
    command: str | None = None,
) -> dict:
    start = time.perf_counter()
    _model, tokenizer = load_pretrained()
    data = Data(tokenizer, seed)
    out = {
        "command": command,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    for name, fn in (
        ("pruning", lambda: pruning(data)),
        ("finetuning", lambda: finetuning(data, target, ft_steps, ft_lr, seed)),
        ("upcycling", lambda: upcycling(data, tokenizer.vocab_size, dense_steps, more_steps, every, seed)),
    ):
        t = time.perf_counter()
        out[name] = fn()
        out[name]["wall_seconds"] = round(time.perf_counter() - t, 1)
        print(f"{name}: {out[name]['wall_seconds']} s", flush=True)
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m moe_edu.experiments.adapting",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pos_int = arg_type(positive_int, int)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (at the end of the run)")
    p.add_argument("--dense-steps", type=pos_int, default=150)
    p.add_argument("--more-steps", type=pos_int, default=150)
    p.add_argument("--target", default="italian", choices=DOMAINS)
    p.add_argument("--ft-steps", type=pos_int, default=40)
    p.add_argument("--threads", type=pos_int, default=1)
    a = p.parse_args(argv)
    try:  # before the 2-3 minutes of work, not after
        out = check_out_file(a.out, overwrite=a.overwrite)
    except ValueError as err:
        p.error(str(err))
    torch.set_num_threads(a.threads)
    args = [x for x in (sys.argv[1:] if argv is None else argv) if x != "--overwrite"]
    command = "python -m moe_edu.experiments.adapting " + " ".join(args)
    try:
        with out_lock(out):
            res = run(a.dense_steps, a.more_steps, target=a.target, ft_steps=a.ft_steps, command=command.strip())
            write_text(out, json.dumps(res, indent=1) + "\n")
    except (NonFiniteError, LockedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"done in {res['wall_seconds']} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: moe_edu's MixtralForCausalLM vs transformers', same config, batch and weights.

One training step = forward (cross-entropy + router aux loss) + backward + AdamW step.
Both models start from the same weights (ours loads transformers' state dict), see the
same batch and use the same optimizer settings. Rounds are interleaved (ours, theirs,
theirs, ours, ...) so that load from other processes hits both alike; we report medians.

    python benchmarks/train_throughput.py                      # tiny and small presets
    python benchmarks/train_throughput.py --preset small --batch 8 --seq 128 --rounds 9

Writes `benchmarks/results/train_throughput.md` and prints the ratio ours/transformers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from moe_edu import MixtralForCausalLM, get_config  # noqa: E402


def make_models(cfg, seed: int = 0):
    """transformers' model and ours with identical weights, each with its own AdamW."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    hf_cfg = cfg.to_hf()
    hf_cfg.output_router_logits = True  # so transformers adds the aux loss, as we do
    hf = transformers.MixtralForCausalLM(hf_cfg).train()
    ours = MixtralForCausalLM(cfg).train()
    ours.load_hf_state_dict(hf.state_dict())
    return ours, hf


def step_fn(model, batch: torch.Tensor, hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step() -> float:
        if hf:
            out = model(input_ids=batch, labels=batch, output_router_logits=True)
        else:
            out = model(batch, labels=batch, output_router_logits=True)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return step


def timed(step, steps: int) -> tuple[float, float]:
    """Wall-clock and process-CPU seconds for `steps` steps (CPU time is robust when others share the machine)."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return time.perf_counter() - w0, time.process_time() - c0


def bench(preset: str, batch: int, seq: int, rounds: int, steps: int, warmup: int) -> dict:
    cfg = get_config(preset)
    ours, hf = make_models(cfg)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)  # (B, T)
    with torch.no_grad():
        err = (ours(ids).logits - hf(input_ids=ids).logits).abs().max().item()
    steps_ours, steps_hf = step_fn(ours, ids, False), step_fn(hf, ids, True)
    for _ in range(warmup):
        steps_ours(), steps_hf()
    t_ours, t_hf = [], []
    for r in range(rounds):  # interleave, alternating who goes first
        pair = [(steps_ours, t_ours), (steps_hf, t_hf)]
        for fn, sink in pair if r % 2 == 0 else pair[::-1]:
            sink.append(timed(fn, steps))
    tokens = batch * seq * steps
    out = {"preset": preset, "batch": batch, "seq": seq, "rounds": rounds, "steps": steps, "logits_err": err}
    for i, clock in enumerate(("wall", "cpu")):
        mine, theirs = [t[i] for t in t_ours], [t[i] for t in t_hf]
        out[f"tps_ours_{clock}"] = tokens / statistics.median(mine)
        out[f"tps_hf_{clock}"] = tokens / statistics.median(theirs)
        out[f"ratio_{clock}"] = out[f"tps_ours_{clock}"] / out[f"tps_hf_{clock}"]
        out[f"ratio_per_round_{clock}"] = [b / a for a, b in zip(mine, theirs, strict=False)]
    return out


def breakdown(preset: str, batch: int, seq: int, rounds: int = 3) -> dict[str, float]:
    """Process-CPU seconds of moe_edu's step parts: what any implementation must spend, and the rest."""
    cfg = get_config(preset)
    ours, _ = make_models(cfg)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1))  # (B, T)
    x = torch.randn(batch, seq, cfg.hidden_size, requires_grad=True)  # (B, T, H)
    layer = ours.model.layers[0]
    cos, sin = ours.model.rotary_emb(torch.arange(seq), x.dtype)  # (T, D)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, foreach=True)
    full = step_fn(ours, ids, False)
    L = cfg.num_hidden_layers
    parts = {  # AdamW first: the full step leaves grads at None
        "AdamW update": lambda: opt.step(),
        "step (all)": lambda: full(),
        "lm_head + cross-entropy": lambda: torch.nn.functional.cross_entropy(
            ours.lm_head(x).flatten(0, 1), ids.flatten()
        ).backward(),
        f"attention x {L} (norm, q/k/v/o, RoPE, SDPA)": lambda: (
            layer.self_attn(layer.input_layernorm(x), cos, sin, None)[0].sum().backward()
        ),
        f"MoE block x {L} (norm, router, experts)": lambda: (
            layer.mlp(layer.post_attention_layernorm(x))[0].sum().backward()
        ),
    }
    for p in ours.parameters():
        p.grad = torch.zeros_like(p)
    times = {}
    for name, fn in parts.items():
        fn()
        samples = [timed(fn, 1)[1] for _ in range(rounds)]
        times[name] = statistics.median(samples) * (L if " x " in name else 1)
    return times


def write_markdown(results: list[dict], path: Path, threads: int) -> None:
    import transformers

    lines = [
        "# Training throughput: moe_edu vs transformers",
        "",
        "Forward (cross-entropy + aux loss) + backward + AdamW step, same config, batch and weights;",
        "interleaved rounds, medians. Written by `benchmarks/train_throughput.py`.",
        "",
        f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.machine()} CPU, "
        f"{threads} thread(s). Ratio = moe_edu tokens/s over transformers tokens/s (> 1: moe_edu is faster);",
        "wall: per wall-clock second; cpu: per CPU second of the process (robust when other jobs share the CPU).",
        "transformers runs with its defaults (`sdpa` attention, `grouped_mm` experts), `output_router_logits=True`.",
        "Both use `torch.optim.AdamW(lr=1e-4, foreach=True)`.",
        "",
        "| preset | B x T | rounds x steps | clock | moe_edu tok/s | transformers tok/s | ratio | min..max per round | max abs logit err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for clock in ("wall", "cpu"):
            per_round = r[f"ratio_per_round_{clock}"]
            lines.append(
                f"| {r['preset']} | {r['batch']} x {r['seq']} | {r['rounds']} x {r['steps']} | {clock} | "
                f"{r[f'tps_ours_{clock}']:.0f} | {r[f'tps_hf_{clock}']:.0f} | **{r[f'ratio_{clock}']:.2f}x** | "
                f"{min(per_round):.2f}..{max(per_round):.2f} | {r['logits_err']:.1e} |"
            )
    for r in results:
        if r.get("breakdown"):
            total = r["breakdown"]["step (all)"]
            lines += [
                "",
                f"Where moe_edu's step goes ({r['preset']}, B x T = {r['batch']} x {r['seq']}, CPU seconds, "
                "parts timed separately):",
                "",
                "| part | seconds | share of step |",
                "|---|---|---|",
            ]
            lines += [f"| {k} | {v:.3f} | {v / total:.0%} |" for k, v in r["breakdown"].items() if k != "step (all)"]
            lines.append(f"| whole step | {total:.3f} | 100% |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", action="append", help="preset name (repeatable); default: tiny and small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--breakdown", action="store_true", help="also time moe_edu's step parts (CPU seconds)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_throughput.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for preset in args.preset or ["tiny", "small"]:
        r = bench(preset, args.batch, args.seq, args.rounds, args.steps, args.warmup)
        print(
            f"{preset:>6}  B={r['batch']} T={r['seq']}  moe_edu {r['tps_ours_wall']:9.0f} tok/s  "
            f"transformers {r['tps_hf_wall']:9.0f} tok/s  ratio {r['ratio_wall']:.2f}x wall, "
            f"{r['ratio_cpu']:.2f}x per CPU second  (logit err {r['logits_err']:.1e})",
            flush=True,
        )
        if args.breakdown:
            r["breakdown"] = breakdown(preset, args.batch, args.seq)
            print("   " + ", ".join(f"{k}: {v:.3f}s" for k, v in r["breakdown"].items()), flush=True)
        results.append(r)
    if args.out:
        write_markdown(results, args.out, args.threads)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()

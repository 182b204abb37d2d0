"""CPU dispatch benchmark: our `SparseMoeBlock` vs the floor, the ideal and transformers, one process.

    python benchmarks/cpu_dispatch.py --overwrite  # forward, 1 thread, rewrites ./benchmarks/results/cpu_dispatch.* (make bench)
    python benchmarks/cpu_dispatch.py --backward   # forward + backward -> cpu_dispatch_backward.*
    python benchmarks/cpu_dispatch.py --threads 1 2 --quick --out /tmp/bench

"Ideal" is one dense SwiGLU FFN of a single expert's size over T*k rows: the same active
FLOPs with no routing at all, so ours/ideal is the price of being sparse. "HF best" is the
faster of transformers' `MixtralSparseMoeBlock` with `eager` and `grouped_mm` experts on the
same weights. "Floor" runs exactly the expert GEMMs our routing asked for (the path
`moe_edu.dispatch.choose_path` picks) on rows already grouped by expert, with no routing,
sorting, gathering or combining: ours/floor is the
overhead of dispatch itself, ours/ideal minus that is the price of E small GEMMs over
more weights than one. Every implementation is timed once per round, rounds are interleaved (so load
from other processes hits all alike) and we report medians. Notebook 10 plots the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from moe_edu.config import MixtralConfig
from moe_edu.dispatch import choose_path
from moe_edu.io.atomic import atomic_directory
from moe_edu.io.lock import LockedError, out_lock
from moe_edu.io.results import check_out_files
from moe_edu.moe_block import SparseMoeBlock
from moe_edu.validation import int_in_range, positive_int

RESULTS = Path("benchmarks") / "results"  # default --out, relative to the working directory


@dataclass(frozen=True)
class Case:
    hidden: int
    intermediate: int
    tokens: int
    max_vs_floor: float = 1.10  # target for ours / floor: what dispatch itself may cost
    max_vs_hf: float = 1.0  # target for ours / HF best: never slower than transformers

    @property
    def label(self) -> str:
        return f"H={self.hidden}, I={self.intermediate}, T={self.tokens}"


CASES = (  # E=8, k=2, fp32, I = 3.5 H; targets ours <= 1.0 x HF best and <= 1.10 x floor everywhere
    Case(512, 1792, 1),
    Case(256, 896, 64),
    Case(512, 1792, 1024),
    Case(1024, 3584, 2048),
)


@dataclass
class Result:
    case: Case
    threads: int
    backward: bool
    ms: dict[str, float] = field(default_factory=dict)  # median milliseconds per implementation
    spread: dict[str, float] = field(default_factory=dict)  # interquartile range / median: the noise
    samples: dict[str, list[float]] = field(default_factory=dict)  # seconds per call, one per round

    def paired(self, names: tuple[str, ...]) -> float | None:
        """Median over rounds of ours / (fastest of `names` in the same round).

        Each round times every implementation back to back, so a ratio within a round cancels
        the slow drifts of a shared machine's load that a ratio of medians would keep.
        """
        names = tuple(n for n in names if n in self.samples)
        if not names or "ours" not in self.samples:
            return None
        return statistics.median(o / min(self.samples[n][i] for n in names) for i, o in enumerate(self.samples["ours"]))

    @property
    def vs_ideal(self) -> float:
        return self.paired(("ideal",))

    @property
    def vs_floor(self) -> float | None:
        return self.paired(("floor",))

    @property
    def vs_hf(self) -> float | None:
        return self.paired(("hf_eager", "hf_grouped_mm"))


def _hf_block(config: MixtralConfig, ours: SparseMoeBlock, impl: str) -> torch.nn.Module | None:
    """transformers' block with `impl` experts on our weights, or None without transformers."""
    try:
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    except ImportError:
        return None
    hf_config = config.to_hf()
    hf_config._experts_implementation = impl  # "eager" (per-expert loop) or "grouped_mm"
    block = MixtralSparseMoeBlock(hf_config)
    block.load_state_dict(ours.export_state_dict("v5"))
    return block


def _step(fn: Callable[[], torch.Tensor], params: list[torch.Tensor], backward: bool) -> Callable[[], None]:
    """One timed call: forward only (no_grad), or forward + backward of sum(y)."""
    if not backward:

        def run() -> None:
            with torch.no_grad():
                fn()

        return run

    def run_bwd() -> None:
        for p in params:
            p.grad = None
        y = fn()
        y.backward(torch.ones_like(y))  # a dense upstream gradient (sum()'s is an expanded, stride-0 view)

    return run_bwd


def implementations(case: Case, backward: bool, seed: int = 0) -> dict[str, Callable[[], None]]:
    """The callables timed for one case: ideal, ours, and transformers' two experts implementations."""
    torch.manual_seed(seed)
    config = MixtralConfig(
        hidden_size=case.hidden,
        intermediate_size=case.intermediate,
        num_attention_heads=8,
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
    )
    ours = SparseMoeBlock(config)
    k = config.num_experts_per_tok
    x = torch.randn(1, case.tokens, case.hidden)  # (1, T, H)
    rows = torch.randn(case.tokens * k, case.hidden)  # (T*k, H): the ideal's rows
    ideal_w = [
        ours.experts.gate_up_proj.detach()[0].clone().requires_grad_(backward),
        ours.experts.down_proj.detach()[0].clone().requires_grad_(backward),
    ]

    def ideal() -> torch.Tensor:  # one SwiGLU expert, no routing
        gate, up = torch.nn.functional.linear(rows, ideal_w[0]).chunk(2, dim=-1)  # (T*k, I) each
        return torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, ideal_w[1])  # (T*k, H)

    with torch.no_grad():  # the routing ours will take, decided once, outside the timer
        chosen = ours.route(x).expert_ids  # (T, k)
    grouped_rows = x[0][torch.argsort(chosen.reshape(-1), stable=True) // k].contiguous()  # (T*k, H) by expert
    counts = torch.bincount(chosen.reshape(-1), minlength=config.num_local_experts)  # (E,)
    sizes = counts.tolist()

    def floor() -> torch.Tensor:  # the same expert GEMMs ours runs, on pre-grouped rows: no routing at all
        path = choose_path(x[0], ours.experts, k)  # what ours decides in this grad mode
        path = "per_expert" if path == "decode" else path  # decode's k GEMVs = per-expert GEMMs on k rows
        return ours.experts.grouped(grouped_rows, counts, sizes, path=path)  # (T*k, H)

    fns = {
        "ideal": _step(ideal, ideal_w, backward),
        "floor": _step(floor, list(ours.parameters()), backward),
        "ours": _step(lambda: ours(x)[0], list(ours.parameters()), backward),
    }
    for impl in ("eager", "grouped_mm"):
        hf = _hf_block(config, ours, impl)
        if hf is None:
            continue
        fn = _step(lambda hf=hf: hf(x), list(hf.parameters()), backward)
        try:
            fn()  # transformers' CPU grouped_mm has no backward in some torch versions
        except RuntimeError:
            continue
        fns[f"hf_{impl}"] = fn
    return fns


def time_case(case: Case, threads: int, backward: bool, rounds: int, min_s: float = 0.02) -> Result:
    """Median time of each implementation over interleaved rounds."""
    torch.set_num_threads(threads)
    fns = implementations(case, backward)
    reps = {}
    for name, fn in fns.items():  # warm up, then pick repetitions so one sample lasts >= min_s
        fn()
        t0 = time.perf_counter()
        fn()
        reps[name] = max(1, round(min_s / max(time.perf_counter() - t0, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        names = list(fns) if r % 2 == 0 else list(fns)[::-1]  # alternate the order too
        for name in names:
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fns[name]()
            samples[name].append((time.perf_counter() - t0) / reps[name])
    ms = {name: 1e3 * statistics.median(s) for name, s in samples.items()}
    spread = {}
    for name, s in samples.items():
        q1, _, q3 = statistics.quantiles(s, n=4) if len(s) > 1 else (s[0], s[0], s[0])
        spread[name] = (q3 - q1) / statistics.median(s)
    return Result(case, threads, backward, ms, spread, samples)


def markdown(results: list[Result], rounds: int, load: float | None = None) -> str:
    """The results as a markdown table, with the machine, its load and the targets."""
    mode = "forward + backward" if results and results[0].backward else "forward (no_grad)"
    lines = [
        f"# CPU dispatch benchmark: {mode}",
        "",
        f"`python benchmarks/cpu_dispatch.py{' --backward' if results and results[0].backward else ''}` - fp32, E=8, k=2, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {rounds} interleaved rounds, medians"
        + (f"; load average {load:.1f} on {os.cpu_count()} CPUs when it started." if load is not None else "."),
        "Ideal = one SwiGLU expert over T*k rows (same active FLOPs, no routing); "
        "floor = the same expert GEMMs ours runs, on rows already sorted by expert "
        "(no router, sort, gather or combine): "
        "ours/floor is the cost of dispatch itself; "
        "HF best = faster of transformers' `eager` and `grouped_mm` experts. "
        "Ratios are medians over rounds of the ratio within a round (back-to-back timings, so the load drift of a "
        "shared machine cancels). Noise = ± half the interquartile range / median of the times, the largest among "
        "the implementations of that row.",
        "",
        "| case | threads | ideal ms | floor ms | ours ms | HF eager ms | HF grouped_mm ms | ours/ideal "
        "| ours/floor (target) | ours/HF best (target) | noise |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: Result, name: str) -> str:
        return f"{r.ms[name]:.3f}" if name in r.ms else "n/a"

    def ratio(value: float | None, target: float) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2f} (≤{target}) {'met' if value <= target else 'missed'}"

    for r in results:
        lines.append(
            f"| {r.case.label} | {r.threads} | {cell(r, 'ideal')} | {cell(r, 'floor')} | {cell(r, 'ours')} | "
            f"{cell(r, 'hf_eager')} | {cell(r, 'hf_grouped_mm')} | {r.vs_ideal:.2f} | "
            f"{ratio(r.vs_floor, r.case.max_vs_floor)} | {ratio(r.vs_hf, r.case.max_vs_hf)} | "
            f"±{50 * max(r.spread.values(), default=0):.0f}% |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> None:
    """Bars of time / ideal per case and implementation (1.0 = no routing overhead at all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["floor", "ours", "hf_eager", "hf_grouped_mm"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    labels = [f"{r.case.label}\n{r.threads} thr" for r in results]
    for i, name in enumerate(names):
        ys = [r.ms[name] / r.ms["ideal"] if name in r.ms else 0.0 for r in results]
        ax.bar([j + i * width for j in range(len(results))], ys, width, label=name)
    ax.axhline(1.0, color="black", lw=0.8, ls="--", label="ideal (no routing)")
    ax.set_xticks([j + width for j in range(len(results))], labels, fontsize=7)
    ax.set_ylabel("time / ideal")
    ax.set_title("MoE block on CPU, fp32, E=8, k=2" + (" (fwd+bwd)" if results[0].backward else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def output_names(backward: bool) -> list[str]:
    stem = "cpu_dispatch_backward" if backward else "cpu_dispatch"
    return [f"{stem}.md", f"{stem}.json", f"{stem}.png"]


def write(results: list[Result], out_dir: Path, rounds: int, load: float | None = None) -> list[Path]:
    """Write `<name>.md`, `<name>.json` (read by notebook 10) and `<name>.png`, swapped in together."""
    names = output_names(results[0].backward)
    with atomic_directory(out_dir, owned=set(names).__contains__) as tmp:
        paths = [tmp / name for name in names]
        paths[0].write_text(markdown(results, rounds, load))
        rows = [
            {
                **asdict(r.case),
                "threads": r.threads,
                "backward": r.backward,
                "ms": r.ms,
                "spread": r.spread,
                "ratios": {"ours/floor": r.vs_floor, "ours/hf_best": r.vs_hf, "ours/ideal": r.vs_ideal},
            }
            for r in results
        ]
        meta = {"torch": torch.__version__, "rounds": rounds, "load_average": load}
        paths[1].write_text(json.dumps({**meta, "results": rows}, indent=1) + "\n")
        plot(results, paths[2])
    return [out_dir / name for name in names]


def _positive(text: str) -> int:
    try:
        return positive_int("value", int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("value ", "", 1)) from None


def _case(text: str) -> int:
    try:
        return int_in_range("value", int(text), 0, len(CASES) - 1)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"an index into CASES: {str(err).replace('value ', '', 1)}") from None


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python benchmarks/cpu_dispatch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of --rounds")
    parser.add_argument("--rounds", type=_positive, default=9)
    parser.add_argument("--threads", type=_positive, nargs="+", default=[1])
    parser.add_argument("--cases", type=_case, nargs="+", default=list(range(len(CASES))), help="indices into CASES")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="folder for the .md/.json/.png (default: benchmarks/results under the current directory)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace earlier results in --out (at the end)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    try:  # before the timing runs, not after
        check_out_files(args.out, output_names(args.backward), overwrite=args.overwrite)
    except ValueError as err:
        parser.error(str(err))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other processes' share of the CPU
    results = []
    try:
        with out_lock(args.out):
            for threads in args.threads:
                for case in (CASES[i] for i in dict.fromkeys(args.cases)):
                    results.append(time_case(case, threads, args.backward, rounds))
                    print(markdown(results[-1:], rounds).splitlines()[-1], flush=True)
            for path in write(results, args.out, rounds, load):
                print("wrote", path)
    except LockedError as err:
        parser.exit(1, f"error: {err}\n")
    return results


if __name__ == "__main__":
    main()

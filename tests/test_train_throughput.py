"""Smoke test of the training-throughput benchmark (numbers are not asserted: timings never are)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.mark.slow
def test_benchmark_runs_and_writes_a_ratio(tmp_path):
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "train_throughput.md"
    (r,) = bench.main(
        [
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--seq",
            "8",
            "--rounds",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert r["logits_err"] <= 1e-4  # same weights: same logits before training
    for clock in ("wall", "cpu"):
        assert r[f"tps_ours_{clock}"] > 0 and r[f"tps_hf_{clock}"] > 0 and len(r[f"ratio_per_round_{clock}"]) == 2
    text = out.read_text()
    assert "| tiny | 2 x 8 | 2 x 1 | wall |" in text and f"**{r['ratio_wall']:.2f}x**" in text
    assert "| tiny | 2 x 8 | 2 x 1 | cpu |" in text

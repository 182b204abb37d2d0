"""The shipped results of notebook 12 (moe_edu/results/adapting.json) are complete and self-consistent."""

from __future__ import annotations

import pytest
import torch

import moe_edu.experiments.adapting as adapting
from moe_edu.adapting.finetune import REGIMES, esft_experts
from moe_edu.data.corpus import DOMAINS
from moe_edu.experiments.adapting import load_results, main


def test_shipped_results_are_complete_and_consistent():
    r = load_results()
    assert r["command"].startswith("python -m moe_edu.experiments.adapting")
    up = r["upcycling"]
    assert up["step0_max_abs_logit_diff"] < 1e-4  # the upcycled model started on the dense function
    curves = up["curves"]
    assert curves["upcycled"][0]["step"] == up["settings"]["dense_steps"] == curves["dense_continued"][0]["step"]
    assert abs(curves["upcycled"][0]["eval_ce"] - curves["dense_continued"][0]["eval_ce"]) < 0.01
    assert up["expert_spread"][0]["spread"] == 0.0 and up["expert_spread"][-1]["spread"] > 0.0
    # the equal-learning-rate controls: every run ends at the same step, the continuations start on the dense model
    end = up["settings"]["dense_steps"] + up["settings"]["more_steps"] - 1
    assert all(c[-1]["step"] == end for name, c in curves.items() if name != "dense_pretrain")
    for name in ("upcycled_lr5e-3", "dense_continued_lr5e-3"):
        assert curves[name][0]["step"] == up["settings"]["dense_steps"]
        assert abs(curves[name][0]["eval_ce"] - curves["dense_pretrain"][-1]["eval_ce"]) < 0.02
    # the same-schedule MoE from scratch restarts its optimizer where the dense run was upcycled
    steps = [e["step"] for e in curves["moe_scratch_matched_lr"]]
    assert up["settings"]["dense_steps"] - 1 in steps and up["settings"]["dense_steps"] in steps
    ft = r["finetuning"]
    assert {run["regime"] for run in ft["runs"].values()} == set(REGIMES)
    assert all(set(run["ce"]) == set(DOMAINS) for run in ft["runs"].values())


def test_shipped_esft_run_is_what_its_selection_says():
    ft = load_results()["finetuning"]
    esft = ft["esft"]
    scores = torch.tensor(esft["scores"]["token"])  # (L, E)
    assert torch.allclose(scores.sum(1), torch.ones(len(scores)), atol=1e-3)
    assert esft["experts"] == esft_experts(scores, esft["p"])  # the selection follows the shipped scores
    assert esft["experts_gate"] == esft_experts(torch.tensor(esft["scores"]["gate"]), esft["p"])
    for picked, least, row in zip(esft["experts"], esft["least_used"], scores.tolist(), strict=True):
        assert len(least) == len(picked) and max(row[e] for e in least) <= min(row[e] for e in picked)
    runs = ft["runs"]
    assert runs["esft, aux 1"]["experts"] == esft["experts"]
    assert runs["esft (least-used experts), aux 1"]["experts"] == esft["least_used"]
    before, target = ft["before"]["ce"], ft["target"]
    others = [d for d in DOMAINS if d != target]

    def forgetting(run: dict) -> float:
        return sum(run["ce"][d] - before[d] for d in others) / len(others)

    # what the notebook teaches: ESFT improves the target, forgets least, and relevant experts beat irrelevant ones
    assert runs["esft, aux 1"]["ce"][target] < before[target]
    assert forgetting(runs["esft, aux 1"]) < min(forgetting(runs[f"{g}, aux 1"]) for g in REGIMES if g != "esft")
    assert runs["esft, aux 1"]["ce"][target] < runs["esft (least-used experts), aux 1"]["ce"][target]


def test_shipped_pruning_methods_are_complete():
    r = load_results()
    methods = r["pruning"]["methods"]
    assert {"original", "least used dropped", "most similar merged"} <= set(methods)
    L = len(r["pruning"]["usage"])
    assert all(len(m["removed"]) == L for n, m in methods.items() if n != "original")
    for calib in ("mixed", "math"):
        m = methods[f"reconstruction dropped ({calib} calibration)"]
        assert m["removed"] == [min(range(len(e)), key=e.__getitem__) for e in m["errors"]]


@pytest.mark.slow
def test_the_command_runs_end_to_end(tmp_path):
    out = tmp_path / "adapting.json"
    assert main(["--out", str(out), "--dense-steps", "2", "--more-steps", "2", "--ft-steps", "1"]) == 0
    r = load_results(out)
    assert r["upcycling"]["curves"]["moe_scratch"][-1]["step"] == 3


def test_the_command_checks_arguments_and_out_before_the_work(tmp_path, monkeypatch, capsys):
    """`--out <a directory>` failed with IsADirectoryError after the whole 2-3 minute run."""
    monkeypatch.setattr(adapting, "run", lambda *a, **k: pytest.fail("ran before the arguments were checked"))
    (tmp_path / "old.json").write_text("{}")
    for argv, message in [
        (["--out", str(tmp_path)], "is a directory"),
        (["--out", str(tmp_path / "old.json")], "exists: pass --overwrite"),
        (["--out", str(tmp_path / "old.json" / "x.json")], "cannot be written"),
        (["--dense-steps", "0", "--out", str(tmp_path / "n.json")], "--dense-steps: must be an int in [1"),
        (["--threads", "-1", "--out", str(tmp_path / "n.json")], "--threads: must be an int in [1"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
    assert (tmp_path / "old.json").read_text() == "{}"

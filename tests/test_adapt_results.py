"""The shipped results of notebook 12 (moe_edu/results/adapting.json) are complete and self-consistent."""

from __future__ import annotations

import pytest

import moe_edu.experiments.adapting as adapting
from moe_edu.adapting.finetune import REGIMES
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
    ft = r["finetuning"]
    assert {run["regime"] for run in ft["runs"].values()} == set(REGIMES)
    assert all(set(run["ce"]) == set(DOMAINS) for run in ft["runs"].values())
    methods = r["pruning"]["methods"]
    assert {"original", "least used dropped", "most similar merged"} <= set(methods)
    L = len(r["pruning"]["usage"])
    assert all(len(m["removed"]) == L for n, m in methods.items() if n != "original")


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

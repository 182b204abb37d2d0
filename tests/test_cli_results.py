"""The result commands (serving, the lock) are as safe as `train`: checked up front, written whole, one at a time."""

import json

import pytest

import moe_edu.experiments.serving as serving
from moe_edu.io.lock import LockedError, lock_path, out_lock
from moe_edu.io.results import check_out_file, write_text


def test_serving_results_are_checked_up_front_and_swapped_in_together(tmp_path, monkeypatch, capsys):
    """SIGINT after the second file left a new trace and cache beside the old quantization.json, unmarked."""
    out = tmp_path / "serving"
    out.mkdir()
    for name in serving.OUTPUTS:
        (out / name).write_text("old")
    (out / "notes.md").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        serving.main(["--out", str(out)])
    assert exit_.value.code == 2 and "pass --overwrite" in capsys.readouterr().err

    def interrupted(folder):
        (folder / "routing_trace.safetensors").write_text("new")
        (folder / "cache.json").write_text("new")
        raise KeyboardInterrupt  # before quantization.json

    monkeypatch.setattr(serving, "write_results", interrupted)
    with pytest.raises(KeyboardInterrupt):
        serving.main(["--out", str(out), "--overwrite"])
    assert {n: (out / n).read_text() for n in serving.OUTPUTS} == dict.fromkeys(serving.OUTPUTS, "old")

    def complete(folder):
        for name in serving.OUTPUTS:
            (folder / name).write_text("new")
        return {"rows": [], "tokens": 0, "documents": 0}

    monkeypatch.setattr(serving, "write_results", complete)
    assert serving.main(["--out", str(out), "--overwrite"]) == 0
    assert {n: (out / n).read_text() for n in serving.OUTPUTS} == dict.fromkeys(serving.OUTPUTS, "new")
    assert (out / "notes.md").read_text() == "mine" and not lock_path(out).exists()


def test_a_lock_stops_a_second_run_and_a_stale_lock_is_taken_over(tmp_path):
    """Two runs into one --out both 'succeeded'; the second swap silently discarded the first result."""
    out = tmp_path / "run"
    with out_lock(out) as held:
        with pytest.raises(LockedError, match="another run writes into"), out_lock(out):
            pass
        assert json.loads(held.read_text())["pid"] > 0
    assert not held.exists()
    held.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": 2**22 + 12345}))  # a dead run
    with out_lock(out):
        pass
    assert not held.exists()


def test_result_files_are_written_whole_and_checked(tmp_path):
    path = write_text(tmp_path / "sub" / "r.json", "{}")
    assert path.read_text() == "{}" and [p.name for p in path.parent.iterdir()] == ["r.json"]
    with pytest.raises(ValueError, match="exists: pass --overwrite"):
        check_out_file(path)
    assert check_out_file(path, overwrite=True) == path
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="dangling"):
        check_out_file(tmp_path / "dangling")

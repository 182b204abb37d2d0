"""Grades that hold: the two cheats of the classroom review (N1: unsetting NBGRADER_EXECUTION,
N2: rebinding `ex.check_<name>`) no longer switch grading off, and the integrity scan gives them 0
and flags them. The full nbgrader path with a cheating student is in tests/test_nbgrader.py (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from moe_edu.course.exercises import gating, integrity
from moe_edu.course.exercises.core import is_original

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "notebooks" / "exercises" / "solutions" / "ex01_gating.ipynb"


def test_n1_unsetting_the_flag_after_import_changes_nothing():
    """N1: `os.environ.pop("NBGRADER_EXECUTION")` in student code; a wrong answer must still raise."""
    script = textwrap.dedent(
        """
        import os
        from moe_edu.course.exercises import gating as ex     # the locked setup cell
        os.environ.pop("NBGRADER_EXECUTION", None)             # the student's cheat
        try:
            ex.check_router_logits(lambda x, w: w @ x.T)       # wrong on purpose
        except AssertionError:
            print("raised")
        """
    )
    env = {**os.environ, "NBGRADER_EXECUTION": "autograde", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("✗ router_logits: case 1") and lines[1] == "raised"


def test_n2_checkers_cannot_be_rebound():
    original = gating.check_router_logits
    with pytest.raises(AttributeError, match="read-only"):
        gating.check_router_logits = lambda fn: None
    with pytest.raises(AttributeError, match="read-only"):
        del gating.check_router_probs
    gating.__dict__["check_router_logits"] = lambda fn: None  # around the guard
    try:
        assert gating.check_router_logits is original  # still the checker captured at import
        assert is_original(gating.__name__, "check_router_logits", gating.check_router_logits)
        assert not is_original(gating.__name__, "check_router_logits", lambda fn: None)
    finally:
        gating.__dict__["check_router_logits"] = original
    gating.my_helper = 1  # other names stay writable
    del gating.my_helper


def _with_checker_output(nb, grade_id: str, outputs: list) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return nb


def _scan(tmp_path, nb) -> integrity.NotebookResult:
    path = tmp_path / "mallory" / "ex01_gating" / "ex01_gating.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return integrity.scan_notebook(path)


def _line(text: str) -> dict:
    return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {}}


def test_the_solution_render_scans_clean(tmp_path):
    result = _scan(tmp_path, nbformat.read(SOLUTION, as_version=4))
    assert (result.score, result.max_score, result.flags) == (2.0, 2.0, [])
    assert integrity.genuine_line("gating", "router_logits") == "✓ router_logits: all 4 cases pass"


@pytest.mark.parametrize(
    ("outputs", "reason"),
    [
        ([], "no checker line"),  # N2: ex.check_x = lambda fn: None -> the cell prints nothing
        ([_line("✗ router_logits: case 1 (T=4, H=8, E=4): output shape: expected (4, 4)")], "✗ router_logits"),  # N1
        ([_line("✓ router_logits: all 0 cases pass")], "not the genuine one"),  # cases emptied
        ([_line("✓ router_logits: all 4 cases pass"), _line("✓ router_logits: all 4 cases pass")], "2 output lines"),
    ],
)
def test_cheats_score_zero_and_are_flagged(tmp_path, outputs, reason):
    nb = nbformat.read(SOLUTION, as_version=4)
    grade_id = next(c.metadata.nbgrader.grade_id for c in nb.cells if "check_router_logits" in c.source)
    result = _scan(tmp_path, _with_checker_output(nb, grade_id, outputs))
    assert result.score == 1.0 and result.max_score == 2.0  # router_probs still counts
    cell = next(c for c in result.cells if c.name == "router_logits")
    assert cell.credit == 0 and reason in cell.reason and cell.nbgrader_credit
    assert any(grade_id in f and "withheld" in f for f in result.flags)


def test_a_failing_check_under_nbgrader_is_zero_but_not_flagged(tmp_path):
    nb = nbformat.read(SOLUTION, as_version=4)
    grade_id = next(c.metadata.nbgrader.grade_id for c in nb.cells if "check_router_logits" in c.source)
    error = {"output_type": "error", "ename": "AssertionError", "evalue": "✗ router_logits: ...", "traceback": []}
    result = _scan(tmp_path, _with_checker_output(nb, grade_id, [_line("✗ router_logits: ..."), error]))
    assert result.score == 1.0 and result.flags == []  # an honest wrong answer: nbgrader agrees


@pytest.mark.parametrize(
    "cheat",
    [
        'import os; os.environ.pop("NBGRADER_EXECUTION", None)',
        "ex.check_router_logits = lambda fn: None",
        "ex = None",
        "import sys; sys.modules['moe_edu.course.exercises.gating'] = None",
        "print('✓ router_logits: all 4 cases pass')",
        "from moe_edu.course.exercises import core; core.GRADING = False",
    ],
)
def test_tampering_in_a_student_cell_is_flagged(tmp_path, cheat):
    nb = nbformat.read(SOLUTION, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code")
    cell.source += "\n" + cheat
    assert _scan(tmp_path, nb).flags


def test_an_edited_checker_cell_is_flagged(tmp_path):
    nb = nbformat.read(SOLUTION, as_version=4)
    cell = next(c for c in nb.cells if "check_router_logits" in c.source)
    cell.source = "print('✓ router_logits: all 4 cases pass')"
    assert any("not the generated one" in f for f in _scan(tmp_path, nb).flags)


def test_no_committed_render_trips_the_scan(tmp_path):
    for path in sorted((ROOT / "notebooks" / "exercises" / "solutions").glob("ex*.ipynb")):
        result = integrity.scan_notebook(path, "solver", path.stem)
        assert result.flags == [] and result.score == result.max_score > 0, (path.name, result.flags)


def test_command_line_exit_status(tmp_path, capsys):
    nb = nbformat.read(SOLUTION, as_version=4)
    grade_id = next(c.metadata.nbgrader.grade_id for c in nb.cells if "check_router_logits" in c.source)
    _scan(tmp_path, _with_checker_output(nb, grade_id, []))
    assert integrity.main([str(tmp_path), "--csv", str(tmp_path / "scan.csv")]) == 1
    out = capsys.readouterr().out
    assert "mallory ex01_gating: 1/2 checker points  FLAGGED" in out and "1 notebooks, 1 flagged" in out
    assert "no checker line" in (tmp_path / "scan.csv").read_text()

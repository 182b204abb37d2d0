"""The instructor path end to end (`make classroom` = `python -m moe_edu.course.classroom`): a course
folder with nbgrader_config.py, all 12 assignments generated and released; then five simulated
students fetch and submit through nbgrader's exchange (solution, blank, partial, a cheater, a slow
correct answer), and `grade` / `feedback` collect, autograde, scan and export. Slow: every submission
is executed by nbgrader (two assignments for the student matrix keep it to a few minutes)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from moe_edu.course import classroom
from moe_edu.course.exercises import load_all

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "exercises" / "solutions"
MATRIX = ("ex01_gating", "ex11_serving")  # 2 + 3 checker cells


def test_the_cell_timeout_fits_the_slowest_checker():
    """Every call of a checker cell may take up to its time limit (plus about 1 s to stop it)."""
    worst = max(len(list(ex.cases())) * (ex.time_limit + 1) for ex in load_all().values())
    assert worst + 30 <= classroom.CELL_TIMEOUT, worst
    assert f"c.Execute.timeout = {classroom.CELL_TIMEOUT}" in classroom.config_text(Path("/tmp/c"))
    assert len(classroom.assignments()) == 12


if sys.version_info < (3, 11):  # nbgrader 0.9.6 needs Python 3.11
    pytest.skip("nbgrader needs Python >= 3.11", allow_module_level=True)
from nbgrader.api import Gradebook  # noqa: E402


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("NBGRADER_EXECUTION", None)
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=1800)
    return result


def solution_cells(name: str) -> dict[str, str]:
    nb = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    return {c.metadata.nbgrader.grade_id: c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def checker_id(name: str, call: str) -> str:
    nb = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    return next(c.metadata.nbgrader.grade_id for c in nb.cells if call in c.source)


def answer(nb, name: str, functions: dict[str, str | None]) -> None:
    """Fill the solution cells: a function name -> code (None: the committed solution), '*' for all."""
    solved = solution_cells(name)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        if cell.cell_type == "markdown":
            if "*" in functions:
                cell.source = solved[meta["grade_id"]]
            continue
        fn = next((f for f in functions if f"def {f}(" in solved[meta["grade_id"]]), "*" if "*" in functions else None)
        if fn is not None:
            code = functions[fn]
            cell.source = solved[meta["grade_id"]] if code is None else code


WRONG_LOGITS = """import os
os.environ.pop("NBGRADER_EXECUTION", None)  # N1: switch grading off


def router_logits(x, w):
    return w.float() @ x.float().T  # wrong on purpose
"""
WRONG_PROBS = """def router_probs(logits):
    return torch.softmax(logits.float(), dim=0)  # wrong on purpose


ex.check_router_probs = lambda fn: None  # N2: rebind the checker
"""
WRONG_KV = """from moe_edu.course.exercises import core

core.GRADING = False  # deeper tampering: nbgrader gives credit, the integrity scan does not


def kv_bytes_per_token(num_layers, num_kv_heads, head_dim, bytes_per_value):
    return num_layers * num_kv_heads * head_dim * bytes_per_value  # forgets K and V
"""
SLOW_LRU = """import time


def lru_hit_rate(trace, capacity):
    time.sleep(6)  # correct but slow: 6 cases x 6 s = 36 s, over nbgrader's default 30 s cell timeout
    cache = []
    hits = 0
    for e in trace:
        if e in cache:
            hits += 1
            cache.remove(e)
        cache.append(e)
        if len(cache) > capacity:
            cache.pop(0)
    return hits / len(trace)
"""

STUDENTS = {  # student -> assignment -> answers (function -> code, None: the solution; "*": everything)
    "solver": {"ex01_gating": {"*": None}, "ex11_serving": {"*": None}},
    "blank": {"ex01_gating": {}, "ex11_serving": {}},
    "partial": {"ex01_gating": {"router_logits": None}, "ex11_serving": {"kv_bytes_per_token": None}},
    "mallory": {
        "ex01_gating": {"router_logits": WRONG_LOGITS, "router_probs": WRONG_PROBS},
        "ex11_serving": {"kv_bytes_per_token": WRONG_KV},
    },
    "slowpoke": {"ex11_serving": {"kv_bytes_per_token": None, "lru_hit_rate": SLOW_LRU, "int8_round_trip": None}},
}
EXPECTED = {  # (student, assignment) -> checker points after the integrity scan, and whether flagged
    ("solver", "ex01_gating"): ([1, 1], False),
    ("solver", "ex11_serving"): ([1, 1, 1], False),
    ("blank", "ex01_gating"): ([0, 0], False),
    ("blank", "ex11_serving"): ([0, 0, 0], False),
    ("partial", "ex01_gating"): ([1, 0], False),
    ("partial", "ex11_serving"): ([1, 0, 0], False),
    ("mallory", "ex01_gating"): ([0, 0], True),
    ("mallory", "ex11_serving"): ([0, 0, 0], True),
    ("slowpoke", "ex11_serving"): ([1, 1, 1], False),
}


@pytest.mark.slow
def test_classroom_end_to_end(tmp_path):
    course = tmp_path / "course"
    setup = run(ROOT, "-m", "moe_edu.course.classroom", "--course", str(course))
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    config = (course / "nbgrader_config.py").read_text()
    assert "c.CourseDirectory.course_id = 'moe_edu'" in config and str(course / "exchange") in config
    names = classroom.assignments()
    assert sorted(p.name for p in (course / "release").iterdir()) == names
    assert sorted(p.name for p in (course / "exchange" / "moe_edu" / "outbound").iterdir()) == names

    for student, work in STUDENTS.items():
        home = tmp_path / student
        home.mkdir()
        (home / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.Exchange.root = {str(course / 'exchange')!r}\nc.CourseDirectory.course_id = 'moe_edu'\n"
        )
        for name, functions in work.items():
            fetched = run(home, "-m", "nbgrader", "fetch_assignment", name, "--course", "moe_edu")
            assert fetched.returncode == 0, fetched.stderr[-2000:]
            path = home / name / f"{name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            answer(nb, name, functions)
            nbformat.write(nb, path)
            sub = run(home, "-m", "nbgrader", "submit", name, "--course", "moe_edu", "--student", student)
            assert sub.returncode == 0, sub.stderr[-2000:]

    graded = run(ROOT, "-m", "moe_edu.course.classroom", "grade", "--course", str(course), "--assignment", *MATRIX)
    assert graded.returncode == 1, graded.stdout[-3000:] + graded.stderr[-3000:]  # 1: something was flagged
    out = graded.stdout
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for (student, name), (points, flagged) in EXPECTED.items():
            grades = gb.find_submission_notebook(name, name, student).grades
            checkers = sorted((g for g in grades if g.cell.cell_type == "code"), key=lambda g: g.name)
            assert [g.score for g in checkers] == points, (
                student,
                name,
                [(g.auto_score, g.manual_score) for g in checkers],
            )
            line = next(ln for ln in out.splitlines() if ln.startswith(f"{student} {name}:"))
            assert ("FLAGGED" in line) == flagged, line
        # the deeper tampering: nbgrader alone gave credit (no error), the scan took it back
        kv_id = checker_id("ex11_serving", "check_kv_bytes_per_token")
        kv = gb.find_grade(kv_id, "ex11_serving", "ex11_serving", "mallory")
        assert (kv.auto_score, kv.manual_score, kv.score) == (1, 0, 0)
    # core.GRADING = False also let the two untouched stubs of mallory's ex11 pass under nbgrader ("○ not attempted"
    # printed, nothing raised): the scan withholds all three
    assert "integrity scan: 3 checker grades set to 0" in out

    fb = run(ROOT, "-m", "moe_edu.course.classroom", "feedback", "--course", str(course), "--assignment", *MATRIX)
    assert fb.returncode == 0, fb.stdout[-3000:] + fb.stderr[-3000:]
    assert (course / "feedback" / "partial" / "ex01_gating" / "ex01_gating.html").exists()
    rows = list(csv.DictReader((course / "grades.csv").open()))
    scores = {(r["student_id"], r["assignment"]): float(r["score"]) for r in rows}
    assert scores[("mallory", "ex11_serving")] == 0 and scores[("slowpoke", "ex11_serving")] == 3
    assert math.isclose(scores[("partial", "ex01_gating")], 1)

"""The exercise sources are real nbgrader source notebooks: nbgrader's own `generate_assignment`
turns each into the committed student render (same cells, solutions removed the same way), and
`autograde` gives the solution render full marks on every checker cell and the student render 0.

Runs nbgrader's CLI in a temporary course directory; slow (it executes every exercise twice)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

if sys.version_info < (3, 11):  # nbgrader 0.9.6 needs Python 3.11; the lock installs it from 3.11 on
    pytest.skip("nbgrader needs Python >= 3.11", allow_module_level=True)
from nbgrader.api import Gradebook

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EX_DIR = ROOT / "notebooks" / "exercises"
NAMES = sorted(p.stem for p in EX_DIR.glob("ex[0-9][0-9]_*.py"))
KEYS = ("grade", "solution", "locked", "points", "grade_id")  # the nbgrader metadata that must agree

spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # nbgrader runs `alembic` (its database migrations) from the same bin folder
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("NBGRADER_EXECUTION", None)
    run = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True, timeout=1800, env=env
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course directory with every exercise source, its assignments generated."""
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'moe_edu'\n"
        "c.ExecutePreprocessor.timeout = 600\n"
        "c.Execute.timeout = 600\n"
    )
    for name in NAMES:
        (root / "source" / name).mkdir(parents=True)
        nbformat.write(build.exercise_source(EX_DIR / f"{name}.py"), root / "source" / name / f"{name}.ipynb")
        nbgrader(root, "generate_assignment", name, "--force")
    return root


def cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), {k: c.metadata.get("nbgrader", {}).get(k) for k in KEYS}) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_generate_assignment_equals_the_student_render(course, name):
    released = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
    student = nbformat.read(EX_DIR / f"{name}.ipynb", as_version=4)
    assert cells(released) == cells(student)
    assert any(c.metadata.get("nbgrader", {}).get("checksum") for c in released.cells)  # nbgrader really marked it


def test_autograde_scores_solutions_full_and_the_student_render_zero(course):
    for name in NAMES:
        for student, render in (
            ("solver", EX_DIR / "solutions" / f"{name}.ipynb"),
            ("blank", EX_DIR / f"{name}.ipynb"),
        ):
            target = course / "submitted" / student / name
            target.mkdir(parents=True)
            shutil.copy(render, target / f"{name}.ipynb")
        nbgrader(course, "autograde", name)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in NAMES:
            scores = {}
            for student in ("solver", "blank"):
                grades = gb.find_submission_notebook(name, name, student).grades
                checkers = [g for g in grades if g.cell.cell_type == "code"]
                answers = [g for g in grades if g.cell.cell_type == "markdown"]
                assert checkers and answers, name
                scores[student] = (
                    [g.auto_score for g in checkers],
                    [g.max_score for g in checkers],
                    [g.auto_score for g in answers],
                )
            auto, maximum, written = scores["solver"]
            assert auto == maximum, (name, auto)  # every checker cell: full marks
            assert all(s is None for s in written), name  # written answers wait for a human
            auto, maximum, written = scores["blank"]
            assert auto == [0.0] * len(maximum), (name, auto)  # the untouched render scores 0
            assert written == [0.0] * len(written), name  # unchanged answer cells score 0 automatically

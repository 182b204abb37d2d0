"""The instructor's path in three commands: an nbgrader course with every exercise released, then grading.

    python -m moe_edu.course.classroom                 # = make classroom: course folder, config, 12 assignments released
    python -m moe_edu.course.classroom grade           # collect, autograde, integrity scan (zeroes tampered cells)
    python -m moe_edu.course.classroom feedback        # after manual grading: feedback released, grades.csv

The course folder is `classroom/` in the repository (git-ignored) or `--course DIR` / `$MOE_EDU_COURSE`.
It holds `nbgrader_config.py` (course id, the exchange inside the folder, a cell timeout that fits the
slowest checker), `source/`, `release/`, `submitted/`, `autograded/`, `feedback/` and `gradebook.db`.
`--assignment NAME ...` limits any step to some assignments. nbgrader needs Python >= 3.11; every step
runs nbgrader's own command line (`python -m nbgrader ...`), printed as it goes, so an instructor can
repeat any step by hand (notebooks/exercises/README.md, "Running a class").
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from moe_edu.course.exercises import integrity
from moe_edu.course.exercises.core import TIME_LIMIT

ROOT = Path(__file__).resolve().parents[2]
EX_DIR = ROOT / "notebooks" / "exercises"
DEFAULT_COURSE = Path(os.environ.get("MOE_EDU_COURSE", ROOT / "classroom"))
COURSE_ID = "moe_edu"
# A checker cell makes at most 6 student calls (lru_hit_rate), each stopped after TIME_LIMIT = 10 s; the
# references take < 0.1 s in all (measured: 0.15 s for all 34 checkers on one CPU thread). 6 x 10 s plus
# margin for a loaded machine: 120 s, four times nbgrader's default 30 s, under which a correct answer
# needing 6 s per call scored 0 (the classroom review, N3). tests/test_classroom.py checks the bound.
CELL_TIMEOUT = 120

_spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def assignments() -> list[str]:
    """Every exercise assignment, in course order (`ex01_gating`, ..., `ex12_adapting`)."""
    return sorted(p.stem for p in EX_DIR.glob("ex[0-9][0-9]_*.py"))


def config_text(course: Path, course_id: str = COURSE_ID, exchange: Path | None = None) -> str:
    exchange = exchange or course / "exchange"
    return (
        "# Written by `python -m moe_edu.course.classroom` (make classroom); edit freely.\n"
        "c = get_config()  # noqa: F821 (nbgrader defines it)\n"
        f"c.CourseDirectory.course_id = {course_id!r}\n"
        f"c.CourseDirectory.root = {str(course.resolve())!r}\n"
        "# release / fetch / submit / collect go through this folder: on a shared machine (JupyterHub) it must\n"
        "# be writable by every student; elsewhere hand out release/ and copy submissions into submitted/.\n"
        f"c.Exchange.root = {str(exchange.resolve())!r}\n"
        f"# seconds per cell: a checker cell may call a student's function 6 times, up to {TIME_LIMIT:g} s each\n"
        f"c.Execute.timeout = {CELL_TIMEOUT}\n"
        f"c.ExecutePreprocessor.timeout = {CELL_TIMEOUT}\n"
    )


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `python -m nbgrader ARGS` in the course folder; raise with its output when it fails."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic`
    env.pop("NBGRADER_EXECUTION", None)
    print("$ nbgrader " + " ".join(args), flush=True)
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return run


def setup(course: Path, names: list[str], course_id: str = COURSE_ID, exchange: Path | None = None) -> None:
    """Course folder, nbgrader_config.py, every source written, generated and released."""
    course.mkdir(parents=True, exist_ok=True)
    (exchange or course / "exchange").mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(config_text(course, course_id, exchange))
    for name in names:
        target = course / "source" / name
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(build.exercise_source(EX_DIR / f"{name}.py"), target / f"{name}.ipynb")
        nbgrader(course, "generate_assignment", name, "--force")
        nbgrader(course, "release_assignment", name, "--force")
    print(f"\n{len(names)} assignments released from {course} (course id {course_id!r}).")
    print(
        "Students: nbgrader fetch_assignment <name> --course",
        course_id,
        "... nbgrader submit <name> --course",
        course_id,
    )
    print(f"Then: python -m moe_edu.course.classroom grade --course {course}")


def grade(course: Path, names: list[str]) -> list[integrity.NotebookResult]:
    """Collect and autograde every submission, then the integrity scan, applied to the gradebook."""
    for name in names:
        nbgrader(course, "collect", name, "--update")
        nbgrader(course, "autograde", name)
    graded = [p for name in names for p in sorted((course / "autograded").glob(f"*/{name}/*.ipynb"))]
    results = [integrity.scan_notebook(p) for p in graded]
    for r in results:
        print(f"{r.student} {r.assignment}: {r.score:g}/{r.max_score:g} checker points", end="")
        print(f"  FLAGGED: {'; '.join(r.flags)}" if r.flags else "  ok")
    if results and integrity.Gradebook is not None:
        changed = integrity.apply_to_gradebook(results, course / "gradebook.db")
        print(f"integrity scan: {changed} checker grades set to 0 in the gradebook")
    print("Next: grade the written answers in formgrader (`jupyter lab` in the course folder, Nbgrader > Manage")
    print(f"Assignments), then: python -m moe_edu.course.classroom feedback --course {course}")
    return results


def feedback(course: Path, names: list[str]) -> None:
    """Feedback HTML per submission, released to the exchange; every grade exported to grades.csv."""
    for name in names:
        nbgrader(course, "generate_feedback", name, "--force")
        nbgrader(course, "release_feedback", name)
    nbgrader(course, "export", "--to", "grades.csv")
    print(f"feedback in {course / 'feedback'}, grades in {course / 'grades.csv'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", nargs="?", default="setup", choices=("setup", "grade", "feedback"))
    parser.add_argument("--course", type=Path, default=DEFAULT_COURSE, help="course folder (default: %(default)s)")
    parser.add_argument("--course-id", default=COURSE_ID)
    parser.add_argument("--exchange", type=Path, help="exchange folder (default: COURSE/exchange)")
    parser.add_argument("--assignment", nargs="+", help="only these assignments (default: all 12)")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):
        print("nbgrader needs Python >= 3.11 (the course itself runs on 3.10 too)", file=sys.stderr)
        return 2
    names = args.assignment or assignments()
    unknown = sorted(set(names) - set(assignments()))
    if unknown:
        parser.error(f"unknown assignments {unknown}; choose from {assignments()}")
    course = args.course.resolve()
    if args.step == "setup":
        setup(course, names, args.course_id, args.exchange)
    elif args.step == "grade":
        results = grade(course, names)
        return 1 if any(r.flags for r in results) else 0
    else:
        feedback(course, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())

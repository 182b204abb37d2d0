"""Build the course notebooks from their jupytext `py:percent` twins.

    python tools/build_notebooks.py                 # every notebook: convert + execute in place
    python tools/build_notebooks.py notebooks/03_*.py   # only these sources
    python tools/build_notebooks.py --check         # no execution: fail if a committed .ipynb is stale

Course notebooks: `notebooks/NN_name.py` -> `notebooks/NN_name.ipynb`.
Exercises: one source `notebooks/exercises/exNN_name.py` with nbgrader's markers
(`### BEGIN SOLUTION` / `### END SOLUTION` lines in code, `<!-- BEGIN SOLUTION -->` /
`<!-- END SOLUTION -->` lines in markdown: nbgrader matches "BEGIN SOLUTION" anywhere in a line)
-> a student render `notebooks/exercises/exNN_name.ipynb` (each solution region replaced exactly
as nbgrader's ClearSolutions does: `# YOUR CODE HERE` / `raise NotImplementedError()` in code,
`YOUR ANSWER HERE` in markdown) and a solution render
`notebooks/exercises/solutions/exNN_name.ipynb` (marker lines removed). Both carry nbgrader
cell metadata (schema 3): code solution cells, manually graded written answers (1 point), and
checker cells as read-only autograder test cells (1 point; a failing checker raises under
nbgrader, see `moe_edu.course.exercises.core`). `--nbgrader DIR` writes the unexecuted sources with
their markers, ready for nbgrader's `source/<assignment>/` folder; `tests/test_nbgrader.py` runs
`nbgrader generate_assignment` and `autograde` on them.

Rules for an exercise source: a solution region's marker lines stand alone (one marker per
line, BEGIN and END in the same cell, not nested); a checker cell calls `ex.check_<name>(...)`;
nothing else in a source may contain the words BEGIN SOLUTION / END SOLUTION.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
# ipykernel's own kernelspec, exactly: JupyterLab marks a notebook "modified" on opening when they differ
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
EX_DIR = NB_DIR / "exercises"
APP_DIR = NB_DIR / "apps"  # standalone pages (the Voila routing explorer), built like course notebooks


def sources(selection: list[str]) -> list[Path]:
    if selection:
        return [Path(p).resolve() for p in selection]
    course = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
    exercises = sorted(EX_DIR.glob("ex[0-9][0-9]_*.py"))
    return course + sorted(APP_DIR.glob("*.py")) + exercises


CHECKER_CALL = re.compile(r"\.check_\w+\(")
SETUP_IMPORT = "from moe_edu.course.exercises import"  # the setup cell (the first to import the checkers)
BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"  # nbgrader's default delimiters (substring match per line)
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]  # nbgrader's ClearSolutions.code_stub["python"]
TEXT_STUB = ["YOUR ANSWER HERE"]  # nbgrader's ClearSolutions.text_stub


def mark_nbgrader(nb: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """nbgrader metadata: code solutions, manually graded written answers, autograded checker cells."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and BEGIN in cell.source:
            meta = {"grade": False, "locked": False, "solution": True}
        elif cell.cell_type == "markdown" and BEGIN in cell.source:
            meta = {"grade": True, "locked": False, "points": 1, "solution": True}
        elif cell.cell_type == "code" and CHECKER_CALL.search(cell.source):
            meta = {"grade": True, "locked": True, "points": 1, "solution": False}
        elif cell.cell_type == "code" and SETUP_IMPORT in cell.source:
            # read-only: it imports the checkers (fixing the grading flag) before any student code runs
            meta = {"grade": False, "locked": True, "solution": False}
        else:
            continue
        cell.metadata["nbgrader"] = {"grade_id": f"{stem}-cell-{i:02d}", "schema_version": 3, "task": False, **meta}
    return nb


def clear_solutions(source: str, stub: list[str]) -> str:
    """Replace every BEGIN/END SOLUTION region by `stub`, indented like the BEGIN line: the
    algorithm of nbgrader's ClearSolutions._replace_solution_region, line for line."""
    out, inside = [], False
    for line in source.split("\n"):
        if BEGIN in line:
            if inside:
                raise ValueError(f"nested {BEGIN!r} in cell:\n{source}")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in stub)
        elif END in line:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"no {END!r} in cell:\n{source}")
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        cell.source = clear_solutions(cell.source, CODE_STUB if cell.cell_type == "code" else TEXT_STUB)
    return nb


def solution_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        cell.source = "\n".join(line for line in cell.source.split("\n") if BEGIN not in line and END not in line)
    return nb


def exercise_source(src: Path) -> nbformat.NotebookNode:
    """The exercise source as an nbgrader source notebook: markers kept, metadata set, not executed."""
    nb = jupytext.read(src)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = KERNELSPEC
    return mark_nbgrader(nb, src.stem)


def renders(src: Path) -> list[tuple[Path, nbformat.NotebookNode]]:
    """(target .ipynb, unexecuted notebook) pairs that `src` produces."""
    nb = jupytext.read(src)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = KERNELSPEC
    if src.parent == EX_DIR:
        nb = exercise_source(src)
        return [
            (src.with_suffix(".ipynb"), student_version(nb)),
            (EX_DIR / "solutions" / (src.stem + ".ipynb"), solution_version(nb)),
        ]
    return [(src.with_suffix(".ipynb"), nb)]


def cell_sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> None:
    env_backup = dict(os.environ)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="py:percent sources (default: all)")
    parser.add_argument("--check", action="store_true", help="only check that committed notebooks match sources")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument(
        "--nbgrader",
        metavar="DIR",
        type=Path,
        help="only write the exercise sources, markers kept, as nbgrader source notebooks into DIR",
    )
    args = parser.parse_args(argv)
    if args.nbgrader:
        for src in sources(args.paths):
            if src.parent == EX_DIR:
                args.nbgrader.mkdir(parents=True, exist_ok=True)
                nbformat.write(exercise_source(src), args.nbgrader / (src.stem + ".ipynb"))
                print(f"wrote {args.nbgrader / (src.stem + '.ipynb')}")
        return 0
    stale = []
    for src in sources(args.paths):
        for target, nb in renders(src):
            rel = target.relative_to(ROOT)
            if args.check:
                if not target.exists() or cell_sources(nbformat.read(target, as_version=4)) != cell_sources(nb):
                    stale.append(str(rel))
                continue
            start = time.perf_counter()
            execute(nb, target.parent, args.timeout)
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
            print(f"built {rel} in {time.perf_counter() - start:.1f} s", flush=True)
    if stale:
        print("out of date with their py:percent source (run `make notebooks`):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

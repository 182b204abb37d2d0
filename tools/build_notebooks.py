"""Build the course notebooks from their jupytext `py:percent` twins.

    python tools/build_notebooks.py                 # every notebook: convert + execute in place
    python tools/build_notebooks.py notebooks/03_*.py   # only these sources
    python tools/build_notebooks.py --check         # no execution: fail if a committed .ipynb is stale

Course notebooks: `notebooks/NN_name.py` -> `notebooks/NN_name.ipynb`.
Exercises: one source `notebooks/exercises/exNN_name.py` with nbgrader-style markers
(`### BEGIN SOLUTION` / `### END SOLUTION` in code, `<!-- BEGIN SOLUTION -->` /
`<!-- END SOLUTION -->` in markdown) -> a student render `notebooks/exercises/exNN_name.ipynb`
(solutions replaced by `raise NotImplementedError()` / "YOUR ANSWER HERE") and a solution
render `notebooks/exercises/solutions/exNN_name.ipynb`. Both carry nbgrader cell metadata
(solution cells, manually graded answers, read-only checker cells);
`--nbgrader DIR` also writes the unexecuted sources with their markers, ready for
nbgrader's `source/<assignment>/` folder.
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
EX_DIR = NB_DIR / "exercises"
CODE_SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*### END SOLUTION[^\n]*\n?", re.M | re.S)
MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.S)


def sources(selection: list[str]) -> list[Path]:
    if selection:
        return [Path(p).resolve() for p in selection]
    course = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
    exercises = sorted(EX_DIR.glob("ex[0-9][0-9]_*.py"))
    return course + exercises


CHECKER_CALL = re.compile(r"\.check_\w+\(")


def mark_nbgrader(nb: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """nbgrader metadata: code solutions, manually graded written answers, read-only checker cells."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            meta = {"grade": False, "locked": False, "solution": True}
        elif cell.cell_type == "markdown" and "<!-- BEGIN SOLUTION -->" in cell.source:
            meta = {"grade": True, "locked": False, "points": 1, "solution": True}
        elif cell.cell_type == "code" and CHECKER_CALL.search(cell.source):
            meta = {"grade": False, "locked": True, "solution": False}
        else:
            continue
        cell.metadata["nbgrader"] = {"grade_id": f"{stem}-cell-{i:02d}", "schema_version": 3, "task": False, **meta}
    return nb


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = CODE_SOLUTION.sub(
                lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()\n", cell.source
            ).rstrip("\n")
        elif cell.cell_type == "markdown":
            cell.source = MD_SOLUTION.sub("*YOUR ANSWER HERE*", cell.source)
    return nb


def solution_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[^\n]*\n?", "", cell.source, flags=re.M).rstrip("\n")
        elif cell.cell_type == "markdown":
            cell.source = re.sub(r"<!-- (BEGIN|END) SOLUTION -->\n?", "", cell.source)
    return nb


def renders(src: Path) -> list[tuple[Path, nbformat.NotebookNode]]:
    """(target .ipynb, unexecuted notebook) pairs that `src` produces."""
    nb = jupytext.read(src)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    if src.parent == EX_DIR:
        nb = mark_nbgrader(nb, src.stem)
        return [(src.with_suffix(".ipynb"), student_version(nb)),
                (EX_DIR / "solutions" / (src.stem + ".ipynb"), solution_version(nb))]
    return [(src.with_suffix(".ipynb"), nb)]


def cell_sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> None:
    env_backup = dict(os.environ)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="py:percent sources (default: all)")
    parser.add_argument("--check", action="store_true", help="only check that committed notebooks match sources")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--nbgrader", metavar="DIR", type=Path,
                        help="only write the exercise sources, markers kept, as nbgrader source notebooks into DIR")
    args = parser.parse_args(argv)
    if args.nbgrader:
        for src in sources(args.paths):
            if src.parent == EX_DIR:
                nb = jupytext.read(src)
                nb.metadata.pop("jupytext", None)
                args.nbgrader.mkdir(parents=True, exist_ok=True)
                nbformat.write(mark_nbgrader(nb, src.stem), args.nbgrader / (src.stem + ".ipynb"))
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

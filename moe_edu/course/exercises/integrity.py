"""Post-autograde integrity scan: credit only for checker cells that printed moe_edu's genuine ✓ line.

    python -m moe_edu.course.exercises.integrity course/autograded            # report, exit 1 if flagged
    python -m moe_edu.course.exercises.integrity course/autograded --gradebook course/gradebook.db --apply

nbgrader scores a test cell full when it raises nothing. A checker cell that was silenced (a student
rebinding the checker, switching the grading flag off, redirecting output) raises nothing either, so
nbgrader's score alone cannot be trusted. This scan reads the executed notebooks and, per checker cell:

* credit (the cell's points) only when its output is exactly one line, equal to the line the genuine
  checker prints on success, `✓ <name>: all <N> cases pass` (N from the registry, here, out of process);
* a **flag** when nbgrader would give credit (no error in the cell) but the line is missing or wrong,
  when the checker cell's source is not the generated one, or when a student cell contains a pattern
  that tampers with grading (`NBGRADER_EXECUTION`, `os.environ`, rebinding `ex`, `sys.modules`, ...).

`--apply` writes 0 as the manual score of every checker cell denied credit into nbgrader's gradebook
(needs nbgrader), so `nbgrader export` and feedback agree with the scan. What it cannot catch: see
"What in-process grading can and cannot prevent" in notebooks/exercises/README.md.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from moe_edu.course.exercises import load_all

try:  # nbgrader is optional (Python >= 3.11); only `--apply` needs it
    from nbgrader.api import Gradebook
except ImportError:  # pragma: no cover - depends on the environment
    Gradebook = None

CHECKER_SOURCE = re.compile(
    r"\Afrom moe_edu\.course\.exercises import (?P<topic>\w+) as ex(?:\s*#[^\n]*)?\n\s*\n?"
    r"ex\.check_(?P<name>\w+)\(\w+\)\s*\Z"
)
# what a student's own cells have no reason to contain: each one is a way to tamper with grading
TAMPERING = {
    "NBGRADER_EXECUTION": r"NBGRADER_EXECUTION",
    "os.environ / putenv": r"\benviron\b|\b(?:un)?putenv\b",
    "rebinds ex or a checker": r"(?m)^\s*ex\s*=|\bex\.\w+\s*=(?!=)|\bcheck_\w+\s*=(?!=)",
    "checker internals": r"\bGRADING\b|\bORIGINAL\b|\bSealedModule\b|\.__dict__|\bvars\s*\(\s*ex\b|__class__",
    "setattr / delattr": r"\b(?:setattr|delattr)\s*\(",
    "sys.modules / reload": r"\bsys\.modules\b|\breload\s*\(|\bimportlib\b",
    "stdout redirection": r"\bsys\.std(?:out|err)\s*=|redirect_std(?:out|err)",
    "prints a checker symbol": r"[✓✗○]",
    "calls the reference": r"\.reference\s*\(|\bexercises\.core\b",
}


@dataclass
class CellResult:
    grade_id: str
    name: str
    points: float
    credit: float
    nbgrader_credit: bool  # no error output: what nbgrader's autograde gave
    reason: str  # "" when credited


@dataclass
class NotebookResult:
    path: Path
    student: str
    assignment: str
    cells: list[CellResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(c.credit for c in self.cells)

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.cells)


def genuine_line(topic: str, name: str) -> str | None:
    """The one line moe_edu's checker `topic.name` prints when every case passes (None: no such checker)."""
    ex = load_all().get(f"{topic}.{name}")
    return None if ex is None else f"✓ {name}: all {len(list(ex.cases()))} cases pass"


def output_lines(cell) -> tuple[list[str], bool]:
    """The cell's output as text lines (stream text, text/plain of displays), and whether it holds an error."""
    lines, error = [], False
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            text = out.text
        elif out.output_type in ("display_data", "execute_result"):
            text = out.get("data", {}).get("text/plain", "")
        else:  # error
            error = True
            text = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
        lines.extend(line for line in str(text).splitlines() if line.strip())
    return lines, error


def _is_checker(cell) -> bool:
    """An autograded test cell by nbgrader's metadata; without metadata, a cell calling `ex.check_<name>(`."""
    if cell.cell_type != "code":
        return False
    meta = cell.metadata.get("nbgrader")
    if meta:
        return bool(meta.get("grade")) and not meta.get("solution")
    return re.search(r"^ex\.check_\w+\(", cell.source, re.M) is not None


def scan_notebook(path: Path, student: str = "", assignment: str = "") -> NotebookResult:
    nb = nbformat.read(path, as_version=4)
    result = NotebookResult(path, student or path.parent.parent.name, assignment or path.parent.name)
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if _is_checker(cell):
            grade_id = meta.get("grade_id", f"cell-{i}")
            points = float(meta.get("points", 1))
            lines, error = output_lines(cell)
            m = CHECKER_SOURCE.match(cell.source.strip())
            name = m.group("name") if m else grade_id
            expected = genuine_line(m.group("topic"), name) if m else None
            if not m or expected is None:
                reason = "the checker cell's source is not the generated one"
                result.flags.append(f"{grade_id}: {reason}")
            elif lines == [expected]:
                reason = ""
            elif not lines:
                reason = "no checker line (silenced checker?)"
            elif len(lines) > 1:
                reason = f"{len(lines)} output lines, expected exactly one ✓ line"
            elif lines[0].startswith("✓"):
                reason = f"a ✓ line that is not the genuine one: {lines[0]!r}"
            else:
                reason = lines[0][:120]
            cell_result = CellResult(grade_id, name, points, 0.0 if reason else points, not error, reason)
            result.cells.append(cell_result)
            if reason and not error:  # nbgrader gave credit where the checker did not print its ✓ line
                result.flags.append(f"{grade_id} ({name}): nbgrader credit withheld: {reason}")
        elif cell.cell_type == "code" and not meta.get("locked"):
            for label, pattern in TAMPERING.items():
                if re.search(pattern, cell.source):
                    result.flags.append(f"cell {i}: {label}")
    return result


def notebooks(paths: list[Path]) -> list[Path]:
    found = []
    for p in paths:
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            found.append(p)
    return found


def apply_to_gradebook(results: list[NotebookResult], db: Path) -> int:
    """Manual score 0 for every checker cell denied credit; returns how many grades changed."""
    if Gradebook is None:
        raise SystemExit("--apply needs nbgrader (Python >= 3.11)")
    changed = 0
    with Gradebook(f"sqlite:///{db}") as gb:
        for r in results:
            for c in r.cells:
                if c.credit == 0 and c.nbgrader_credit:
                    grade = gb.find_grade(c.grade_id, r.path.stem, r.assignment, r.student)
                    grade.manual_score = 0.0
                    changed += 1
        gb.db.commit()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="autograded notebooks or folders (autograded/)")
    parser.add_argument("--csv", type=Path, help="write one row per checker cell here")
    parser.add_argument("--gradebook", type=Path, help="nbgrader's gradebook.db (with --apply)")
    parser.add_argument("--apply", action="store_true", help="set a manual score of 0 where credit is denied")
    args = parser.parse_args(argv)
    results = [scan_notebook(p) for p in notebooks(args.paths)]
    flagged = 0
    for r in results:
        print(f"{r.student} {r.assignment}: {r.score:g}/{r.max_score:g} checker points", end="")
        print(f"  FLAGGED: {'; '.join(r.flags)}" if r.flags else "  ok")
        flagged += bool(r.flags)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["student", "assignment", "grade_id", "checker", "points", "credit", "reason"])
            for r in results:
                for c in r.cells:
                    w.writerow([r.student, r.assignment, c.grade_id, c.name, c.points, c.credit, c.reason])
    if args.apply:
        if not args.gradebook:
            parser.error("--apply needs --gradebook")
        print(f"gradebook: {apply_to_gradebook(results, args.gradebook)} checker grades set to 0")
    print(f"{len(results)} notebooks, {flagged} flagged")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())

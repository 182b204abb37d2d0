"""The exercise notebooks: renders up to date with their one source, no solution in the student
render, checker cells committed as "not attempted" (student) and "✓" (solutions)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
EX_DIR = ROOT / "notebooks" / "exercises"
NAMES = sorted(p.stem for p in EX_DIR.glob("ex[0-9][0-9]_*.py"))  # every exercise source
CHECK = re.compile(r"^ex\.check_\w+\(", re.M)

spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def student(name: str):
    return nbformat.read(EX_DIR / f"{name}.ipynb", as_version=4)


def solution(name: str):
    return nbformat.read(EX_DIR / "solutions" / f"{name}.ipynb", as_version=4)


def shown(cell) -> list[str]:
    """A cell's outputs as text lines: printed streams, and checker lines shown as display data
    (text/plain, with a coloured text/html twin)."""
    lines = []
    for o in cell.outputs:
        if o.output_type == "stream":
            lines.extend(o.text.splitlines())
        elif o.output_type == "display_data" and "text/plain" in o.data:
            assert "text/html" in o.data and o.data["text/plain"][0] in "✓✗○", o.data
            lines.append(o.data["text/plain"])
    return lines


def checker_outputs(nb) -> list[str]:
    outs = []
    for cell in nb.cells:
        if cell.cell_type == "code" and CHECK.search(cell.source):
            assert len(cell.outputs) == 1 and len(shown(cell)) == 1, cell.source
            outs.append(shown(cell)[0] + "\n")
    return outs


def test_checker_lines_are_coloured_in_html_with_the_same_plain_text():
    nb = solution("ex01_gating")
    data = [o.data for c in nb.cells for o in c.get("outputs", []) if o.output_type == "display_data"]
    assert data and all(d["text/plain"] in d["text/html"] and "#1a7f37" in d["text/html"] for d in data)
    todo = [
        o.data for c in student("ex01_gating").cells for o in c.get("outputs", []) if o.output_type == "display_data"
    ]
    assert todo and all("#6e7781" in d["text/html"] for d in todo)


def test_every_course_notebook_from_01_to_05_has_exercises():
    assert {n[:4] for n in NAMES} >= {"ex01", "ex02", "ex03", "ex04", "ex05"}


@pytest.mark.parametrize("name", NAMES)
def test_renders_are_up_to_date(name, capsys):
    assert build.main(["--check", str(EX_DIR / f"{name}.py")]) == 0, capsys.readouterr().out


def test_check_notices_a_stale_render(tmp_path, monkeypatch, capsys):
    src = tmp_path / "ex01_gating.py"
    shutil.copy(EX_DIR / "ex01_gating.py", src)
    (tmp_path / "solutions").mkdir()
    shutil.copy(EX_DIR / "ex01_gating.ipynb", tmp_path)
    shutil.copy(EX_DIR / "solutions" / "ex01_gating.ipynb", tmp_path / "solutions")
    monkeypatch.setattr(build, "EX_DIR", tmp_path)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    assert build.main(["--check", str(src)]) == 0
    src.write_text(src.read_text().replace("return x.float() @ w.float().T", "return x.float() @ w.float().t()"))
    assert build.main(["--check", str(src)]) == 1
    assert "ex01_gating.ipynb" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_student_render_hides_solutions(name):
    text = (EX_DIR / f"{name}.py").read_text()
    blocks = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", text, re.S)
    answers = re.findall(r"<!-- BEGIN SOLUTION -->(.*?)<!-- END SOLUTION -->", text, re.S)
    assert blocks and answers
    nb = student(name)
    code = "\n".join(c.source for c in nb.cells)
    only_code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "SOLUTION" not in code
    assert only_code.count("raise NotImplementedError()") == len(blocks)
    assert code.count("YOUR ANSWER HERE") == len(answers)
    for block in blocks:
        for line in block.splitlines():
            if line.strip() and not line.strip().startswith(("#", "return y")):
                assert line.strip() not in code, line
    assert "**Answer.**" not in code
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Answer" not in outputs


@pytest.mark.parametrize("name", NAMES)
def test_committed_checker_lines(name):
    todo, done = checker_outputs(student(name)), checker_outputs(solution(name))
    assert todo and len(todo) == len(done)
    assert all("not attempted" in line and line.count("\n") == 1 for line in todo)
    assert all(line.startswith("✓") and line.count("\n") == 1 for line in done)


@pytest.mark.parametrize("name", NAMES)
def test_renders_ran_without_errors_and_carry_nbgrader_metadata(name):
    for nb in (student(name), solution(name)):
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        kinds = [c.metadata.get("nbgrader", {}) for c in nb.cells]
        assert any(k.get("solution") and not k.get("grade") for k in kinds)  # code to write
        assert any(k.get("solution") and k.get("grade") for k in kinds)  # a written answer, graded by hand
        assert any(k.get("locked") for k in kinds)  # read-only checker cells
        ids = [k["grade_id"] for k in kinds if k]
        assert len(ids) == len(set(ids))


def test_at_least_twelve_exercises():
    assert sum(len(checker_outputs(student(n))) for n in NAMES) >= 12


def _norm(line: str) -> str:
    return re.sub(r"\s+", "", line.split("#")[0])


@pytest.mark.parametrize("name", NAMES)
def test_no_hint_contains_a_solution_line(name):
    import importlib

    text = (EX_DIR / f"{name}.py").read_text()
    topic = re.search(r"from moe_edu\.course\.exercises import (\w+) as ex", text).group(1)
    by_function = importlib.import_module(f"moe_edu.course.exercises.{topic}").exercises.exercises
    for m in re.finditer(r"def (\w+)\(.*?### BEGIN SOLUTION\n(.*?)### END SOLUTION", text, re.S):
        ex = by_function.get(m.group(1))
        if ex is None:  # a helper that is not itself a checked exercise
            continue
        hints = [_norm(h) for h in ex.hints]
        for line in map(_norm, m.group(2).splitlines()):
            body = line.removeprefix("return")
            if len(body) >= 12:
                assert not any(body in h for h in hints), (m.group(1), line)


def test_readme_table_lists_every_exercise_source():
    rows = [line for line in (EX_DIR / "README.md").read_text().splitlines() if line.startswith("| `ex")]
    assert sorted(line.split("`")[1] for line in rows) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_student_render_says_when_it_falls_back_to_the_reference(name):
    nb = student(name)
    for cell in nb.cells:
        if cell.cell_type == "code" and re.search(r"^\S.*ex\.use\(", cell.source, re.M):
            assert any("the cells below use moe_edu's reference" in line for line in shown(cell)), cell.source

"""The teacher's guide (notebooks/exercises/TEACHING.md) covers notebooks 00-12, every exercise and
written answer, and every checker line it quotes names a real exercise and one of its real cases."""

from __future__ import annotations

import re
from pathlib import Path

from moe_edu.course.exercises import load_all

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "notebooks" / "exercises" / "TEACHING.md").read_text()
SOURCES = sorted((ROOT / "notebooks" / "exercises").glob("ex[0-9][0-9]_*.py"))


def test_a_section_per_course_notebook_with_its_parts():
    sections = re.split(r"^## ", GUIDE, flags=re.M)[1:]
    numbers = [s[:2] for s in sections]
    assert numbers == [f"{n:02d}" for n in range(13)]
    for section in sections:
        for part in (
            "**Outcomes**",
            "**Time**",
            "**Prerequisites**",
            "**Exercise set**",
            "**Common mistakes",
            "**Rubric",
        ):
            assert part in section, (section[:30], part)


def test_every_exercise_and_written_answer_is_covered():
    for ex in load_all().values():
        assert f"`{ex.name}`" in GUIDE, ex.name
    for src in SOURCES:
        for number in re.findall(r"^# ## Open question (\d+\.\d+)", src.read_text(), re.M):
            assert f"**Rubric, {number} " in GUIDE, (src.name, number)


def test_quoted_checker_lines_name_real_cases():
    exercises = {ex.name: ex for ex in load_all().values()}
    quoted = re.findall(r"`✗ (\w+): case (\d+) \(([^`]*?)(?:\)|\.\.\.)", GUIDE)
    assert len(quoted) >= 40
    for name, n, label in quoted:
        labels = [c.label for c in exercises[name].cases()]
        assert int(n) <= len(labels), (name, n)
        assert label == "..." or labels[int(n) - 1].startswith(label.rstrip(".").rstrip()), (name, n, label)

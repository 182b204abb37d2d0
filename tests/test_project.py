"""The project's own set-up: environment.yml agrees with pyproject, notebooks agree with their twins."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ


def names(requirements):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = names(project["dependencies"]) | names(project["optional-dependencies"]["notebooks"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = names(d for d in env["dependencies"] if isinstance(d, str))
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert {CONDA_NAMES.get(n, n) for n in wanted} <= conda, "environment.yml lacks a pyproject dependency"
    assert conda - {"python", "pip"} <= {CONDA_NAMES.get(n, n) for n in wanted}, "environment.yml has extras"
    assert any(p.startswith("-e .") for p in pip), "environment.yml must install the package itself"


def test_ci_runs_readmes_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", (ROOT / ".ci/run").read_text(), re.M)
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M)


def test_committed_notebooks_match_their_py_percent_twins():
    result = subprocess.run([sys.executable, str(ROOT / "tools/build_notebooks.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_notebook_has_a_twin_and_every_twin_a_notebook():
    nbs = {p.with_suffix("") for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    twins = {p.with_suffix("") for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")}
    assert nbs == twins

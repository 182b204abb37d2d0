"""The project's own set-up: dependency lists agree, the lock is honest, notebooks agree with their twins."""

import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the `tomli` backport is a test dependency there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ


def requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {r.name.lower(): r for r in reqs}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_matches_pyproject():
    wanted = requirements(project()["dependencies"] + project()["optional-dependencies"]["notebooks"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = requirements(
        d.replace(" ", "") for d in env["dependencies"] if isinstance(d, str) and d not in ("python=3.11", "pip")
    )
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert {CONDA_NAMES.get(n, n) for n in wanted} == set(conda), (
        "environment.yml and pyproject list different packages"
    )
    for name, req in wanted.items():
        assert str(conda[CONDA_NAMES.get(name, name)].specifier) == str(req.specifier), f"{name}: floors differ"
    assert any(p.startswith("-e .") for p in pip), "environment.yml must install the package itself"


def lock_pins() -> dict[str, list[tuple[Version, str]]]:
    """name -> [(version, environment marker or "")] from requirements/lock.txt."""
    pins: dict[str, list[tuple[Version, str]]] = {}
    for line in (ROOT / "requirements/lock.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*(.*))?$", line)
        if m:
            pins.setdefault(m[1].lower().replace("_", "-"), []).append((Version(m[2]), m[3] or ""))
    return pins


def test_lock_input_lists_exactly_the_projects_requirements_but_torch():
    extras = project()["optional-dependencies"]
    declared = requirements(project()["dependencies"] + extras["notebooks"] + extras["test"] + extras["explorer"])
    lock_in = [
        ln.strip()
        for ln in (ROOT / "requirements/lock.in").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    locked = requirements(lock_in)
    assert set(locked) == set(declared) - {"torch"}, "requirements/lock.in and pyproject list different packages"
    for name, req in locked.items():
        assert str(req.specifier) == str(declared[name].specifier), f"{name}: lock.in and pyproject floors differ"


def test_lock_pins_satisfy_the_floors_and_leave_torch_to_the_makefile():
    pins = lock_pins()
    assert not any(n == "torch" or n.startswith("nvidia-") for n in pins), (
        "torch is pinned in the Makefile, not the lock"
    )
    extras = project()["optional-dependencies"]
    for req in requirements(project()["dependencies"] + extras["test"] + extras["notebooks"]).values():
        if req.name == "torch":
            continue
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements/lock.txt (run `make lock`)"
        for version, marker in pins[name]:
            assert version in req.specifier, f"lock pins {name}=={version} ({marker}) outside {req.specifier}"
    torch_floor = requirements(project()["dependencies"])["torch"].specifier
    for path in ("Makefile", ".ci/run"):
        pinned = re.search(r"torch==([0-9.]+)", (ROOT / path).read_text())
        assert pinned and Version(pinned[1]) in torch_floor, f"{path} must pin a torch within {torch_floor}"


def test_make_help_lists_every_target():
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M)[1].split())
    shown = subprocess.run(["make", "--no-print-directory", "help"], capture_output=True, text=True, cwd=ROOT).stdout
    listed = set(re.findall(r"^make (\S+)", shown, re.M))
    assert phony == listed, f"not in `make help`: {sorted(phony - listed)}; not .PHONY: {sorted(listed - phony)}"


def test_ci_runs_readmes_test_command():
    assert "make test" in (ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", (ROOT / ".ci/run").read_text(), re.M)
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M)


def test_committed_notebooks_match_their_py_percent_twins():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/build_notebooks.py"), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_notebook_has_a_twin_and_every_twin_a_notebook():
    for pattern in ("[0-9][0-9]_*", "apps/*"):
        nbs = {p.with_suffix("") for p in (ROOT / "notebooks").glob(f"{pattern}.ipynb")}
        twins = {p.with_suffix("") for p in (ROOT / "notebooks").glob(f"{pattern}.py")}
        assert nbs == twins, pattern


# Imports inside functions hide dependencies and cycles; the one allowed: `MixtralConfig.to_hf` needs
# transformers, which takes seconds to import and is only needed for interop.
DEFERRED_ALLOWED = {("moe_edu/config.py", "transformers")}


def test_library_imports_at_module_level_only():
    import ast

    found = []
    for path in sorted((ROOT / "moe_edu").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        module = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                        if (rel, (module or "").split(".")[0]) not in DEFERRED_ALLOWED:
                            found.append(f"{rel}:{inner.lineno} {module}")
    assert not found, f"imports below module level: {found}"

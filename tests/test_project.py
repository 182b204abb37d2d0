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
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
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
    declared = requirements(
        project()["dependencies"] + extras["notebooks"] + extras["test"] + extras["explorer"] + extras["book"]
    )
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


CORE = {
    "__init__",
    "accounting",
    "analysis",
    "attention",
    "block_sparse",
    "capacity",
    "config",
    "dispatch",
    "experts",
    "generation",
    "grouped_mm",
    "layouts",
    "loading",
    "losses",
    "model",
    "moe_block",
    "norm",
    "parallel",
    "presets",
    "rope",
    "routing",
    "tokenizer",
    "train",
    "validation",
}  # `train` is the thin `python -m moe_edu.train` entry point (DESIGN.md keeps the command at that address)
SUBPACKAGES = {"adapting", "course", "data", "experiments", "io", "serving", "training", "variants"}
PERIPHERY = {"adapting", "course", "experiments", "io", "serving", "training"}


def _relative_imports(path):
    """(first package part, line) of every import of a moe_edu module in `path`, resolved from its location."""
    import ast

    rel = path.relative_to(ROOT / "moe_edu").with_suffix("").parts
    package = rel[:-1]  # a module's package, or for an __init__ the package itself
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package)[: len(package) - (node.level - 1)] if node.level > 1 else list(package)
            parts = base + (node.module.split(".") if node.module else [])
            if not parts:  # `from . import x`
                parts = [alias.name for alias in node.names][:1]
            yield parts[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("moe_edu."):
            yield node.module.split(".")[1], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("moe_edu."):
                    yield alias.name.split(".")[1], node.lineno


def test_top_level_is_the_flat_core_plus_named_subpackages():
    modules = {p.stem for p in (ROOT / "moe_edu").glob("*.py")}
    packages = {p.parent.name for p in (ROOT / "moe_edu").glob("*/__init__.py")}
    assert modules == CORE, f"unexpected top-level modules: {sorted(modules ^ CORE)}"
    assert packages == SUBPACKAGES, sorted(packages ^ SUBPACKAGES)


def test_the_core_imports_no_subpackage_of_the_periphery():
    found = []
    for name in sorted(CORE - {"__init__", "train"}):
        path = ROOT / "moe_edu" / f"{name}.py"
        found += [f"{name}.py:{line} imports {first}" for first, line in _relative_imports(path) if first in PERIPHERY]
    for path in sorted((ROOT / "moe_edu" / "variants").glob("*.py")):
        found += [
            f"variants/{path.name}:{line} imports {first}"
            for first, line in _relative_imports(path)
            if first in PERIPHERY
        ]
    assert not found, found


def test_nothing_outside_course_imports_course():
    found = []
    for path in sorted((ROOT / "moe_edu").rglob("*.py")):
        rel = path.relative_to(ROOT / "moe_edu")
        if rel.parts[0] == "course":
            continue
        found += [f"{rel}:{line}" for first, line in _relative_imports(path) if first == "course"]
        text = path.read_text()
        if "__import__(" in text or ("import_module(" in text and rel.as_posix() != "__init__.py"):
            found.append(f"{rel}: dynamic import")
    assert not found, found
    # the package root's only reach into course/: the three lazy names of DESIGN.md's stable API
    import moe_edu

    assert set(moe_edu._LAZY) == {"RoutingExplorer", "render_routing_html", "trace_routing"}


def test_committed_notebooks_carry_ipykernels_own_kernelspec():
    """JupyterLab marks a notebook "modified" on opening when its kernelspec differs from the installed kernel's."""
    import json

    from jupyter_client.kernelspec import KernelSpecManager

    installed = KernelSpecManager().get_kernel_spec("python3")
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert spec == {"display_name": installed.display_name, "language": "python", "name": "python3"}, path

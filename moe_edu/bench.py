"""`python -m moe_edu.bench`: the CPU dispatch benchmark's documented command.

The benchmark is tooling, not library: it lives in `benchmarks/cpu_dispatch.py` of a checkout
and writes to `--out` (default `./benchmarks/results`). This entry point runs that file from
the current directory, so call it from the repository root (as `make bench` does).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path("benchmarks") / "cpu_dispatch.py"  # relative to the working directory


def load(root: Path | None = None) -> ModuleType:
    """Import `benchmarks/cpu_dispatch.py` under `root` (default: the working directory)."""
    path = (root or Path.cwd()) / SCRIPT
    if not path.is_file():
        raise SystemExit(
            f"python -m moe_edu.bench runs {SCRIPT} of a moe_edu checkout; "
            f"{path} does not exist: run it from the repository root"
        )
    spec = importlib.util.spec_from_file_location("cpu_dispatch", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> list:
    """Run the benchmark with `argv` (see `python -m moe_edu.bench --help`); returns its results."""
    return load().main(argv)


if __name__ == "__main__":
    main()

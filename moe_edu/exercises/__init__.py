"""The exercise checkers' old address, kept importable (stable API: `moe_edu.exercises.<topic>.check`).

The checkers are course material and live in `moe_edu.course.exercises`. Importing this package
registers that package and each of its modules under the old names too, so
`import moe_edu.exercises.gating` returns the very same module object (no second copy).
"""

import importlib
import sys

from moe_edu.course import exercises as _exercises

for _name in (*_exercises.MODULES, "core", "calling"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"{_exercises.__name__}.{_name}")
sys.modules[__name__] = _exercises

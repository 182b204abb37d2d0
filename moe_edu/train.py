"""`python -m moe_edu.train`: the documented training command, a thin entry point.

The command's code is `moe_edu.experiments.train.main`; the training itself is
`moe_edu.training.run.train`.
"""

import sys

from .experiments.train import main

if __name__ == "__main__":
    sys.exit(main())

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("MOE_EDU_TEST_THREADS", "2")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_line(capsys):
    """`one_line(check, fn)` runs an exercise checker on `fn` and returns (passed, the one line it printed);
    fails the test unless the checker printed exactly one line (the checkers' contract)."""

    def run(check, fn):
        ok = check(fn)
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1, lines
        return ok, lines[0]

    return run

"""The expert-parallel launcher cleans up after itself: a timeout leaves no zombie or orphan worker."""

import os
from pathlib import Path

import pytest

from moe_edu.parallel import check_expert_parallel


def worker_children() -> list[str]:
    """This process's children that are spawned workers or zombies ("pid state")."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and (fields[0] == "Z" or b"spawn_main" in cmdline):
            found.append(f"{stat.parent.name} {fields[0]}")
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_timeout_leaves_no_worker_behind():
    """The old code terminated the workers without waiting for them: zombies stayed until the test ended."""
    with pytest.raises(TimeoutError, match="did not finish in 0.5 s"):
        check_expert_parallel(world=2, timeout_s=0.5)  # the workers are still importing torch
    assert worker_children() == []


def test_bad_arguments_are_refused_before_spawning():
    with pytest.raises(ValueError, match="timeout_s"):
        check_expert_parallel(world=2, timeout_s=0)
    with pytest.raises(ValueError, match="world"):
        check_expert_parallel(world=3)

"""One run per output directory: a lock file beside it, taken before any work.

    with out_lock("runs/tiny"):     # creates runs/.tiny.lock, or refuses: another run writes there
        ...train and save...

Two runs started into one `--out` used to both "succeed", the second swap silently discarding
the first result. The lock is a file created with `O_CREAT | O_EXCL` (atomic on every local
file system, Windows included) holding the owner's host and process id. A lock whose process
is gone (killed, crashed) on this host is stale and taken over; one from another host is
honoured until removed by hand (the message names it).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockedError(RuntimeError):
    """Another run writes into the same output directory."""


def lock_path(out: str | Path) -> Path:
    out = Path(os.path.realpath(out))
    return out.parent / f".{out.name}.lock"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists (on Windows too, since 3.x)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or the platform cannot tell): honour the lock
    return True


def _take(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    return True


@contextmanager
def out_lock(out: str | Path) -> Iterator[Path]:
    """Hold `out`'s lock file for the duration of the block; `LockedError` if a live run holds it."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _take(path):
        try:
            owner = json.loads(path.read_text())
            host, pid = owner["host"], int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            host, pid = None, None
        if host == socket.gethostname() and pid is not None and not _alive(pid):
            path.unlink(missing_ok=True)  # stale: its run was killed
        if not _take(path):
            who = f"process {pid} on {host}" if pid is not None else "an unreadable lock"
            raise LockedError(
                f"another run writes into {out} ({who} holds {path}); wait for it, or remove the lock "
                f"file if that run is gone"
            )
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)

"""Write a directory all at once: into a temporary sibling, then swap it into place.

    with atomic_directory("runs/tiny") as tmp:   # an empty directory beside runs/tiny
        write files into tmp ...
    # now runs/tiny is the new directory, whole; the old one is gone

If anything fails (or the process dies) before the swap, the old directory is untouched and
the temporary one is removed (or left as a hidden `.name.tmp-*` sibling after a kill). The
swap itself exchanges the two directories in one system call (`renameat2(RENAME_EXCHANGE)`
on Linux, `renamex_np(RENAME_SWAP)` on macOS), so a reader sees the old directory or the new
one, never a mix and never nothing. Where neither exists, two renames are used and a crash
between them leaves the old directory whole under `.name.old-*`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the platform cannot (the caller falls back)."""
    if _LIBC is None:
        return False
    if sys.platform.startswith("linux") and hasattr(_LIBC, "renameat2"):
        rc = _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(_LIBC, "renamex_np"):
        rc = _LIBC.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95, 45):  # ENOSYS, EINVAL, EOPNOTSUPP (Linux), ENOTSUP (macOS): not supported here
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_directory(new: Path, path: Path) -> None:
    """Put the finished directory `new` at `path`, replacing what is there (see module docstring)."""
    for f in new.rglob("*"):  # data on disk before the name points at it
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(new)
    if not path.exists():
        os.rename(new, path)
    elif path.is_dir() and not path.is_symlink() and exchange(new, path):
        shutil.rmtree(new)  # `new` now holds the old directory
    else:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory")
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, old / "d")
        os.rename(new, path)
        shutil.rmtree(old)
    _fsync_dir(path.parent)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `path`; on a clean exit it replaces `path` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (path.stat().st_mode & 0o7777) if path.is_dir() else 0o777 & ~umask)  # mkdtemp made it 0700
    try:
        yield tmp
        replace_directory(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

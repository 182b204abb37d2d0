"""Write a directory's files all at once: into a temporary sibling, then swap it into place.

    with atomic_directory("runs/tiny", owned=is_checkpoint_file) as tmp:
        write files into tmp ...
    # runs/tiny now holds the new files; of the old entries only the owned ones are gone

`owned` says which entries of the existing directory the save replaces (default: all of them,
for directories that are wholly ours, like a training state). Every other entry — a tokenizer,
notes, other checkpoints' folders — is carried over untouched (files as hard links before the
swap, folders moved back right after it), so a save never deletes what it did not write.

The swap exchanges the two directories in one system call (`renameat2(RENAME_EXCHANGE)` on
Linux, `renamex_np(RENAME_SWAP)` on macOS). What a kill (SIGKILL, power loss) leaves:
- before the swap: the old files, whole, at `path`; a hidden `.name.tmp-*` sibling;
- after the swap: the new files, whole, at `path`; a hidden sibling holding the old ones, and
  (for a kill in the instant before they are moved back) the carried-over folders and any file
  that could not be hard-linked;
the next save into `path` (`clean_leftovers`) moves such entries back and removes the sibling.
Leftovers are recognised by name and by the marker file (`MARKER`) written into each.
Where no exchange exists (Windows, some network file systems) two renames are used: a kill
between them leaves `path` absent and the old directory whole under `.name.old-*`, which the
next save puts back. The C library is looked up on first use, never at import.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h
# the exchange is not supported on this file system or kernel: fall back to two renames
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
MARKER = ".moe_edu-save.json"  # in every temporary sibling (and, during a swap, in the old directory)


@lru_cache(maxsize=1)
def _libc():
    """The C library on Linux and macOS (None elsewhere, or if it cannot be loaded): looked up on first use."""
    if not (sys.platform.startswith("linux") or sys.platform == "darwin"):
        return None  # Windows: ctypes.CDLL(None) raises TypeError there; no exchange call anyway
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except (OSError, TypeError, AttributeError):
        return None


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the platform cannot (the caller falls back)."""
    libc = _libc()
    if libc is None:
        return False
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def creation_mode(directory: Path, *, is_dir: bool = False) -> int:
    """The permission bits a new file (or folder) gets in `directory`: 0o666 (0o777) as umask and ACLs allow.

    Found by creating a probe with `os.open`/`os.mkdir` and letting the system apply its rules,
    so the process-global umask is never changed (no `os.umask(0)` dance while other threads run).
    """
    probe = directory / f".moe_edu-mode-{secrets.token_hex(6)}"
    if is_dir:
        os.mkdir(probe, 0o777)
        mode = os.stat(probe).st_mode & 0o7777
        os.rmdir(probe)
        return mode
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return os.stat(probe).st_mode & 0o7777
    finally:
        os.unlink(probe)


def real_target(path: str | Path) -> Path:
    """The directory a save into `path` really writes: symlinks followed; refused where a swap cannot work.

    Raises `ValueError` naming the reason for a dangling symlink, a non-directory, a mount point
    (a file system root cannot be renamed) and the working directory or one of its parents (a shell
    sitting in it would keep seeing the old, emptied directory).
    """
    given = Path(path)
    if given.is_symlink() and not given.exists():
        raise ValueError(f"{given} is a dangling symbolic link (to {os.readlink(given)})")
    real = Path(os.path.realpath(given))
    if real.exists() and not real.is_dir():
        raise ValueError(f"{given} exists and is not a directory")
    if real.is_dir() and os.path.ismount(real):
        raise ValueError(f"{given} is a mount point, which cannot be swapped: use a sub-directory of it")
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd or real in cwd.parents:
        raise ValueError(f"{given} is the working directory (or holds it): use a sub-directory, e.g. {given}/run")
    return real


def check_swappable(path: str | Path) -> Path:
    """`real_target(path)`, after a trial in the real parent; raises `ValueError` naming what fails.

    Run before any work: creates two probe folders beside the target and swaps them (the file
    system must take the exchange or the two-rename fallback), and, if the target exists, a probe
    file inside it (a read-only or immutable folder fails here, not after hours of training).
    """
    real = real_target(path)
    parent = real.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    probes: list[Path] = []
    try:
        probes = [Path(tempfile.mkdtemp(prefix=".moe_edu-probe-", dir=parent)) for _ in range(2)]
        if not exchange(probes[0], probes[1]):
            os.rename(probes[0], probes[0].with_name(probes[0].name + "-moved"))
            probes[0] = probes[0].with_name(probes[0].name + "-moved")
        if real.is_dir():
            os.close(os.open(probes[1] / "probe", os.O_CREAT | os.O_WRONLY, 0o666))
            inside = real / f".moe_edu-probe-{secrets.token_hex(6)}"
            os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            os.unlink(inside)
    except OSError as err:
        where = err.filename or parent
        raise ValueError(f"{path} cannot be written ({where}: {err.strerror or err})") from None
    finally:
        for probe in probes:
            shutil.rmtree(probe, ignore_errors=True)
    return real


def _fsync(path: Path) -> None:
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


def _write_marker(directory: Path, target: str, owned: list[str] | None) -> None:
    text = json.dumps({"moe_edu": "atomic_directory", "target": target, "owned": owned})
    (directory / MARKER).write_text(text)


def _read_marker(directory: Path, target: str) -> dict | None:
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("moe_edu") == "atomic_directory" and data.get("target") == target:
        return data
    return None


def _same_entry(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _settle(old: Path, path: Path, owned: Callable[[str], bool]) -> bool:
    """Empty `old` (a sibling of `path`): owned entries are removed, the others go back into `path`.

    An entry `path` already holds (a hard link to the same file) is only unlinked here; one whose
    name `path` holds for something else stays. Returns whether `old` could be removed.
    """
    for entry in sorted(old.iterdir()):  # the marker goes last: a kill in between leaves a recognisable sibling
        name = entry.name
        if name == MARKER:
            continue
        if owned(name):
            _remove(entry)
        elif _same_entry(entry, path / name):
            entry.unlink()
        elif not os.path.lexists(path / name):
            os.rename(entry, path / name)
    if any(p.name != MARKER for p in old.iterdir()):
        return False  # something stayed (a name `path` holds for something else): keep it, and the marker
    (old / MARKER).unlink(missing_ok=True)
    try:
        old.rmdir()
        return True
    except OSError:
        return False


def clean_leftovers(path: str | Path) -> list[Path]:
    """Finish or undo what killed saves into `path` left behind; returns the siblings removed.

    Only hidden siblings named `.name.tmp-*` / `.name.old-*` that hold this module's marker for
    `path` are touched; entries a save carried over go back into `path`, nothing else is kept.
    """
    path = Path(path)
    parent, name, removed = path.parent, path.name, []
    if not parent.is_dir():
        return removed
    candidates = sorted(parent.glob(f".{name}.old-*")) + sorted(parent.glob(f".{name}.tmp-*"))
    for sibling in candidates:
        if not sibling.is_dir() or sibling.is_symlink():
            continue
        marker = _read_marker(sibling, name)
        if marker is None:
            continue
        if not os.path.lexists(path) and sibling.name.startswith(f".{name}.old-"):
            os.rename(sibling, path)  # killed between the two renames: put the old directory back
            (path / MARKER).unlink(missing_ok=True)
            continue
        listed = marker.get("owned")
        owned = (lambda n: True) if listed is None else set(listed).__contains__
        if path.is_dir() and _settle(sibling, path, owned):
            removed.append(sibling)
    if path.is_dir() and (path / MARKER).is_file() and _read_marker(path, name) is not None:
        (path / MARKER).unlink()  # a kill right after a swap
    return removed


def _carry(path: Path, tmp: Path, owned: Callable[[str], bool]) -> None:
    """Hard-link `path`'s files that the save does not own into `tmp`, so the swap keeps them."""
    for entry in path.iterdir():
        if entry.name == MARKER or owned(entry.name) or os.path.lexists(tmp / entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            continue  # folders are moved back right after the swap (`_settle`)
        with contextlib.suppress(OSError, NotImplementedError):  # no hard links: moved back after the swap
            os.link(entry, tmp / entry.name, follow_symlinks=False)


def replace_files(new: Path, path: Path, owned: Callable[[str], bool] | None = None) -> None:
    """Put the entries of the finished directory `new` at `path` (see the module docstring)."""
    for f in new.rglob("*"):  # data on disk before the name points at it
        if f.is_file() and not f.is_symlink():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    new_names = {p.name for p in new.iterdir()} - {MARKER}
    if owned is None:
        is_owned: Callable[[str], bool] = lambda name: True
    else:
        is_owned = lambda name: name in new_names or owned(name)
    if not path.exists():
        _fsync(new)
        os.rename(new, path)
        (path / MARKER).unlink(missing_ok=True)  # after the rename: a leftover before it stays recognisable
        _fsync(path.parent)
        return
    old_owned = sorted(p.name for p in path.iterdir() if p.name != MARKER and is_owned(p.name))
    listed = sorted(new_names | set(old_owned))
    _write_marker(new, path.name, listed)  # before anything is carried: a leftover says what is ours
    _write_marker(path, path.name, listed)  # so the old directory is recognisable after the swap
    if owned is not None:
        _carry(path, new, is_owned)
    _fsync(new)
    if exchange(new, path):
        old = new  # `new` now holds the old directory
    else:
        old = path.parent / f".{path.name}.old-{secrets.token_hex(6)}"
        os.rename(path, old)
        os.rename(new, path)
    (path / MARKER).unlink(missing_ok=True)
    _settle(old, path, is_owned)
    _fsync(path.parent)


def replace_directory(new: Path, path: Path) -> None:
    """Replace `path` whole by the finished directory `new`."""
    replace_files(new, path, None)


@contextmanager
def atomic_directory(path: str | Path, *, owned: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling of `path`; on a clean exit its entries replace `path`'s.

    `owned(name)` picks the existing entries the save replaces (None: all of them); the rest stay.
    """
    path = real_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_marker(tmp, path.name, None)  # all ours until something is carried over
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_dir() else creation_mode(path.parent, is_dir=True)
        os.chmod(tmp, mode)  # mkdtemp made it 0700
        yield tmp
        replace_files(tmp, path, owned)
    finally:
        if tmp.exists():  # a failure: undo as `clean_leftovers` would after a kill
            marker = _read_marker(tmp, path.name)
            listed = None if marker is None else marker.get("owned")
            if listed is None or not path.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                _settle(tmp, path, set(listed).__contains__)
            if path.is_dir() and (path / MARKER).is_file():
                (path / MARKER).unlink()

"""Result files of the commands: checked before any work, written whole, never clobbered unasked.

    out = check_out_file(args.out, overwrite=args.overwrite)   # a usage error now, not after the run
    ...compute...
    write_text(out, json.dumps(result))                         # a temporary file, then one rename

A command writing several files into a folder uses `check_out_files` and then
`atomic.atomic_directory(folder, owned=names)`: the set is replaced together, other files stay.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Collection
from pathlib import Path

from .atomic import check_swappable, creation_mode


def _nearest_dir(path: Path) -> Path:
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_out_file(path: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse (`ValueError` naming `flag`) an output file that is a folder, exists unasked, or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory: give a file name")
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{flag} {path} is a dangling symbolic link")
    if path.exists() and not path.is_file():
        raise ValueError(f"{flag} {path} exists and is not a regular file")
    if path.exists() and not overwrite:
        raise ValueError(f"{flag} {path} exists: pass --overwrite to replace it (at the end of a successful run)")
    parent = _nearest_dir(path.parent)
    try:  # the result is written as a temporary file beside it, then renamed
        fd, probe = tempfile.mkstemp(prefix=".moe_edu-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{flag} {path} cannot be written ({parent}: {err.strerror or err})") from None
    return path


def check_out_files(folder: str | Path, names: Collection[str], *, overwrite: bool = False) -> Path:
    """`check_out_file` for a set of files in `folder` (which a save swaps in together; see the module docstring)."""
    folder = Path(folder)
    try:
        check_swappable(folder)
    except ValueError as err:
        raise ValueError(f"--out {err}") from None
    existing = sorted(n for n in names if os.path.lexists(folder / n))
    if existing and not overwrite:
        raise ValueError(f"--out {folder} already holds {', '.join(existing)}: pass --overwrite to replace them")
    return folder


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` whole: a temporary sibling, flushed to disk, renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, creation_mode(path.parent))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

"""The atomic writer on every platform's code path: Linux (real), macOS and Windows (simulated here)."""

import ctypes
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import moe_edu.io.atomic as atomic
from moe_edu.io.atomic import atomic_directory, creation_mode, exchange
from moe_edu.io.checkpoint import save_safetensors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_libc():
    atomic._libc.cache_clear()
    yield
    atomic._libc.cache_clear()


def test_import_never_loads_the_c_library_and_survives_windows_ctypes():
    """The review's simulation of CPython's Windows branch: `CDLL(None)` raises TypeError; import used to fail."""
    script = textwrap.dedent("""
        import torch, safetensors, tokenizers, ctypes, ctypes.util, sys, types  # torch loads its libraries first
        ctypes.util.find_library = lambda name: None
        sys.modules["nt"] = types.SimpleNamespace(_LOAD_LIBRARY_SEARCH_DEFAULT_DIRS=0x1000,
                                                  _LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR=0x100)
        ctypes._os = types.SimpleNamespace(name="nt", fspath=lambda p: p)
        loaded = []
        real = ctypes.CDLL.__init__
        ctypes.CDLL.__init__ = lambda self, *a, **k: (loaded.append(a), real(self, *a, **k))[1]
        import moe_edu, moe_edu.io.atomic as atomic
        print("imported", len(loaded))
        print("libc", atomic._libc())   # the Linux branch, meeting Windows' ctypes: None, no TypeError
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["imported 0", "libc None"]


def swap_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d"
    path.mkdir()
    (path / "old.txt").write_text("old")
    (path / "notes.md").write_text("mine")
    with atomic_directory(path, owned=lambda name: name == "old.txt") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in path.iterdir()) == ["new.txt", "notes.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_windows_path_uses_two_renames(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: pytest.fail("no C library on Windows"))
    assert atomic._libc() is None and exchange(tmp_path, tmp_path) is False
    swap_round_trip(tmp_path)


class FakeLibc:
    """A C library whose swap call answers `rc` with `err`, or really swaps (via a third name)."""

    def __init__(self, name: str, rc: int = 0, err: int = 0):
        self.calls, self.rc, self.err = [], rc, err
        setattr(self, name, self.swap)

    def swap(self, *args):
        a, b = (os.fsdecode(x) for x in args if isinstance(x, bytes))
        self.calls.append((a, b))
        if self.rc == 0:
            os.rename(a, a + ".x")
            os.rename(b, a)
            os.rename(a + ".x", b)
        return self.rc


@pytest.mark.parametrize(("platform", "call"), [("darwin", "renamex_np"), ("linux", "renameat2")])
def test_each_platforms_exchange_call(tmp_path, monkeypatch, platform, call):
    fake = FakeLibc(call)
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: fake)
    swap_round_trip(tmp_path)
    assert [Path(b).name for a, b in fake.calls] == ["d"]  # one exchange: the new files for the old


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", 95)])
def test_unsupported_exchange_falls_back_and_real_errors_raise(tmp_path, monkeypatch, err):
    fake = FakeLibc("renamex_np", rc=-1, err=err)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: fake)
    monkeypatch.setattr(ctypes, "get_errno", lambda: fake.err)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert exchange(tmp_path / "a", tmp_path / "b") is False
    fake.err = errno.EBUSY
    with pytest.raises(OSError, match="cannot swap"):
        exchange(tmp_path / "a", tmp_path / "b")


def test_a_library_that_cannot_load_degrades(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise OSError("no libc here")

    monkeypatch.setattr(ctypes, "CDLL", broken)
    assert atomic._libc() is None
    swap_round_trip(tmp_path)


def test_file_modes_follow_the_umask_without_changing_it(tmp_path, monkeypatch):
    """The old code did `os.umask(0)` at save time: process-global, racy with other threads."""
    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask called"))
    mode, dir_mode = creation_mode(tmp_path), creation_mode(tmp_path, is_dir=True)
    (tmp_path / "f").touch()
    assert mode == os.stat(tmp_path / "f").st_mode & 0o7777  # what the system gives a new file (touch: 0o666)
    assert dir_mode & 0o700 == 0o700 and list(tmp_path.iterdir()) == [tmp_path / "f"]
    save_safetensors({"a": torch.zeros(2)}, tmp_path / "w.safetensors", {"format": "pt"})
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o7777 == mode

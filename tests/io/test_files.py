"""Atomic writes: complete file or nothing, never a partial file or a stray temp file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from hdjax.io.files import atomic_write


def test_writes_binary_and_text(tmp_path):
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"\x00\xffdata"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xffdata"
    atomic_write(tmp_path / "b.txt", lambda f: f.write("é\n"), mode="w")
    assert (tmp_path / "b.txt").read_bytes() == "é\n".encode()
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt"]
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_leaves_no_partial_and_no_temp_file(tmp_path, error):
    def write(f):
        f.write(b"half of it")
        raise error

    with pytest.raises(type(error)):
        atomic_write(tmp_path / "out.bin", write)
    assert os.listdir(tmp_path) == []


def test_existing_file_survives_failed_overwrite(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old complete file")
    path.chmod(0o600)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, lambda f: f.write("new"), mode="w")
    assert path.read_text() == "old complete file"
    assert os.listdir(tmp_path) == ["out.txt"]
    monkeypatch.undo()
    atomic_write(path, lambda f: f.write("new"), mode="w")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o600  # a replaced file keeps its permissions


def test_missing_folder_and_bad_mode_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "x.bin", lambda f: f.write(b""))
    with pytest.raises(ValueError, match="mode"):
        atomic_write(tmp_path / "x.bin", lambda f: None, mode="a")
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from hdjax.io.files import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a.obj.hdjax-{dead.pid}-x1y2.tmp"
    live = tmp_path / f".b.obj.hdjax-{os.getppid()}-x1y2.tmp"  # the test runner's parent
    other = tmp_path / ".c.obj.abcd.tmp"  # not ours: no tag
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


_WRITER = """
import sys, time
from hdjax.io.files import atomic_write
from hdjax.main import sigterm_as_interrupt

def slow(f):
    f.write(b"x" * 1000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

try:
    with sigterm_as_interrupt():
        atomic_write(sys.argv[1], slow)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_sigterm_during_a_write_leaves_no_temporary(tmp_path):
    """SIGTERM unwinds like Ctrl-C: the temporary goes, the old file stays complete."""
    target = tmp_path / "mesh.obj"
    target.write_text("previous complete mesh")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert proc.stdout.readline().strip() == "writing"
    assert len(os.listdir(tmp_path)) == 2  # the temporary exists while writing
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert os.listdir(tmp_path) == ["mesh.obj"]
    assert target.read_text() == "previous complete mesh"

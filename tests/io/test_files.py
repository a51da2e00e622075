"""Atomic writes: complete file or nothing, never a partial file or a stray temp file."""

from __future__ import annotations

import os

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

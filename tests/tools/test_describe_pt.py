"""Tests for `python -m hdjax.tools.describe_pt`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from hdjax.tools import describe_pt


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp_path / "ckpt.pt"
    payload = {
        "model_state_dict": {"w": torch.zeros(3, 4), "n": torch.tensor([1, 2])},
        "opt": argparse.Namespace(name="abcdefgh", sizes=[1, 2]),
        "epoch": 5,
    }
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    return path


def test_describe_lists_every_leaf(checkpoint):
    text = describe_pt.describe(checkpoint)
    assert text.splitlines() == [
        "model_state_dict.w  (3, 4)  float32",
        "model_state_dict.n  (2,)  int64",
        "opt.name = 'abcdefgh'",
        "opt.sizes.0 = 1",
        "opt.sizes.1 = 2",
        "epoch = 5",
        "# 2 arrays, 4 other values",
    ]
    assert (
        describe_pt.describe(checkpoint, max_value_chars=6).splitlines()[2] == "opt.name = 'ab..."
    )


def test_main_exit_codes(tmp_path, checkpoint, capsys):
    assert describe_pt.main([str(checkpoint)]) == 0
    assert "model_state_dict.n  (2,)  int64" in capsys.readouterr().out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"hello")
    assert describe_pt.main([str(bad)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {bad}: not a PyTorch checkpoint (neither a zip nor a legacy torch.save file)\n"
    )
    assert describe_pt.main([]) == 2


def test_runs_as_module(checkpoint):
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "hdjax.tools.describe_pt", str(checkpoint)],
        capture_output=True,
        text=True,
        cwd=repo,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "# 2 arrays, 4 other values"

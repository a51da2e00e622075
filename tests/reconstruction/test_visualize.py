"""The debug PNG of the input and normal maps (hdjax.reconstruction.visualize)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from hdjax.errors import HdjaxError
from hdjax.reconstruction import visualize as vis


def test_save_normals_png_matches_official_conversion(tmp_path):
    """Official: float32 (x·0.5 + 0.5)[..., ::-1]·255 concatenated, cv2.imwrite -> uint8."""
    rng = np.random.default_rng(11)
    parts = [rng.uniform(-1.1, 1.1, (512, 512, 3)).astype(np.float32) for _ in range(3)]
    parts[1][0, 0] = [-1.0, 0.0, 1.0]
    path = tmp_path / "out.png"
    vis.save_normals_png(path, *parts)

    official_path = tmp_path / "official.png"
    strip = np.concatenate([(p * 0.5 + 0.5)[:, :, ::-1] * 255.0 for p in parts], axis=1)
    assert cv2.imwrite(str(official_path), strip)
    ours = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert ours.shape == (512, 1536, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, cv2.imread(str(official_path), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(ours[0, 512][::-1], [0, 128, 255])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["official.png", "out.png"]


def test_normals_to_uint8_rounding_and_clipping():
    # 0.0 -> 127.5 exactly, which rounds half to even (128) like OpenCV's saturate_cast.
    x = np.array([[-2.0, -1.0, 1.0], [1.5, np.nan, 0.0]], np.float32)
    np.testing.assert_array_equal(vis.normals_to_uint8(x), [[0, 0, 255], [255, 0, 128]])
    with pytest.raises(ValueError):
        vis.save_normals_png(
            "/nonexistent/x.png", np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), np.zeros((4, 5, 3))
        )


def test_save_normals_png_unwritable_folder_raises(tmp_path):
    z = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(HdjaxError):
        vis.save_normals_png(tmp_path / "missing" / "x.png", z, z, z)
    assert not (tmp_path / "missing").exists()


def test_save_normals_png_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(b"old complete file")
    z = np.zeros((4, 4, 3), np.float32)

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(HdjaxError, match=r"x\.png: cannot write PNG \(No space left on device\)"):
        vis.save_normals_png(path, z, z, z)
    assert path.read_bytes() == b"old complete file"
    assert os.listdir(tmp_path) == ["x.png"]
    monkeypatch.undo()
    vis.save_normals_png(path, z, z, z)
    assert cv2.imread(str(path)).shape == (4, 12, 3)

"""2K2K photo inputs: the demo's padding and resize, masks from alpha or a file, jitter."""

from __future__ import annotations

import json

import cv2
import ml_collections
import numpy as np
import pytest

from hdjax.errors import HdjaxError
from hdjax.reconstruction import images, preprocess
from hdjax.reconstruction import twok2k as recon


def test_pad_to_square_moves_keypoints_with_the_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 100, 3), np.uint8)
    image[30, 70] = (255, 0, 0)
    kp = np.array([[70.0, 30.0, 0.9]])
    out, moved, mask = recon.pad_to_square(image, kp, size=100)
    assert out.shape == (100, 100, 3) and mask is None
    # Padded by 20 rows on top (centred, replicated edge rows), no resize at 100.
    np.testing.assert_array_equal(moved[0], [70.0, 50.0, 0.9])
    assert tuple(out[50, 70]) == (255, 0, 0)
    np.testing.assert_array_equal(out[0], image[0])  # replicated, as cv2.BORDER_REPLICATE
    big, moved, _ = recon.pad_to_square(image, kp, size=200)
    np.testing.assert_allclose(moved[0, :2], [140.0, 100.0])
    assert big[100, 140, 0] > 150 and big[100, 140, 1] < 100  # the red pixel, scaled ×2
    _, moved, mask = recon.pad_to_square(
        image.transpose(1, 0, 2), kp[:, [1, 0, 2]], size=100, mask=np.ones((100, 60), bool)
    )
    np.testing.assert_array_equal(moved[0, :2], [50.0, 70.0])
    assert mask.shape == (100, 100) and not mask[:, :20].any() and mask[:, 20:80].all()


def _write(tmp_path, name, rgba):
    path = tmp_path / name
    cv2.imwrite(
        str(path),
        cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA if rgba.shape[2] == 4 else cv2.COLOR_RGB2BGR),
    )
    return path


def test_mask_comes_from_alpha_or_a_mask_file(tmp_path):
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[20:60, 30:50, 3] = 255
    rgb, mask = images.load_image_and_mask(_write(tmp_path, "a.png", rgba))
    assert rgb.shape == (80, 80, 3) and mask.sum() == 40 * 20 and mask[30, 40]
    rgb, mask = images.load_image_and_mask(_write(tmp_path, "b.png", rgba[..., :3].copy()))
    assert mask is None
    m = np.zeros((80, 80), np.uint8)
    m[10:20, 10:20] = 255
    cv2.imwrite(str(tmp_path / "b_mask.png"), m)
    assert recon.read_mask(tmp_path / "b_mask.png", (80, 80)).sum() == 100
    with pytest.raises(HdjaxError, match="mask is 80x80, the image 90x80"):
        recon.read_mask(tmp_path / "b_mask.png", (80, 90))


def test_demo_jitter_darkens_and_desaturates():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 32, 3), np.uint8)
    out = recon.demo_jitter(image).astype(np.float64)
    assert out.mean() < image.mean() * 0.9  # brightness 0.85, contrast toward a darker mean
    spread = lambda x: np.abs(x - x.mean(axis=2, keepdims=True)).mean()  # noqa: E731
    assert spread(out) < spread(image.astype(np.float64)) * 0.8
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert np.all(recon.demo_jitter(grey) == recon.demo_jitter(grey)[0, 0, 0])  # stays grey


def test_an_image_without_keypoints_is_one_clear_error(tmp_path):
    path = _write(tmp_path, "p.png", np.zeros((100, 100, 3), np.uint8))
    cfg = ml_collections.ConfigDict(dict(exif_orientation=True, jitter="demo"))
    (item,) = preprocess.find_inputs(path)
    with pytest.raises(HdjaxError, match=r"p_keypoints\.json"):
        recon.network_input(item, cfg)
    (tmp_path / "p_keypoints.json").write_text(json.dumps({"people": []}))
    (item,) = preprocess.find_inputs(path)
    with pytest.raises(HdjaxError):
        recon.network_input(item, cfg)

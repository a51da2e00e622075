"""Keypoint layout conversions."""

import numpy as np
import pytest

from hdjax.data.keypoints import coco23_to_body25, coco23_to_twok2k


def _coco():
    kp = np.zeros((23, 3), np.float32)
    kp[:, 0] = np.arange(23)
    kp[:, 1] = 100 + np.arange(23)
    kp[:, 2] = 1
    return kp


def test_body25_names_line_up():
    b = coco23_to_body25(_coco())
    # nose, right wrist (COCO 10), left ankle (COCO 15), right heel (COCO 22)
    assert b[0, 0] == 0 and b[4, 0] == 10 and b[14, 0] == 15 and b[24, 0] == 22
    np.testing.assert_allclose(b[1, :2], [5.5, 105.5])  # neck = mid-shoulders
    np.testing.assert_allclose(b[8, :2], [11.5, 111.5])  # mid-hip
    assert np.all(b[:, 2] == 1)
    # every COCO point is used exactly once
    assert sorted(b[[i for i in range(25) if i not in (1, 8)], 0].astype(int)) == list(range(23))


def test_body25_midpoint_invisible_if_a_side_is():
    kp = _coco()
    kp[5, 2] = 0
    b = coco23_to_body25(kp)
    assert np.all(b[1] == 0) and b[8, 2] == 1


def test_twok2k_layout_and_shape_errors():
    t = coco23_to_twok2k(_coco())
    assert t.shape == (31, 3)
    np.testing.assert_array_equal(t[:23], _coco())
    assert np.all(t[23:] == 0)
    with pytest.raises(ValueError, match="23, 3"):
        coco23_to_body25(np.zeros((17, 3)))


def test_twok2k_agrees_with_its_body25_mapping():
    """2K2K's demo fills slots 0-22 from BODY_25 indices (spec 2k2k.md §5)."""
    official = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11, 19, 20, 21, 22, 23, 24]
    kp = _coco()
    np.testing.assert_array_equal(coco23_to_twok2k(kp)[:23], coco23_to_body25(kp)[official])

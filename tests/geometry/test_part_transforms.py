"""The 2K2K keypoint -> 12 part transforms solver (spec 2k2k.md §3.1)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hdjax.errors import HdjaxError
from hdjax.geometry import part_transforms as pt

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "part_transforms_reference.npz")
SIZE = 2048


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(2, 3) affine map applied to (n, 2) points."""
    return pts @ m[:, :2].T + m[:, 2]


def _similarity(scale: float, angle_deg: float, shift) -> np.ndarray:
    a = np.radians(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([r, np.asarray(shift, np.float64)[:, None]], axis=1)


def _to_pixels(u: np.ndarray) -> np.ndarray:
    return (u + 1.0) * SIZE / 2.0


def _person() -> np.ndarray:
    """The reference set's upright person (31, 2) pixels, every joint present."""
    return np.load(REFERENCE)["keypoints"][3].copy()


def test_matches_the_official_solver():
    """Seeded people (scale caps on and off, fingers/toes/heels missing) vs stored official
    numbers (tests/geometry/official_part_transforms.py). Measured: image->canonical equal to
    the bit (float32), canonical->image within 4e-8 of the largest entry."""
    ref = np.load(REFERENCE)
    theta, inverse = pt.part_transforms(ref["keypoints"], strict=False)
    assert theta.shape == inverse.shape == (len(ref["keypoints"]), 12, 2, 3)
    assert theta.dtype == inverse.dtype == np.float32
    expected = ref["image_to_canonical"]
    np.testing.assert_allclose(inverse, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    expected = ref["canonical_to_image"]
    np.testing.assert_allclose(theta, expected, rtol=0, atol=5e-7 * np.abs(expected).max())


@pytest.mark.parametrize("part", range(12))
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.7])
def test_joints_on_a_similar_copy_of_the_targets(part, scale):
    """Joints placed at S(targets): theta is S itself when S does not shrink (scale >= 1);
    a shrinking S is capped (except torso and feet, which have no cap) so theta is S with
    scale 1 about the joints' centroid: parts are never magnified."""
    s = _similarity(scale, 20.0, (0.1, -0.05))
    targets = np.array(pt._TARGETS[part])
    kp = _person()
    joints = pt.PART_JOINTS[part]
    image = _apply(s, targets)
    for j, p in zip(joints, image, strict=False):
        kp[j] = _to_pixels(p)
    if part in (3, 5):  # the 3rd target is the finger mean: put every finger there
        kp[list(joints[2:])] = _to_pixels(image[2])
    if part in (10, 11):
        kp[list(joints)] = _to_pixels(image)
    theta, inverse = pt.part_transforms(kp, size=SIZE)
    det = np.linalg.det(theta[part, :, :2].astype(np.float64))
    capped = scale < 1 and part in pt._CAPPED
    np.testing.assert_allclose(det, 1.0 if capped else scale**2, rtol=1e-5)
    if not capped:
        np.testing.assert_allclose(theta[part], s, atol=2e-6)
    # Either way the joints' centroid maps to the targets' centroid (scaled when capped).
    centroid = targets.mean(0) * (scale if capped else 1.0)
    np.testing.assert_allclose(_apply(inverse[part], image).mean(0), centroid, atol=2e-6)


def test_crops_follow_the_keypoints():
    """The theta of every part maps the canonical centre near its joints (within the crop)."""
    kp = _person()
    theta, _ = pt.part_transforms(kp)
    u = 2.0 * kp / SIZE - 1.0
    for i, joints in enumerate(pt.PART_JOINTS):
        centre_px = _to_pixels(_apply(theta[i], np.zeros((1, 2))))[0]
        centroid_px = _to_pixels(u[list(joints[:2])].mean(0))
        h, w = pt.PART_SIZES[i]
        assert np.linalg.norm(centre_px - centroid_px) < 0.5 * max(h, w), pt.PART_NAMES[i]


def test_part_sizes():
    assert len(pt.PART_SIZES) == len(pt.PART_NAMES) == len(pt.PART_JOINTS) == 12
    assert pt.PART_SIZES[0] == (368, 320) and pt.PART_SIZES[1] == (528, 336)
    assert set(pt.PART_SIZES[2:6]) == {(352, 224)} and set(pt.PART_SIZES[6:10]) == {(272, 256)}
    assert set(pt.PART_SIZES[10:]) == {(176, 128)}
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in pt.PART_SIZES)


def test_missing_fingers_use_the_mean_of_the_others():
    kp = _person()
    some = kp.copy()
    some[[23, 24]] = 0.0  # left index and middle finger missing
    only = kp.copy()
    only[[23, 24, 25, 26]] = kp[[25, 26]].mean(0)  # the mean of the two present ones
    a = pt.part_transforms(some, strict=False)[1][3]
    b = pt.part_transforms(only, strict=False)[1][3]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_hand_without_fingers():
    """strict (default): the hand point extends the forearm by a quarter, so elbow and wrist
    land exactly on their targets; strict=False: the official code fails, so do we, clearly."""
    kp = _person()
    kp[23:27] = 0.0
    _, inverse = pt.part_transforms(kp)
    u = 2.0 * kp / SIZE - 1.0
    targets = np.array(pt._TARGETS[3][:2])
    length = np.linalg.norm(u[7] - (u[9] + 0.25 * (u[9] - u[7])))
    cap = min(1.0, length / np.linalg.norm(targets[0] - np.array(pt._TARGETS[3][2])))
    np.testing.assert_allclose(_apply(inverse[3], u[[7, 9]]), targets * cap, atol=2e-6)
    with pytest.raises(HdjaxError, match="finger"):
        pt.part_transforms(kp, strict=False)


def test_missing_toe_and_heel():
    """strict: a missing toe takes the other toe, a missing heel the ankle (the fallbacks the
    official code writes but never applies); strict=False keeps the official numbers, where
    the missing toe sits at the image centre."""
    kp = _person()
    holed = kp.copy()
    holed[[17, 19]] = 0.0  # left big toe and heel
    filled = kp.copy()
    filled[17], filled[19] = kp[18], kp[15]
    np.testing.assert_allclose(
        pt.part_transforms(holed)[1][10], pt.part_transforms(filled)[1][10], atol=1e-6
    )
    centred = kp.copy()
    centred[[17, 19]] = SIZE / 2
    np.testing.assert_allclose(
        pt.part_transforms(holed, strict=False)[1][10],
        pt.part_transforms(centred, strict=False)[1][10],
        atol=1e-6,
    )
    whole_foot = kp.copy()
    whole_foot[[17, 18]] = 0.0
    with pytest.raises(HdjaxError, match="left big toe"):
        pt.part_transforms(whole_foot)


@pytest.mark.parametrize("joint", [4, 5, 7, 9, 12, 13, 16])
def test_missing_joint_without_fallback_names_it(joint):
    kp = _person()
    kp[joint] = 0.0
    with pytest.raises(HdjaxError, match=pt.JOINT_NAMES[joint]):
        pt.part_transforms(kp)
    theta, _ = pt.part_transforms(kp, strict=False)  # official: at the image centre
    assert np.all(np.isfinite(theta))


def test_confidence_column_and_batches():
    kp = _person()
    conf = np.concatenate([kp, np.ones((31, 1))], axis=1)
    conf[24, 2] = 0.0  # unconfident finger: absent, like a (0, 0) one
    holed = kp.copy()
    holed[24] = 0.0
    a = pt.part_transforms(conf)
    b = pt.part_transforms(holed)
    np.testing.assert_array_equal(a[0], b[0])
    batch = pt.part_transforms(np.stack([kp, holed]))
    assert batch[0].shape == (2, 12, 2, 3)
    np.testing.assert_array_equal(batch[0][1], b[0])
    np.testing.assert_array_equal(batch[0][0], pt.part_transforms(kp)[0])
    with pytest.raises(HdjaxError, match="31"):
        pt.part_transforms(np.zeros((25, 3)))


def test_training_rule_keeps_missing_joints_in_the_corner():
    """Training keypoints: invisible = pixel (0, 0) -> normalised (-1, -1), averaged into
    the finger mean as the official training does (the lower-arm crop then drifts)."""
    kp = _person()
    kp[23:27] = 0.0
    inverse = pt.part_transforms(kp, missing="corner", strict=False)[1]
    u = pt.normalize_keypoints(kp, missing="corner")
    np.testing.assert_array_equal(u[23:27], -1.0)
    src = np.stack([u[7], u[9], np.full(2, -1.0)])
    targets = np.array(pt._TARGETS[3])
    assert np.linalg.norm(src[0] - src[2]) > np.linalg.norm(targets[0] - targets[2])  # no cap
    expected = pt._solve(src, targets)
    np.testing.assert_allclose(inverse[3], expected, atol=1e-6)


def test_coinciding_joints_are_singular():
    kp = _person()
    kp[3] = kp[4]
    with pytest.raises(HdjaxError, match="head"):
        pt.part_transforms(kp)

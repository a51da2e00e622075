"""Keypoint layout conversions."""

import json
import logging
import os

import numpy as np
import pytest

from hdjax.data.keypoints import coco23_to_body25, coco23_to_twok2k, openpose_to_twok2k
from hdjax.errors import HdjaxError
from hdjax.geometry.part_transforms import part_transforms


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
    np.testing.assert_array_equal(coco23_to_body25(t), coco23_to_body25(_coco()))


def test_twok2k_agrees_with_its_body25_mapping():
    """2K2K's demo fills slots 0-22 from BODY_25 indices (spec 2k2k.md §5)."""
    official = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11, 19, 20, 21, 22, 23, 24]
    kp = _coco()
    np.testing.assert_array_equal(coco23_to_twok2k(kp)[:23], coco23_to_body25(kp)[official])


def _openpose_person(seed: int, conf: float = 0.9, hands: bool = True) -> dict:
    """A person with distinct, recognisable values: x = 1000·k + index, y = index."""
    rng = np.random.default_rng(seed)
    body = np.stack([1000.0 * seed + np.arange(25), np.arange(25.0), np.full(25, conf)], 1)
    body[:, 2] *= rng.uniform(0.9, 1.0, 25)
    person = {"person_id": [-1], "pose_keypoints_2d": body.reshape(-1).tolist()}
    for side, offset in (("left", 100.0), ("right", 200.0)):
        hand = np.stack([offset + np.arange(21), offset + np.arange(21), np.full(21, 0.7)], 1)
        person[f"hand_{side}_keypoints_2d"] = hand.reshape(-1).tolist() if hands else []
    return person


def _write(tmp_path, people, name="a_keypoints.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1.3, "people": people}))
    return path


def test_openpose_json_maps_as_the_demo(tmp_path):
    kp = openpose_to_twok2k(_write(tmp_path, [_openpose_person(0)]))
    assert kp.shape == (31, 3)
    # Slot -> BODY_25 index, written out from spec 2k2k.md §5 (the demo's table).
    body = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11, 19, 20, 21, 22, 23, 24]
    np.testing.assert_array_equal(kp[:23, 1], body)
    np.testing.assert_array_equal(kp[23:27, 0], [106, 110, 114, 118])  # left PIP joints
    np.testing.assert_array_equal(kp[27:, 0], [206, 210, 214, 218])
    assert np.all(kp[:, 2] > 0.5)


def test_openpose_missing_ears_take_the_eyes(tmp_path):
    person = _openpose_person(0)
    flat = np.asarray(person["pose_keypoints_2d"]).reshape(25, 3)
    flat[17] = 0.0  # right ear
    flat[18] = 0.0  # left ear
    person["pose_keypoints_2d"] = flat.reshape(-1).tolist()
    kp = openpose_to_twok2k(_write(tmp_path, [person]))
    np.testing.assert_array_equal(kp[3], flat[16])  # left ear <- left eye
    np.testing.assert_array_equal(kp[4], flat[15])  # right ear <- right eye


def test_openpose_missing_hands_are_zero_and_still_solvable(tmp_path):
    person = _openpose_person(0, hands=False)
    del person["hand_right_keypoints_2d"]
    kp = openpose_to_twok2k(_write(tmp_path, [person]))
    assert np.all(kp[23:] == 0)
    # A plausible body for the solver: the reference person with these hands.
    ref = np.load(os.path.join(os.path.dirname(__file__), "..", "geometry", "data",
                               "part_transforms_reference.npz"))["keypoints"][3]  # fmt: skip
    ref[23:] = kp[23:, :2]
    theta, _ = part_transforms(ref)
    assert np.all(np.isfinite(theta))


def test_openpose_several_people_pick_the_most_confident(tmp_path, caplog):
    people = [_openpose_person(1, conf=0.3), _openpose_person(2, conf=0.8),
              _openpose_person(3, conf=0.5)]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        kp = openpose_to_twok2k(_write(tmp_path, people))
    assert kp[0, 0] == 2000.0  # person 2's nose
    assert "3 people" in caplog.text and "person 1" in caplog.text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "cannot read"),
        ("[1, 2]", "no 'people'"),
        ('{"people": []}', "no person"),
        ('{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}', "expected 75"),
        ('{"people": [{"face": []}]}', "no 'pose_keypoints_2d'"),
    ],
)
def test_openpose_bad_json_is_one_clear_error(tmp_path, text, problem):
    path = tmp_path / "bad_keypoints.json"
    path.write_text(text)
    with pytest.raises(HdjaxError, match=problem) as e:
        openpose_to_twok2k(path)
    assert "bad_keypoints.json" in str(e.value)
    with pytest.raises(HdjaxError, match="does not exist"):
        openpose_to_twok2k(tmp_path / "nope.json")

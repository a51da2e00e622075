"""Keypoint visibility in records (`records.keypoint_hidden`): a joint inside its limb is
seen through a thin cover, not behind another part nor under a thick one."""

from __future__ import annotations

import numpy as np
import trimesh

from hdjax.data import records
from hdjax.geometry import camera as C

CAMERA = C.OrthoCamera(size=64)  # looks along −z: +z is toward the camera
SURFACE = 0.015


def _sphere(radius: float, centre=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(4, radius=radius).apply_translation(centre)


def _hidden(mesh, skin, points, cover) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return records.keypoint_hidden(mesh, skin, CAMERA, points, np.full(len(points), cover), SURFACE)


def test_a_joint_inside_its_limb_is_seen_and_one_behind_another_part_is_not():
    limb = _sphere(0.3)
    joint = [[0.0, 0.0, 0.0]]
    assert not _hidden(limb, None, joint, 0.06)[0]  # 30 cm in, but all inside its limb
    blocker = _sphere(0.1, (0.0, 0.0, 0.6))  # another part in front: out of it, into the limb
    both = trimesh.util.concatenate([limb, blocker])
    assert _hidden(both, None, joint, 0.06)[0]
    # Beside the blocker's shadow the joint is seen again.
    assert not _hidden(both, None, [[0.2, 0.0, 0.0]], 0.06)[0]
    # A point on the skin is seen from its own side only.
    back = [[0.0, 0.0, -0.3]]
    assert (
        _hidden(limb, None, back, 0.06)[0] and not _hidden(limb, None, [[0.0, 0.0, 0.3]], 0.06)[0]
    )


def test_a_thick_cover_hides_a_hand_and_a_thin_one_does_not():
    skin = _sphere(0.3)
    for shell, hidden in ((0.32, False), (0.4, True)):
        outer = _sphere(shell)  # the cover's outer surface; the skin under it is buried
        on_skin = [[0.0, 0.0, 0.3]]  # a point on the skin, facing the camera
        assert _hidden(outer, skin, on_skin, 0.05)[0] == hidden, shell
    # A body joint deep in the limb: the cover counts, not the depth in the limb.
    outer = _sphere(0.4)
    assert _hidden(outer, skin, [[0.0, 0.0, 0.0]], 0.06)[0]  # 10 cm of cover
    assert not _hidden(outer, skin, [[0.0, 0.0, 0.0]], 0.15)[0]


def test_unknown_and_uncovered_points_are_never_hidden():
    limb = _sphere(0.3)
    points = [[np.nan] * 3, [0.0, 0.0, 0.5], [0.9, 0.9, 0.0]]  # none; in front; off the mesh
    np.testing.assert_array_equal(_hidden(limb, None, points, 0.02), [False, False, False])

"""Pure helpers of the anny body generator (which itself needs torch and `embedded-bodies`)."""

from __future__ import annotations

import numpy as np
import trimesh

from hdjax.datasets.synthetic_humans import generate as gen


def test_largest_piece_keeps_the_biggest_closed_component():
    body = trimesh.creation.icosphere(subdivisions=2)
    eye = trimesh.creation.icosphere(subdivisions=0)
    eye.vertices += 3.0
    both = trimesh.util.concatenate([eye, body])
    kept, faces = gen.largest_piece(np.asarray(both.faces), len(both.vertices))
    assert len(faces) == len(body.faces) and len(kept) == len(body.vertices)
    piece = trimesh.Trimesh(both.vertices[kept], faces, process=False)
    assert piece.is_watertight
    np.testing.assert_allclose(piece.volume, body.volume)


def test_saved_frame_is_a_proper_rotation_to_y_up_facing_z():
    # anny: Z up, facing −Y. Saved: +y up, facing +z.
    up, forward = gen.to_saved_frame(np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]))
    np.testing.assert_allclose(up, [0, 1, 0])
    np.testing.assert_allclose(forward, [0, 0, 1])
    m = gen.to_saved_frame(np.eye(3))
    assert np.isclose(np.linalg.det(m), 1.0)  # no mirroring: windings stay outward


def test_wholebody_keypoint_order():
    order = gen.ANNY_TO_WHOLEBODY
    assert sorted(order) == list(range(23))
    # anny's feet: L big, R big, L small, R small, L heel, R heel.
    # COCO-WholeBody: L big, L small, L heel, R big, R small, R heel.
    assert order[17:] == (17, 19, 21, 18, 20, 22)

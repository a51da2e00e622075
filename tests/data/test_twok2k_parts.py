"""2K2K part crops on `twok2k` records: the records' finger knuckles keep every part in its
crop at its designed size (the data fact of issue #10, item 4b)."""

from __future__ import annotations

import numpy as np
import pytest

from hdjax.data import records, render_config, subjects
from hdjax.data.keypoints import hand_points_from_mesh
from hdjax.geometry import camera as cam
from hdjax.geometry import part_transforms as pt

# Part -> (start joints, end joints, radius in m, bone fraction range): the mesh vertices
# within the radius of the bone's stretch (between the joint means) belong to the part.
BONES = {
    0: ((3, 4), (3, 4), 0.09, (0.0, 1.0)),  # a ball around the ears' midpoint
    1: ((5, 6), (11, 12), 0.13, (0.1, 0.9)),
    2: ((5,), (7,), 0.04, (0.2, 0.8)),
    3: ((7,), (23, 24, 25, 26), 0.04, (0.3, 1.0)),  # the elbow's target lies beyond the crop
    4: ((6,), (8,), 0.04, (0.2, 0.8)),
    5: ((8,), (27, 28, 29, 30), 0.04, (0.3, 1.0)),
    6: ((11,), (13,), 0.06, (0.2, 0.8)),
    7: ((13,), (15,), 0.04, (0.2, 0.8)),
    8: ((12,), (14,), 0.06, (0.2, 0.8)),
    9: ((14,), (16,), 0.04, (0.2, 0.8)),
    10: ((19,), (17, 18), 0.04, (0.0, 1.0)),
    11: ((22,), (20, 21), 0.04, (0.0, 1.0)),
}
SIZE = 256


def _part_scales(inverse: np.ndarray) -> np.ndarray:
    """(12,) image -> canonical scale of each part."""
    return np.sqrt(np.abs(np.linalg.det(inverse[:, :, :2].astype(np.float64))))


@pytest.mark.parametrize("name", ["body_00", "body_01", "body_04"])
def test_every_part_crop_covers_its_part(name):
    """Render a 2K2K record, solve the 12 transforms from its keypoints (as the training
    data gives them) and check that the mesh vertices around each part's bone land inside
    that part's crop window (measured: all of them), and that each lower arm is cut at
    the scale of its upper arm (measured ratio 0.62-1.02 over 8 bodies × 3 views; without
    the knuckles the forearm shrinks 4-10×, ratio 0.09-0.23)."""
    subject = subjects.load_embedded_body(name)
    config = render_config.twok2k_config(size=SIZE, num_points=100)
    norm = records.normalization(subject, config)
    verts = norm.apply(subject.mesh.vertices)
    joints = norm.apply(subject.keypoints)
    for view in (0, 3, 6):  # yaw -30, 0, 30
        record = records.render_record(subject, config, view)
        kp = record["keypoints"]
        assert kp.shape == (31, 3) and kp[:, 2].all()
        camera = records.make_camera(config, config.yaws[view])
        uv = 2.0 * cam.project(verts, camera) / SIZE - 1.0
        scaled = kp.copy()
        scaled[:, :2] *= 2048 / SIZE
        _, inverse = pt.part_transforms(scaled, missing="corner")
        for part, (a, b, radius, (t0, t1)) in BONES.items():
            pa, pb = joints[list(a)].mean(0), joints[list(b)].mean(0)
            seg = pb - pa
            t = np.clip((verts - pa) @ seg / max(seg @ seg, 1e-12), 0.0, 1.0)
            dist = np.linalg.norm(verts - (pa + t[:, None] * seg), axis=1)
            near = (dist < radius * norm.scale) & (t >= t0) & (t <= t1)
            assert near.sum() >= 10, (name, view, pt.PART_NAMES[part])
            c = uv[near] @ inverse[part, :, :2].T + inverse[part, :, 2]
            h, w = pt.PART_SIZES[part]
            inside = (np.abs(c[:, 0]) <= w / 2048) & (np.abs(c[:, 1]) <= h / 2048)
            assert inside.mean() > 0.9, (name, view, pt.PART_NAMES[part], inside.mean())
        scales = _part_scales(inverse)
        for low, up in ((3, 2), (5, 4)):
            assert 0.4 < scales[low] / scales[up] < 2.5, (name, view, scales[low] / scales[up])
        # Without knuckles (training's invisible joints at pixel (0, 0)) the forearm shrinks.
        holed = scaled.copy()
        holed[23:] = 0.0
        collapsed = _part_scales(pt.part_transforms(holed, missing="corner", strict=False)[1])
        assert collapsed[3] / collapsed[2] < 0.35 and collapsed[5] / collapsed[4] < 0.35


def test_knuckles_of_the_embedded_bodies_are_plausible():
    """Beyond each wrist, about 40 % of the forearm away (measured 0.38-0.42; adult hands:
    wrist -> knuckles ≈ 9-10 cm), spread a few cm across, on the hand's surface."""
    for name in subjects.embedded_body_names():
        s = subjects.load_embedded_body(name)
        kp = s.keypoints
        assert kp.shape == (31, 3) and np.all(np.isfinite(kp))
        for knuckles, elbow, wrist in ((kp[23:27], kp[7], kp[9]), (kp[27:], kp[8], kp[10])):
            forearm = np.linalg.norm(wrist - elbow)
            reach = np.linalg.norm(knuckles.mean(0) - wrist)
            assert 0.25 * forearm < reach < 0.6 * forearm, (name, reach / forearm)
            assert (knuckles.mean(0) - wrist) @ (wrist - elbow) > 0  # beyond the wrist
            assert 0.03 < np.linalg.norm(knuckles[0] - knuckles[3]) < 0.12
            gap = np.linalg.norm(s.mesh.vertices[:, None] - knuckles[None], axis=-1).min(0)
            assert np.all(gap < 0.03), (name, gap)


def test_no_hand_gives_nan_knuckles():
    s = subjects.load_embedded_body("body_00")
    kp = s.keypoints[:23].copy()
    kp[9] = kp[7] + 10.0 * (kp[9] - kp[7])  # a "wrist" far beyond the hand: nothing there
    out = hand_points_from_mesh(s.mesh.vertices, s.mesh.faces, kp)
    assert np.all(np.isnan(out[:4])) and np.all(np.isfinite(out[4:]))

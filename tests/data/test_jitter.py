"""Camera jitter: drawn ranges, and records that stay self-consistent under strong jitter."""

import numpy as np
import pytest

from hdjax.data import codecs, records, render_config, subjects
from hdjax.geometry import camera as cam

# Stronger than the defaults, yet the body (±0.88 of the ortho image's ±1) stays inside.
STRONG = {"pitch_deg": 8.0, "scale_jitter": 0.06, "shift_jitter": 0.04}
NONE = {"pitch_deg": 0.0, "scale_jitter": 0.0, "shift_jitter": 0.0}
LIMBS = (7, 8, 9, 10, 13, 14, 15, 16)  # COCO elbows, wrists, knees, ankles


def _configs(**kw):
    return [
        render_config.pifuhd_config(size=128, yaws=(30.0,), num_points=3000, **kw),
        render_config.twok2k_config(size=128, yaws=(-20.0,), num_points=3000, **kw),
    ]


@pytest.mark.parametrize("config", _configs(**NONE), ids=["ortho", "persp"])
def test_zero_jitter_is_the_plain_camera(config):
    yaw = config.yaws[0]
    plain = records.make_camera(config, yaw)
    jittered = records.make_camera(config, yaw, np.random.default_rng(3))
    np.testing.assert_array_equal(jittered.calib, plain.calib)
    kind = cam.OrthoCamera if config.camera == "ortho" else cam.PerspCamera
    np.testing.assert_array_equal(plain.calib, kind(size=128, yaw_deg=yaw).calib)


@pytest.mark.parametrize("config", _configs(**STRONG), ids=["ortho", "persp"])
def test_jitter_stays_within_its_ranges_and_varies(config):
    size = config.size
    centres, sizes, pitches = [], [], []
    for seed in range(200):
        c = records.make_camera(config, 0.0, np.random.default_rng(seed))
        pitches.append(c.pitch_deg)
        # Where the subject's centre lands, and how long a 0.2-unit upright bar looks.
        uv = cam.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, -0.1, 0.0]]), c)
        centres.append((uv[0] - (size - 1) / 2) / (size / 2))  # in half image sides
        sizes.append(abs(uv[2, 1] - uv[1, 1]))
    centres, pitches = np.array(centres), np.array(pitches)
    plain = cam.project(
        np.array([[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]]), records.make_camera(config, 0.0)
    )
    factor = np.array(sizes) / abs(plain[1, 1] - plain[0, 1])
    assert np.abs(pitches).max() <= 8.0 and np.ptp(pitches) > 12.0
    # The pitch shortens the bar by at most 1 − cos 8° (1 %).
    assert factor.min() > 0.94 * 0.985 and factor.max() < 1.06 * 1.001
    assert np.ptp(factor) > 0.08
    # Persp: the (1 − 1/s) move and the scaled half side keep the centre within the range.
    assert np.abs(centres).max() <= 0.04 * 1.001 and np.ptp(centres[:, 0]) > 0.06


def _grown(mask, r):
    out = np.zeros_like(mask)
    for dr in range(-r, r + 1):
        for dc in range(-r, r + 1):
            out |= np.roll(mask, (dr, dc), axis=(0, 1))
    return out


def _pixels(points, rec):
    calib = rec["calib"].astype(np.float64)
    h = np.c_[points, np.ones(len(points))] @ calib.T
    if rec["camera"] == "persp":
        return h[:, :2] / h[:, 2:3]
    return (h[:, :2] + 1.0) * (rec_size(rec) - 1) / 2.0


def rec_size(rec):
    return _plane(rec["mask"]).shape[0]


def _plane(png: bytes) -> np.ndarray:
    img = codecs.decode_png(png)
    return img.reshape(img.shape[:2])


@pytest.fixture(scope="module")
def body():
    return subjects.load_embedded_body("body_03")


@pytest.mark.parametrize("config", _configs(**STRONG), ids=["ortho", "persp"])
def test_jittered_record_is_self_consistent(body, config):
    rec = records.render_record(body, config, view=0, seed=1)
    camera = records.make_camera(config, config.yaws[0], records.subject_rng(1, body.name, 0))
    assert camera.pitch_deg != 0.0
    np.testing.assert_array_equal(rec["calib"], camera.calib)
    mask = _plane(rec["mask"]) > 127
    size = mask.shape[0]
    grown = _grown(mask, 1)
    # Inside points project onto the silhouette, outside ones mostly off it.
    for level in ("coarse", "fine"):
        pts, lab = rec[f"points_{level}"], rec[f"labels_{level}"] == 1
        px = np.rint(_pixels(pts.astype(np.float64), rec)).astype(int)
        ok = np.all((px >= 0) & (px < size), axis=1)
        assert ok[lab].all()
        assert grown[px[lab, 1], px[lab, 0]].mean() > 0.99
    # Limb keypoints land on the mask.
    kp = rec["keypoints"][list(LIMBS)]
    assert kp[:, 2].all()
    px = np.rint(kp[:, :2]).astype(int)
    assert _grown(mask, 2)[px[:, 1], px[:, 0]].all()
    # The depth maps hold the jittered pose: the nearest vertex's depth is the map's.
    norm = records.normalization(body, config)
    q = cam.to_view(norm.apply(body.mesh.vertices), camera)
    depth = codecs.png_to_depth(_plane(rec["depth_front"]), rec["camera"])
    if config.camera == "ortho":
        assert abs(depth[mask].max() - q[:, 2].max()) < 0.02
    else:  # ray distance: the nearest vertex is the smallest
        r = np.linalg.norm(q - [0.0, 0.0, camera.distance], axis=1).min()
        r_map = cam.decode_ray_depth(depth[mask], camera).min()
        assert abs(r_map - r) < 0.01


def test_unjittered_points_miss_a_jittered_mask(body):
    """The consistency test above can fail: through the plain calib the points of a
    clearly jittered view leave its mask."""
    config = _configs(**STRONG)[0]
    seed = next(
        k
        for k in range(100)
        if abs(records.make_camera(config, 30.0, records.subject_rng(k, body.name, 0)).shift[0])
        > 0.035
    )
    rec = records.render_record(body, config, view=0, seed=seed)
    plain = dict(rec, calib=records.make_camera(config, 30.0).calib)
    mask = _plane(rec["mask"]) > 127
    pts = rec["points_coarse"][rec["labels_coarse"] == 1].astype(np.float64)
    px = np.rint(_pixels(pts, plain)).astype(int).clip(0, mask.shape[0] - 1)
    assert _grown(mask, 1)[px[:, 1], px[:, 0]].mean() < 0.95

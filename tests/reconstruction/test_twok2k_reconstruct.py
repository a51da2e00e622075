"""2K2K photo -> mesh plumbing: a rendered body in, its ground-truth depth maps standing in
for the network, the written mesh lands on the body. (The network itself is checked against
the official code in tests/parity/test_twok2k_parity.py.)"""

from __future__ import annotations

import json

import cv2
import numpy as np
import point_cloud_utils as pcu
import trimesh

from hdjax.configs.twok2k import get_config
from hdjax.data import keypoints as kp_lib
from hdjax.data import render as render_lib
from hdjax.data import subjects
from hdjax.geometry import camera as cam
from hdjax.models.twok2k import canvas, forward
from hdjax.reconstruction import preprocess
from hdjax.reconstruction import twok2k as recon

SIZE = 512  # rendered here; the pipeline pads and resizes to 2048


def _openpose_json(kp31: np.ndarray) -> dict:
    """A BODY_25 + hands json whose knuckle slots (PIP 6, 10, 14, 18) hold the fingers."""
    hands = {}
    for side, first in (("left", 23), ("right", 27)):
        hand = np.zeros((21, 3), np.float32)
        hand[[6, 10, 14, 18]] = kp31[first : first + 4]
        hands[f"hand_{side}_keypoints_2d"] = hand.ravel().tolist()
    body = kp_lib.coco23_to_body25(kp31)
    return {"people": [{"pose_keypoints_2d": body.ravel().tolist(), **hands}]}


def test_ground_truth_depth_gives_the_body(tmp_path, monkeypatch):
    s = subjects.load_embedded_body("body_01")
    norm = cam.twok2k_normalization(s.mesh.vertices, s.mesh.faces)
    body = cam.normalize_mesh(s.mesh, norm)
    camera = cam.PerspCamera(size=SIZE)
    out = render_lib.render(body, camera, np.random.default_rng(0), joints=norm.apply(s.keypoints))
    rgba = np.concatenate([out["image"], 255 * out["mask"][..., None].astype(np.uint8)], -1)
    cv2.imwrite(str(tmp_path / "person.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    kp = np.concatenate([out["keypoints"], out["keypoints_visible"][:, None]], 1)
    (tmp_path / "person_keypoints.json").write_text(json.dumps(_openpose_json(kp)))

    big = cam.PerspCamera(size=canvas.CANVAS)
    up = canvas.CANVAS // SIZE

    def network_units(d):  # the render's depth, re-encoded for the 2048² camera
        d = np.repeat(np.repeat(d, up, 0), up, 1)
        r = cam.decode_ray_depth(d, camera)
        return cam.depth_to_network(cam.encode_ray_depth(r, big, mask=d > 0))

    seen = {}

    def ground_truth_forward(variables, image, theta, *, numerics, width):
        seen.update(image=np.asarray(image), theta=np.asarray(theta))
        front, back = network_units(out["depth_front"]), network_units(out["depth_back"])
        normal = np.zeros((1, *front.shape, 3), np.float32)
        return {
            "depth_front": np.where(front > 0, front, 6.0)[None],  # background far, as trained
            "depth_back": back[None],
            "depth_mask": (front > 0).astype(np.float32)[None],
            "normal_front": normal,
            "normal_back": normal,
        }

    monkeypatch.setattr(forward, "twok2k_forward", ground_truth_forward)
    fake = {"params": {"img2normal_down": {"Conv1": {"bias": np.zeros(64)}}}}  # width 64
    monkeypatch.setattr(recon, "load_variables", lambda cfg: (fake, "ground truth"))
    cfg = get_config()
    cfg.reconstruct.update(input=str(tmp_path), save_maps=True, mesh_format="both")
    summary = recon.reconstruct(cfg, str(tmp_path / "w"), preprocess.find_inputs(tmp_path))
    assert summary.written == ["person"] and not summary.failed

    image, theta = seen["image"], seen["theta"]
    assert image.shape == (1, 2048, 2048, 3) and -1 <= image.min() and image.max() <= 1
    # Background black by the alpha mask, then lifted a level by the jitter's contrast blend.
    assert image[0, 5, 5].max() < -0.95
    assert theta.shape == (1, 12, 2, 3) and np.isfinite(theta).all()
    res = tmp_path / "w" / "reconstruct"
    names = sorted(p.name for p in res.iterdir())
    assert names == sorted(
        ["person.obj", "person.ply", "person_maps.npz"]
        + [f"person_{k}_{s}.png" for k in ("depth", "normal") for s in ("front", "back")]
    )
    maps = np.load(res / "person_maps.npz")
    assert sorted(maps.files) == [
        "depth_back",
        "depth_front",
        "mask",
        "normal_back",
        "normal_front",
    ]
    assert maps["depth_front"].shape == (2048, 2048) and maps["normal_back"].shape == (
        2048,
        2048,
        3,
    )
    assert maps["depth_front"].dtype == np.float32
    depth_png = cv2.imread(str(res / "person_depth_front.png"), cv2.IMREAD_UNCHANGED)
    assert depth_png.dtype == np.uint16 and depth_png.max() > 0

    mesh = trimesh.load(res / "person.obj", process=False)
    # The official output frame: the view frame divided by the demo's 1.0367394.
    gt = body.vertices / cam.TWOK2K_OUTPUT_DIVISOR
    per_cm = norm.scale / 100.0 / cam.TWOK2K_OUTPUT_DIVISOR
    pts, _ = trimesh.sample.sample_surface(mesh, 20000, seed=np.random.default_rng(0))
    d, _, _ = pcu.closest_points_on_mesh(np.asarray(pts), gt, np.asarray(body.faces, np.int64))
    # Measured 0.09 cm mean (512² depth upsampled ×4, the demo's 3-pixel back erosion).
    assert float(d.mean()) / per_cm < 0.5, float(d.mean()) / per_cm

"""The 2K2K config: `--config=twok2k` (or `configs/twok2k.py`).

Today it runs photo -> mesh (`--mode=reconstruct`) and weight conversion (`--mode=convert`);
2K2K training is not implemented yet (issue #10, part 5).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "twok2k"  # main dispatches on it
    c.seed = 0
    # The official `ckpt_bg_mask.pth.tar` (torch zip, read without torch) or an orbax
    # directory written by `--mode=convert`; empty = random init from `seed`.
    c.checkpoint = ""
    r = ml_collections.ConfigDict()
    r.input = ""  # an image (with IMAGE_keypoints.json) or a folder of them
    r.jitter = "demo"  # demo: the official demo's fixed ColorJitter (0.85); none
    r.exif_orientation = True  # apply phone photos' EXIF rotation (OpenPose sees it applied)
    r.mesher = "stitch"  # stitch: front + back depth joined at the silhouette; poisson
    r.poisson_depth = 10  # screened Poisson octree depth (the official 10)
    r.mesh_format = "obj"  # obj | ply | both
    r.save_maps = False  # also W/reconstruct/NAME_maps.npz: the float32 2048² outputs
    r.precision = "highest"  # conv precision (matters on GPU/TPU only)
    c.reconstruct = r
    if arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (twok2k has none yet)")
    return c

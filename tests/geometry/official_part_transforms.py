"""Writes `data/part_transforms_reference.npz`: the official 2K2K solver on seeded keypoints.

Not a test: run by hand beside an extracted official checkout (never committed here),

    git -C /work/.mirror/SangHunHan92+2K2K/repo archive HEAD utils | tar -x -C /tmp/k2k
    python tests/geometry/official_part_transforms.py /tmp/k2k

It imports ``utils/ReconDataset.py`` with torchvision stubbed (only numpy runs), feeds every
keypoint set of `keypoint_sets` through the demo's preprocessing (0 -> 1024 px, then
``2·px/2048 − 1``) and ``init_affine_2048``, and stores inputs and outputs. The test
(`test_part_transforms.py`) compares `part_transforms` with the stored numbers.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np

# A standing person in 2048² pixels, 2K2K 31-joint order (x, y).
BASE = np.array([
    [1024, 420], [1044, 400], [1004, 400], [1068, 410], [980, 410],
    [1150, 560], [898, 560], [1200, 760], [850, 760], [1230, 940], [820, 940],
    [1100, 1010], [948, 1010], [1110, 1290], [938, 1290], [1115, 1560], [933, 1560],
    [1150, 1620], [1170, 1610], [1105, 1590], [898, 1620], [878, 1610], [943, 1590],
    [1245, 1010], [1240, 1020], [1232, 1022], [1222, 1018],
    [805, 1010], [810, 1020], [818, 1022], [828, 1018],
], np.float64)  # fmt: skip


def keypoint_sets(seed: int = 0) -> np.ndarray:
    """(N, 31, 2) pixel keypoint sets: scaled/rotated/jittered people and missing joints.

    Scales 0.35..1.6 switch each part's scale cap on and off; zeros are missing joints
    (some fingers, a toe, a heel) where the official solver has a fallback.
    """
    rng = np.random.default_rng(seed)
    sets = []
    centre = np.array([1024.0, 1024.0])
    for scale in (0.35, 0.6, 0.8, 1.0, 1.2, 1.6):
        for _ in range(3):
            a = np.radians(rng.uniform(-25, 25))
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            p = (BASE - centre) @ rot.T * scale + centre + rng.normal(0, 12 * scale, BASE.shape)
            p += rng.uniform(-150, 150, 2)
            sets.append(p)
    holes = [
        [23, 25],  # two left fingers missing: mean of the other two
        [27, 28, 29],  # three right fingers missing
        [17],  # left big toe -> small toe
        [21, 22],  # right small toe -> big toe, right heel -> ankle
        [18, 19, 24],
    ]
    for k, hole in enumerate(holes):
        p = sets[3 * (k % 6) + 1].copy()
        p[hole] = 0.0
        sets.append(p)
    return np.round(np.stack(sets), 3)


def main(official_root: str) -> None:
    sys.path.insert(0, official_root)
    for name in ("torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    spec = importlib.util.spec_from_file_location(
        "recon_dataset", os.path.join(official_root, "utils", "ReconDataset.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sets = keypoint_sets()
    import torch

    outs, thetas = [], []
    for p in sets:
        q = p.copy()
        q[np.where(q == 0)] = 1024  # the demo's rule
        q = 2 * q / 2048 - 1
        affine = mod.init_affine_2048(q.astype(np.float64))
        outs.append(affine)
        thetas.append(mod.inv_aff(torch.from_numpy(affine)).numpy())  # as the demo feeds it
    out_path = os.path.join(os.path.dirname(__file__), "data", "part_transforms_reference.npz")
    np.savez_compressed(
        out_path,
        keypoints=sets,
        image_to_canonical=np.stack(outs),
        canonical_to_image=np.stack(thetas),
    )
    print("wrote", out_path, sets.shape)


if __name__ == "__main__":
    main(sys.argv[1])

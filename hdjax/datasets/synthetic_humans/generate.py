"""Generate the embedded synthetic bodies (`hdjax/data/assets/bodies/*.npz`) with anny.

Needs torch and the `embedded-bodies` extra; the dataset builders only read the `.npz` files
this writes and need neither torch nor anny. anny's warp-lang dependency is not needed on CPU:

    pip install torch==2.13.0            # the local CPU wheel
    pip install --no-deps anny==0.6.2 roma==1.8.0 safetensors==0.8.0   # + pyyaml, scipy

    python -m hdjax.datasets.synthetic_humans.generate --out=hdjax/data/assets/bodies

Each body is one adult anny phenotype in one procedural pose, reduced to the watertight body
piece (eyeballs and mouth cavity dropped), with procedural "clothing" vertex colours drawn
from anny's UV part segmentation plus keypoint-relative cuts, and 23 COCO-WholeBody
keypoints (body 17 + feet 6). Saved frame: metres, +y up, the body faces +z, feet on y = 0,
pelvis above the origin. The first anny model build parses its assets (1-3 min of CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import numpy as np

from hdjax.datasets.synthetic_humans.bodies import largest_piece
from hdjax.datasets.synthetic_humans.bodies import to_subject_frame as to_saved_frame

# anny's `coco` regressor order is COCO-17 then (L big toe, R big toe, L small toe, R small
# toe, L heel, R heel); 2K2K's 31-joint layout expects COCO-WholeBody foot order.
ANNY_TO_WHOLEBODY = (*range(17), 17, 19, 21, 18, 20, 22)

# Part ids stored per vertex (the builders only need the colours; kept for debugging).
SKIN, HAIR, SHIRT, TROUSERS, SHOES = range(5)
PART_NAMES = ("skin", "hair", "shirt", "trousers", "shoes")

SKIN_TONES = np.array(
    [[241, 194, 167], [224, 172, 138], [198, 134, 96], [161, 102, 72], [110, 70, 48]],
    np.float64,
)
HAIR_COLOURS = np.array([[30, 22, 18], [70, 45, 28], [120, 85, 50], [190, 160, 110]], np.float64)
TROUSER_COLOURS = np.array(
    [[40, 60, 105], [70, 95, 140], [30, 30, 34], [150, 130, 95], [95, 95, 100]], np.float64
)
SHOE_COLOURS = np.array([[20, 20, 22], [235, 235, 230], [100, 60, 35], [160, 40, 40]], np.float64)


@dataclasses.dataclass(frozen=True)
class Subject:
    """One body to generate: anny phenotype values in [0, 1], a pose name and a colour seed."""

    name: str
    gender: float
    age: float  # anny: 0.5 ≈ 25 years; adults only here
    muscle: float
    weight: float
    height: float
    pose: str
    seed: int


SUBJECTS = (
    Subject("body_00", 0.0, 0.50, 0.60, 0.50, 0.55, "apose", 0),
    Subject("body_01", 1.0, 0.55, 0.45, 0.45, 0.45, "walk", 1),
    Subject("body_02", 0.1, 0.70, 0.50, 0.75, 0.42, "casual", 2),
    Subject("body_03", 0.9, 0.62, 0.40, 0.65, 0.35, "reach", 3),
    Subject("body_04", 0.0, 0.58, 0.85, 0.40, 0.62, "walk", 4),
    Subject("body_05", 1.0, 0.80, 0.35, 0.55, 0.55, "casual", 5),
    Subject("body_06", 0.3, 0.52, 0.55, 0.30, 0.65, "reach", 6),
    Subject("body_07", 0.7, 0.66, 0.50, 0.85, 0.60, "apose", 7),
)


def pose_rotations(pose: str, rng: np.random.Generator) -> dict[str, tuple[float, float, float]]:
    """Per-bone rotation vectors (degrees, anny world axes) for a procedural pose.

    anny's ``local-ref`` deltas act in world-aligned frames at each bone head (Z up, body
    facing −Y, its left at +x): about +x a limb swings backwards, about +y the left arm
    drops towards the body (the right arm with −y), about +x the spine bends forwards.
    Identity is anny's rest A-pose; small jitter keeps two bodies in one pose distinct.
    """

    def j(scale: float = 4.0) -> float:
        return float(rng.normal(0.0, scale))

    rot: dict[str, tuple[float, float, float]] = {"neck01": (j(3), j(3), j(8))}
    if pose == "apose":
        rot |= {"upperarm01.L": (j(), j(), 0.0), "upperarm01.R": (j(), j(), 0.0)}
    elif pose == "casual":
        rot |= {
            "upperarm01.L": (j(), 18 + j(), 0.0),
            "upperarm01.R": (j(), -18 + j(), 0.0),
            "lowerarm01.L": (-25 + j(), 0.0, 0.0),
            "lowerarm01.R": (-15 + j(), 0.0, 0.0),
            "upperleg01.L": (0.0, -6 + j(2), 0.0),
            "spine03": (j(2), 4 + j(2), j(4)),
        }
    elif pose == "walk":
        swing = 22 + j(3)
        rot |= {
            "upperleg01.L": (-swing, 0.0, 0.0),
            "upperleg01.R": (0.7 * swing, 0.0, 0.0),
            "lowerleg01.R": (25 + j(3), 0.0, 0.0),
            "lowerleg01.L": (5.0, 0.0, 0.0),
            "foot.R": (-10.0, 0.0, 0.0),
            "upperarm01.L": (0.8 * swing, 15 + j(2), 0.0),
            "upperarm01.R": (-0.8 * swing, -15 + j(2), 0.0),
            "lowerarm01.L": (-10.0, 0.0, 0.0),
            "lowerarm01.R": (-30.0, 0.0, 0.0),
            "spine03": (3.0, 0.0, j(3)),
        }
    elif pose == "reach":
        rot |= {
            "upperarm01.R": (-75 + j(5), -10 + j(3), 0.0),
            "lowerarm01.R": (-15 + j(3), 0.0, 0.0),
            "upperarm01.L": (j(), 10 + j(), 0.0),
            "lowerarm01.L": (-20 + j(3), 0.0, 0.0),
            "spine03": (5 + j(2), 0.0, -8 + j(3)),
            "upperleg01.R": (-8.0, 0.0, 0.0),
        }
    else:
        raise ValueError(f"unknown pose {pose!r}")
    return rot


def uv_parts(model, seg_png: str, seg_yaml: str) -> np.ndarray:
    """(V,) names of anny's UV segmentation region ("body", "head", "hand.L", ...) per vertex."""
    import cv2
    import yaml

    with open(seg_yaml) as f:
        colours = yaml.safe_load(f)["colors"]
    names = list(colours)
    palette = np.array([colours[n] for n in names], np.float64)
    img = cv2.imread(seg_png, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float64)
    uv = model.texture_coordinates.detach().cpu().numpy()
    faces = np.asarray(model.faces.detach().cpu().numpy(), np.int64)
    uv_idx = model.face_texture_coordinate_indices.detach().cpu().numpy()
    vert_uv = np.zeros((int(faces.max()) + 1, 2))
    vert_uv[faces.reshape(-1)] = uv[uv_idx.reshape(-1)]
    h, w = img.shape[:2]
    col = np.clip((vert_uv[:, 0] * (w - 1)).round().astype(int), 0, w - 1)
    row = np.clip(((1.0 - vert_uv[:, 1]) * (h - 1)).round().astype(int), 0, h - 1)
    rgb = img[row, col]
    nearest = np.argmin(((rgb[:, None] - palette[None]) ** 2).sum(-1), axis=1)
    return np.array(names)[nearest]


def clothing_parts(
    rest: np.ndarray, kp: np.ndarray, region: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Procedural garment labels from rest-pose (A-pose) geometry.

    Args:
      rest: (V, 3) rest vertices, anny frame (Z up). kp: (23, 3) rest keypoints, anny order.
      region: (V,) UV region names.

    Returns:
      (V,) uint8 part ids (SKIN, HAIR, SHIRT, TROUSERS, SHOES).
    """
    x, y, z = rest[:, 0], rest[:, 1], rest[:, 2]
    parts = np.full(len(rest), SKIN, np.uint8)
    body = region == "body"
    hip_z = kp[11:13, 2].mean()
    sh_z, sh_x = kp[5:7, 2].mean(), np.abs(kp[5:7, 0]).mean()
    wr_x = np.abs(kp[9:11, 0]).mean()
    knee_z, ankle_z = kp[13:15, 2].mean(), kp[15:17, 2].mean()
    waist_z = hip_z + rng.uniform(0.12, 0.22) * (sh_z - hip_z)
    # Sleeves run from the shoulder to a random fraction of the way to the wrist.
    sleeve_x = sh_x + rng.choice([0.25, 0.5, 0.95]) * (wr_x - sh_x)
    on_arm = np.abs(x) > sh_x
    shirt = body & (z > waist_z - 0.03) & (z < sh_z + 0.05) & ~(on_arm & (np.abs(x) > sleeve_x))
    parts[shirt] = SHIRT
    hem_z = rng.choice([knee_z - 0.04, ankle_z + 0.06])
    trousers = body & (z <= waist_z + 0.03) & (z > hem_z) & ~on_arm
    parts[trousers & ~shirt] = TROUSERS
    parts[np.isin(region, ["foot.L", "foot.R"])] = SHOES
    ear_z, ear_y = kp[3:5, 2].mean(), kp[3:5, 1].mean()
    hair = (region == "head") & ((z > ear_z + 0.04) | ((z > ear_z - 0.07) & (y > ear_y + 0.01)))
    parts[hair] = HAIR
    return parts


def part_colours(parts: np.ndarray, rest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(V,) part ids -> (V, 3) uint8 colours: one palette draw per part, mild shading noise."""
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05)
    hsv_shirt = np.array([rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.35, 0.95)])
    shirt = _hsv_to_rgb(hsv_shirt) * 255.0
    table = np.stack(
        [
            skin,
            HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
            shirt,
            TROUSER_COLOURS[rng.integers(len(TROUSER_COLOURS))],
            SHOE_COLOURS[rng.integers(len(SHOE_COLOURS))],
        ]
    )
    rgb = table[parts]
    if rng.random() < 0.5:  # horizontal stripes on some shirts
        stripe = (np.floor(rest[:, 2] / 0.035) % 2 == 0) & (parts == SHIRT)
        rgb[stripe] = rgb[stripe] * 0.55 + 255.0 * 0.45 * rng.uniform(0.2, 1.0)
    # Low-frequency shading noise so flat regions are not perfectly uniform.
    phase = rng.uniform(0, 2 * math.pi, 3)
    wave = np.sin(rest @ np.array([23.0, 19.0, 29.0]) + phase[0]) * np.sin(
        rest @ np.array([-17.0, 31.0, 13.0]) + phase[1]
    )
    rgb = rgb * (1.0 + 0.06 * wave[:, None])
    return np.clip(rgb.round(), 0, 255).astype(np.uint8)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def min_limb_gap(vertices: np.ndarray, bone_of_vertex: np.ndarray, labels: list[str]) -> float:
    """Smallest distance (m) between forearm/hand vertices and torso/thigh vertices.

    A cheap self-intersection screen: a posed arm pushed into the hip makes the surface
    cross itself, which breaks inside/outside labels.
    """
    from scipy.spatial import cKDTree

    name = [labels[b] for b in bone_of_vertex]
    # Forearms and hands only: the upper arm meets the torso at the armpit by construction.
    arm = np.array([n.startswith(("lowerarm", "wrist", "finger", "metacarpal")) for n in name])
    trunk = np.array([n.startswith(("spine0", "pelvis", "root", "upperleg")) for n in name])
    if not arm.any() or not trunk.any():
        return math.inf
    d, _ = cKDTree(vertices[trunk]).query(vertices[arm])
    return float(d.min())


def generate(out_dir: str, subjects=SUBJECTS, min_gap: float = 0.012) -> list[dict]:
    """Write one `<name>.npz` per subject plus `index.json`; returns the index entries."""
    import anny
    import roma
    import torch
    import trimesh
    from anny.paths import get_anny_root_dir

    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    model = anny.Anny(skinning_method="lbs")
    regressor = anny.KeypointsRegressor.coco(model)
    print(f"anny model ready in {time.time() - t0:.1f}s")
    seg_dir = get_anny_root_dir() / "data" / "segmentation"
    region = uv_parts(
        model,
        str(seg_dir / "body_parts_segmentation.png"),
        str(seg_dir / "body_parts_segmentation.yaml"),
    )
    faces_all = np.asarray(model.faces.detach().cpu().numpy(), np.int64)
    kept, faces = largest_piece(faces_all, len(region))
    weights = model.vertex_bone_weights.detach().cpu().numpy()
    indices = model.vertex_bone_indices.detach().cpu().numpy()
    bone_of_vertex = indices[np.arange(len(indices)), weights.argmax(1)][kept]
    labels = list(model.bone_labels)
    num_bones = len(labels)

    def run(pose: dict[str, tuple[float, float, float]], phen: dict[str, float]):
        params = torch.eye(4, dtype=model.dtype)[None, None].repeat(1, num_bones, 1, 1)
        for bone, rv in pose.items():
            vec = torch.tensor(np.radians(rv), dtype=model.dtype)
            params[0, labels.index(bone), :3, :3] = roma.rotvec_to_rotmat(vec)
        with torch.no_grad():
            out = model(pose_parameters=params, phenotype_kwargs=phen)
            kp = regressor(out)[0].cpu().numpy()
        return out["vertices"][0].cpu().numpy(), kp

    index = []
    for subj in subjects:
        rng = np.random.default_rng(1000 + subj.seed)
        phen = {k: getattr(subj, k) for k in ("gender", "age", "muscle", "weight", "height")}
        rest_v, rest_kp = run({}, phen)
        parts = clothing_parts(rest_v[kept], rest_kp, region[kept], rng)
        colours = part_colours(parts, rest_v[kept], rng)
        for _attempt in range(20):
            pose = pose_rotations(subj.pose, rng)
            v, kp = run(pose, phen)
            gap = min_limb_gap(v[kept], bone_of_vertex, labels)
            if gap >= min_gap:
                break
        else:
            raise RuntimeError(f"{subj.name}: no pose without self-contact (gap {gap:.4f} m)")
        v = to_saved_frame(v[kept])
        kp = to_saved_frame(kp[list(ANNY_TO_WHOLEBODY)])
        shift = np.array([kp[11:13, 0].mean(), v[:, 1].min(), kp[11:13, 2].mean()])
        v, kp = v - shift, kp - shift
        mesh = trimesh.Trimesh(v, faces, process=False)
        if not mesh.is_watertight:
            raise RuntimeError(f"{subj.name}: body piece is not watertight")
        meta = dataclasses.asdict(subj) | {
            "height_m": float(v[:, 1].max()),
            "min_limb_gap_m": gap,
            "pose_degrees": pose,
        }
        np.savez_compressed(
            os.path.join(out_dir, f"{subj.name}.npz"),
            vertices=v.astype(np.float32),
            faces=faces.astype(np.int32),
            colors=colours,
            parts=parts,
            keypoints=kp.astype(np.float32),
            meta=np.array(json.dumps(meta)),
        )
        index.append(meta)
        print(f"{subj.name}: {subj.pose:7s} {meta['height_m']:.2f} m, gap {gap * 100:.1f} cm")
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(
            {"part_names": PART_NAMES, "keypoint_order": "coco_wholebody_23", "bodies": index},
            f,
            indent=1,
        )
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="hdjax/data/assets/bodies")
    args = parser.parse_args()
    generate(args.out)


if __name__ == "__main__":
    main()

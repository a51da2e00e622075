"""Contact sheet of generated, clothed bodies (`bodies`, `garments` of this package): front
and side view of each, with the 31 keypoints (left side red, right side blue, centre white)
drawn on the front view (``--keypoints``).

    python -m hdjax.datasets.synthetic_humans.body_sheet --seed=0 --num=16 --out=docs/bodies.png

Also prints per-body timing and the sampled parameters (``--stats`` for min/median/max over
the bodies and garment counts instead of the sheet; ``--naked`` for bodies without clothes).
Needs the `bodies` extra.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from hdjax.data import render, render_config
from hdjax.datasets.synthetic_humans import bodies
from hdjax.geometry import camera

# COCO-WholeBody 23 + 2K2K finger slots: which side each keypoint is on.
_LEFT = {1, 3, 5, 7, 9, 11, 13, 15, 17, 18, 19, *range(23, 27)}
_RIGHT = {2, 4, 6, 8, 10, 12, 14, 16, 20, 21, 22, *range(27, 31)}


def render_views(
    body: bodies.GeneratedBody, size: int, yaws=(0.0, 90.0), seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """`render.render` of the body's subject at each yaw (PIFu normalisation, ortho camera)."""
    subject = body.subject()
    center = render_config.RenderConfig.center  # the datasets' default centre rule
    norm = camera.pifu_normalization(subject.mesh.vertices, 1, subject.mesh.faces, center)
    mesh = camera.normalize_mesh(subject.mesh, norm)
    joints = norm.apply(subject.keypoints)
    out = []
    for yaw in yaws:
        cam = camera.OrthoCamera(size=size, yaw_deg=yaw)
        out.append(render.render(mesh, cam, np.random.default_rng(seed), joints=joints))
    return out


def tile(body: bodies.GeneratedBody, size: int, keypoints: bool = False) -> np.ndarray:
    """(size, 2·size, 3) uint8: front view (keypoints optional), side view, and a caption."""
    front, side = render_views(body, size)
    img = front["image"].copy()
    for k, (u, v) in enumerate(front["keypoints"] if keypoints else []):
        colour = (230, 40, 40) if k in _LEFT else (40, 90, 240) if k in _RIGHT else (255, 255, 255)
        cv2.circle(img, (round(float(u)), round(float(v))), max(1, size // 128), colour, -1)
    row = np.concatenate([img, side["image"]], axis=1)
    p = body.phenotype
    caption = f"{body.pose} {p.age_years:.0f}y g{p.gender:.1f} {body.stature_m:.2f}m"
    cv2.putText(row, caption, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1)
    styles = " ".join(_short(g.spec) for g in body.garments)
    cv2.putText(row, styles, (3, size - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1)
    return row


def _short(spec) -> str:
    if spec.kind == "hair":
        return f"{spec.style} hair"
    if spec.kind in ("top", "dress"):
        return f"{spec.kind}:{spec.style.split('_')[1]}"
    return spec.kind


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=int, default=16)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--size", type=int, default=192, help="pixels per view")
    p.add_argument("--cols", type=int, default=4, help="bodies per row")
    p.add_argument("--out", default="bodies.png")
    p.add_argument("--stats", action="store_true", help="print parameter statistics only")
    p.add_argument("--naked", action="store_true", help="bodies without clothes")
    p.add_argument("--keypoints", action="store_true", help="draw the keypoints")
    args = p.parse_args()
    t0 = time.time()
    model = bodies.BodyModel()
    print(f"body model loaded in {time.time() - t0:.1f}s")
    t0 = time.time()
    made = [
        bodies.generate_body(model, args.seed, i, clothed=not args.naked)
        for i in range(args.start, args.start + args.num)
    ]
    dt = (time.time() - t0) / args.num
    dressing = np.asarray([b.garment_seconds for b in made])
    print(
        f"{args.num} bodies, {dt:.3f}s per body (dressing: mean {dressing.mean() * 1e3:.0f} ms, "
        f"max {dressing.max() * 1e3:.0f} ms), {sum(b.rejected for b in made)} rejected draws"
    )
    if args.stats:
        print_stats(made)
        return
    rows = [tile(b, args.size, args.keypoints) for b in made]
    rows += [np.zeros_like(rows[0])] * (-len(rows) % args.cols)
    grid = [np.concatenate(rows[i : i + args.cols], axis=1) for i in range(0, len(rows), args.cols)]
    sheet = np.concatenate(grid, axis=0)
    # A 256-colour palette keeps the committed sheet small (~3x smaller than RGB).
    from PIL import Image

    Image.fromarray(sheet).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


def print_stats(made: list[bodies.GeneratedBody]) -> None:
    """min / median / max of every sampled parameter, pose counts and rejections."""
    rows = {
        "age_years": [b.phenotype.age_years for b in made],
        "stature_m": [b.stature_m for b in made],
        **{
            k: [getattr(b.phenotype, k) for b in made]
            for k in ("gender", "age", "muscle", "weight", "height", "proportions")
        },
    }
    for k, vals in rows.items():
        v = np.asarray(vals)
        print(f"{k:12s} min {v.min():.3f}  median {np.median(v):.3f}  max {v.max():.3f}")
    g = np.asarray(rows["gender"])
    print(f"gender <0.2: {np.mean(g < 0.2):.0%}, 0.2-0.8: {np.mean((g >= 0.2) & (g <= 0.8)):.0%}")
    for key in ("drawn_pose", "pose"):
        poses, counts = np.unique([getattr(b, key) for b in made], return_counts=True)
        print(f"{key}:", dict(zip(poses.tolist(), counts.tolist(), strict=True)))
    rej = np.asarray([b.rejected for b in made])
    print(f"rejected draws: {rej.sum()} over {len(made)} bodies (max {rej.max()} for one body)")
    specs = [g.spec for b in made for g in b.garments]
    for label, keys in (
        ("garments", [s.kind for s in specs]),
        ("styles", [f"{s.kind}:{s.style}" for s in specs]),
        ("patterns", [s.pattern for s in specs if s.kind != "hair"]),
        ("hair colours", [s.colour_name for s in specs if s.kind == "hair"]),
    ):
        names, counts = np.unique(keys, return_counts=True)
        print(f"{label}:", dict(zip(names.tolist(), counts.tolist(), strict=True)))
    tones = np.asarray([b.skin_tone for b in made])
    hist = np.histogram(tones, bins=np.arange(1, 11))[0]
    print("skin tone (Monk 1-10) per unit bin:", hist.tolist())
    faces = np.asarray([sum(len(g.faces) for g in b.garments) for b in made])
    print(f"garment faces per body: median {np.median(faces):.0f}, max {faces.max()}")


if __name__ == "__main__":
    main()

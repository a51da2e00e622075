"""What a trained model makes of held-out subjects, turned 90°: one PNG for the model card.

    python -m hdjax.tools.model_sheet --config=pifuhd:small --workdir=W --out=docs/x.png
    python -m hdjax.tools.model_sheet --photo=P.png --mesh=OUT/P.obj --out=docs/y.png

Reads the meshes the eval job wrote for one evaluated step (``W/eval/step_<S>/*.obj``; the
kept best by default) and draws one row per held-out subject: the input image, then normal
renders of the prediction and of the ground truth from the front (0°) and from the side
(90°), where a model that only learned the silhouette shows it (an extruded slab). With
``--photo`` and ``--mesh`` (a `--mode=reconstruct` output) it draws one row instead: the
photo, then the mesh from the front and turned 90°.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import trimesh

from hdjax import configlib
from hdjax.errors import HdjaxError


def sheet(cfg, workdir: str, step: int | None = None, rows: int = 6, size: int = 160) -> np.ndarray:
    """(rows · size, 5 · size, 3) uint8 RGB: input | ours 0° | truth 0° | ours 90° | truth 90°."""
    from hdjax.eval import job, metrics

    if step is None:
        try:
            with open(os.path.join(workdir, "best", "best.json")) as f:
                step = int(json.load(f)["step"])
        except (OSError, ValueError, KeyError) as e:
            raise HdjaxError(f"no kept best checkpoint ({e}); give --step", workdir) from None
    folder = os.path.join(workdir, "eval", f"step_{step}")
    out = []
    for subject in job.eval_subjects(cfg, workdir)[:rows]:
        view = job.render_views(cfg, subject)[0]
        path = os.path.join(folder, f"{view.name}.obj")
        if not os.path.isfile(path):
            raise HdjaxError(f"no evaluated mesh of {view.name} at step {step}", folder)
        pred = trimesh.load(path, force="mesh", process=False)
        # views=4: yaws 0, 90, 180, 270; the first two are drawn.
        ours, gt = (metrics.normal_images(m, size=size, views=4) for m in (pred, view.gt))
        tiles = [cv2.resize(view.image, (size, size), interpolation=cv2.INTER_AREA)]
        for k in range(2):  # yaw 0, then 90
            tiles += [(x[k] * 255).round().astype(np.uint8) for x in (ours, gt)]
        out.append(np.concatenate(tiles, axis=1))
    return np.concatenate(out, axis=0)


def photo_row(photo: np.ndarray, mesh: trimesh.Trimesh, size: int = 256) -> np.ndarray:
    """(size, 3 · size, 3) uint8 RGB: the photo (letterboxed), the mesh at 0° and at 90°."""
    from hdjax.eval import metrics

    h, w = photo.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(photo[..., :3], (round(w * scale), round(h * scale)), cv2.INTER_AREA)
    tile = np.full((size, size, 3), 255, np.uint8)
    top, left = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    tile[top : top + small.shape[0], left : left + small.shape[1]] = small
    views = metrics.normal_images(mesh, size=size, views=4)
    return np.concatenate([tile, *((views[k] * 255).round().astype(np.uint8) for k in (0, 1))], 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="the run's config (pifuhd:small, ...)")
    p.add_argument("--workdir")
    p.add_argument("--photo", help="with --mesh: one row, photo | mesh 0° | mesh 90°")
    p.add_argument("--mesh", help="the photo's reconstructed mesh (.obj / .ply)")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--step", type=int, help="evaluated step (default: the kept best)")
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--size", type=int, default=160)
    args = p.parse_args()
    try:
        if args.photo or args.mesh:
            if not (args.photo and args.mesh):
                raise HdjaxError("--photo and --mesh go together")
            photo = cv2.imread(args.photo, cv2.IMREAD_COLOR)
            if photo is None:
                raise HdjaxError("not a readable image", args.photo)
            mesh = trimesh.load(args.mesh, force="mesh", process=False)
            img = photo_row(photo[..., ::-1], mesh, args.size)
        elif not (args.config and args.workdir):
            raise HdjaxError("give --config and --workdir (or --photo and --mesh)")
        else:
            cfg = configlib.load_config(args.config)
            img = sheet(cfg, args.workdir, args.step, args.rows, args.size)
    except HdjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    cv2.imwrite(args.out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

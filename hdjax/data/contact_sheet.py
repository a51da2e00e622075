"""Contact sheet of a built dataset: one row per record, to eyeball what training will see.

    python -m hdjax.data.contact_sheet \
        --data_dir=~/tensorflow_datasets/synthetic_humans/pifuhd/1.1.0 --out=sheet.png --num=6

Records are those of `hdjax.data.records`. Columns: image, mask, front normals, back
normals, front depth, back depth (each depth map stretched over its own foreground range,
near = bright), and the image with stored points projected in colour (inside green,
outside red).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from absl import app, flags

from hdjax.data.codecs import record_camera
from hdjax.errors import HdjaxError
from hdjax.geometry.projection import orthogonal, perspective

INSIDE_RGB = (40, 220, 60)
OUTSIDE_RGB = (230, 40, 40)


def project_pixels(points: np.ndarray, calib: np.ndarray, camera: str, size: int) -> np.ndarray:
    """(N, 3) normalised points -> (N, 2) float (col, row) pixels of a ``size``² record."""
    p, c = np.asarray(points)[None], np.asarray(calib)[None]
    if camera == "persp":
        return perspective(p, c)[0, :, :2]
    return (orthogonal(p, c)[0, :, :2] + 1.0) * (size - 1) / 2.0


def depth_tile(png: np.ndarray, mask: np.ndarray, near_is_large: bool) -> np.ndarray:
    """(S, S) stored depth -> (S, S, 3) uint8 grey, stretched over the foreground, near bright.

    Ortho PNGs store view z (larger = nearer the camera), 2K2K ones the ray distance
    (larger = farther), hence ``near_is_large``.
    """
    d = png.astype(np.float32)
    tile = np.zeros(mask.shape, np.uint8)
    if mask.any():
        lo, hi = d[mask].min(), d[mask].max()
        t = (d - lo) / max(hi - lo, 1e-6)
        near = t if near_is_large else 1.0 - t
        tile[mask] = (55 + 200 * near[mask]).astype(np.uint8)
    return np.repeat(tile[..., None], 3, axis=-1)


def _fit(tile: np.ndarray, side: int) -> np.ndarray:
    interp = cv2.INTER_AREA if side < tile.shape[0] else cv2.INTER_NEAREST
    return cv2.resize(np.asarray(tile, np.uint8), (side, side), interpolation=interp)


def record_row(record: dict[str, Any], tile: int | None = None, max_points: int = 2000):
    """(T, 7·T, 3) uint8 RGB tiles of one decoded record (a TFDS data-source element).

    ``tile`` is the side T of each tile (default: the record's size). Points are drawn
    after the resize, so they stay visible however much the tiles shrink.
    """
    image = np.asarray(record["image"])
    size = image.shape[0]
    side = size if tile is None else tile
    mask = np.asarray(record["mask"]).reshape(size, size) > 127
    camera = record_camera(record)
    depths = [
        depth_tile(np.asarray(record[f"depth_{s}"]).reshape(size, size), mask, camera == "ortho")
        for s in ("front", "back")
    ]
    tiles = [
        image,
        np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=-1),
        np.asarray(record["normal_front"]),
        np.asarray(record["normal_back"]),
        *depths,
        (image.astype(np.float32) * 0.6).astype(np.uint8),
    ]
    tiles = [_fit(t, side) for t in tiles]
    points = np.asarray(record["points_coarse"])[:max_points]
    labels = np.asarray(record["labels_coarse"])[:max_points]
    px = project_pixels(points, np.asarray(record["calib"]), camera, size)
    # Pixel centres at integers on both grids: scale about the half-pixel corner.
    px = np.rint((px + 0.5) * side / size - 0.5).astype(int)
    overlay = tiles[-1]
    ok = np.all((px >= 0) & (px < side), axis=1)
    for inside, colour in ((False, OUTSIDE_RGB), (True, INSIDE_RGB)):
        sel = ok & ((labels == 1) == inside)
        overlay[px[sel, 1], px[sel, 0]] = colour
    return np.concatenate(tiles, axis=1)


def make_sheet(records: Sequence[dict[str, Any]], tile: int = 256) -> np.ndarray:
    """Rows of `record_row`, each tile ``tile`` px: (n·tile, 7·tile, 3) uint8 RGB."""
    return np.concatenate([record_row(r, tile) for r in records], axis=0)


FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Built dataset folder (holds dataset_info.json).")
flags.DEFINE_string("split", "train", "Split to show.")
flags.DEFINE_string("out", "sheet.png", "Output PNG.")
flags.DEFINE_integer("num", 6, "Records to show (evenly spread over the split).")
flags.DEFINE_integer("tile", 256, "Tile side in pixels.")


def main(argv: Sequence[str]) -> None:
    del argv
    from hdjax.data import pipeline

    if FLAGS.data_dir is None:
        raise app.UsageError("--data_dir is required")
    try:
        source = pipeline.open_source(FLAGS.data_dir, FLAGS.split)
    except HdjaxError as e:
        raise SystemExit(f"error: {e}") from None
    n = min(FLAGS.num, len(source))
    picks = np.linspace(0, len(source) - 1, n).round().astype(int)
    sheet = make_sheet([source[int(i)] for i in picks], FLAGS.tile)
    cv2.imwrite(FLAGS.out, sheet[..., ::-1])
    print(f"wrote {FLAGS.out}: {n} records of {len(source)} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    app.run(main)

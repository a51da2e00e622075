"""Warp back: each part's normals are sampled only on the image pixels its window can reach
(a box computed on the host from theta, `warp_boxes`) and accumulated into one S^2 sum,
instead of the official twelve full 2048^2 frames.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hdjax.errors import HdjaxError
from hdjax.models.twok2k.canvas import CANVAS, N_PARTS, OFFICIAL, Geometry
from hdjax.models.twok2k.sampling import affine_coords, bilinear_sample, crop_window

# Warp-back boxes are rounded up to this many pixels, so nearby poses share a compilation.
BOX_QUANTUM = 64
BOX_MARGIN = 2


class WarpBoxes(NamedTuple):
    """Per part, the image box that holds every pixel its window can reach.

    sizes: 12 static (h, w); offsets: (B, 12, 2) int32 top-left corners (row, col).
    """

    sizes: tuple[tuple[int, int], ...]
    offsets: np.ndarray


def warp_boxes(
    theta: np.ndarray, quantum: int = BOX_QUANTUM, geom: Geometry = OFFICIAL
) -> WarpBoxes:
    """Image boxes of the 12 part windows mapped by theta (host-side, numpy).

    theta (B, 12, 2, 3) concrete. A box is the bounding box of the window's corners in the
    image plus a 2-pixel margin, its size rounded up to `quantum` (shared by the batch) and
    clipped to the image; sizes are static shapes of the compiled forward.
    """
    theta = np.asarray(theta, np.float64)
    if theta.ndim != 4 or theta.shape[1:] != (N_PARTS, 2, 3):
        raise HdjaxError(f"theta must be (B, {N_PARTS}, 2, 3), got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise HdjaxError("theta holds non-finite values (a part transform failed)")
    sizes, offsets = [], []
    n = geom.canvas
    for i, (h, w) in enumerate(geom.part_crop):
        rows, cols = crop_window(h, w, n)
        cy = (2 * np.array([rows[0], rows[-1]], np.float64) + 1) / n - 1
        cx = (2 * np.array([cols[0], cols[-1]], np.float64) + 1) / n - 1
        u, v = np.meshgrid(cx, cy)
        pts = np.stack([u.ravel(), v.ravel(), np.ones(4)])  # (3, 4)
        img = theta[:, i] @ pts  # (B, 2, 4), normalised image coords
        pix = ((img + 1) * n - 1) / 2
        lo = np.floor(pix.min(-1)) - BOX_MARGIN  # (B, 2) (x, y)
        hi = np.ceil(pix.max(-1)) + BOX_MARGIN
        size = np.max(hi - lo + 1, axis=0)
        size = np.minimum(np.ceil(size / quantum) * quantum, n).astype(int)
        off = np.clip(lo, 0, n - size).astype(np.int32)
        sizes.append((int(size[1]), int(size[0])))
        offsets.append(off[:, ::-1])
    return WarpBoxes(tuple(sizes), np.stack(offsets, 1).astype(np.int32))


def full_frame_boxes(batch: int, canvas: int = CANVAS) -> WarpBoxes:
    """Boxes covering the whole image (for a traced theta: no host-side bounds)."""
    return WarpBoxes(((canvas, canvas),) * N_PARTS, np.zeros((batch, N_PARTS, 2), np.int32))


def warp_back_part(acc, part_map, inv_theta, offset, size):
    """Adds one part's weighted normals and weight into the image accumulator.

    acc (S, S, 7) [sum w n (6), sum w]; part_map (h, w, 7) [normal (6), weight] on the
    part's crop window; inv_theta (2, 3) image -> canonical; offset (2,) box corner.
    """
    h, w = part_map.shape[:2]
    n = acc.shape[0]
    rows = offset[0] + jnp.arange(size[0])
    cols = offset[1] + jnp.arange(size[1])
    ix, iy = affine_coords(inv_theta, rows, cols, n)
    # Outside the window the official padded map is zero: one zero pixel around the window
    # and clipped indices give the same taps.
    padded = jnp.pad(part_map, ((1, 1), (1, 1), (0, 0)))
    ix = ix - np.float32(n // 2 - w // 2 - 1)
    iy = iy - np.float32(n // 2 - h // 2 - 1)
    s = bilinear_sample(padded, jnp.clip(ix, -2, w + 2), jnp.clip(iy, -2, h + 2))
    contrib = jnp.concatenate([s[..., :6] * s[..., 6:], s[..., 6:]], -1)
    box = jax.lax.dynamic_slice(acc, (offset[0], offset[1], 0), (size[0], size[1], 7))
    return jax.lax.dynamic_update_slice(acc, box + contrib, (offset[0], offset[1], 0))


def blend_part_normals(
    part_normals, weights, inv_theta, boxes: WarpBoxes, canvas: int = CANVAS
) -> tuple:
    """Warps the 12 part normals back into the image and blends them.

    part_normals: list of 12 arrays (B, h_i, w_i, 6); weights: list of 12 (B, h_i, w_i)
    unnormalised blending weights; inv_theta (B, 12, 2, 3).
    Returns (merged normals (B, S, S, 6), weight sum (B, S, S)), S = canvas.
    """

    def one(pn, wt, inv, off):
        acc = jnp.zeros((canvas, canvas, 7), jnp.float32)
        for i in range(N_PARTS):
            pmap = jnp.concatenate([pn[i], wt[i][..., None]], -1)
            acc = warp_back_part(acc, pmap, inv[i], off[i], boxes.sizes[i])
        total = acc[..., 6]
        return acc[..., :6] / jnp.where(total == 0, 1.0, total)[..., None], total

    return jax.vmap(one)(part_normals, weights, inv_theta, jnp.asarray(boxes.offsets))

"""Occupancy training points for PIFuHD: PIFu's sampling, labelled by winding number.

`sample_points(mesh, rng, n, sigma, ratio=16)` follows PIFu's ``select_sampling_method``:
``4n`` points sampled uniformly on the surface (area-weighted) plus isotropic Gaussian
noise of standard deviation ``sigma``, and ``4n / ratio`` points uniform in a box (PIFu's
16 : 1); every candidate is labelled, then the set is balanced: at most ``n/2`` inside
points, the rest outside (PIFu keeps all inside points when there are fewer than ``n/2``).
If there are too few candidates of either kind, more are drawn, so exactly ``n`` come back.

Units: the mesh and ``sigma`` are in the normalised frame of `hdjax.data.camera`. The
paper's σ = 5 cm (coarse) / 3 cm (fine) are `PIFU_SIGMA_COARSE` / `PIFU_SIGMA_FINE`
(PIFu's 180-unit body is 1.7578 box units tall, so 1 cm = 1/102.4).

`label_points(mesh, points)` is inside = generalised winding number > 0.5
(point-cloud-utils' fast winding number), so scans with holes or several overlapping shells
get sensible labels where ray parity or ``trimesh.contains`` fail.
"""

from __future__ import annotations

import numpy as np
import point_cloud_utils as pcu
import trimesh

from hdjax.data.camera import PIFU_SIGMA_COARSE, PIFU_SIGMA_FINE, PIFU_UNITS_PER_CM

__all__ = [
    "PIFU_SIGMA_COARSE",
    "PIFU_SIGMA_FINE",
    "PIFU_UNIFORM_BOUNDS",
    "label_points",
    "sample_points",
    "winding_number",
]

# PIFu's fixed uniform-sample box, B_MIN = (−128, −28, −128) cm, B_MAX = (128, 228, 128) cm,
# for RenderPeople scans standing on y = 0 near the x-z origin; moved into the normalised
# frame assuming a 180 cm body (mid-height 90 cm). Pass as ``bounds`` to mimic PIFu; the
# default box is the mesh's own bounds.
PIFU_UNIFORM_BOUNDS = (
    np.array([[-128.0, -28.0 - 90.0, -128.0], [128.0, 228.0 - 90.0, 128.0]]) * PIFU_UNITS_PER_CM
)

_CHUNK = 1 << 20  # bounds the memory of one pcu call


def winding_number(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N,) float64 generalised winding number (≈1 inside, ≈0 outside)."""
    v = np.ascontiguousarray(mesh.vertices, np.float64)
    f = np.ascontiguousarray(mesh.faces, np.int64)
    p = np.ascontiguousarray(points, np.float64).reshape(-1, 3)
    out = [
        np.asarray(pcu.triangle_soup_fast_winding_number(v, f, p[i : i + _CHUNK]))
        for i in range(0, len(p), _CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def label_points(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N,) bool, True inside (winding number > 0.5)."""
    return winding_number(mesh, points) > 0.5


def _candidates(mesh, rng, n_surface, n_uniform, sigma, bounds):
    surface, _ = trimesh.sample.sample_surface(mesh, n_surface, seed=rng)
    surface = surface + rng.normal(scale=sigma, size=surface.shape)
    lo, hi = bounds
    uniform = rng.uniform(lo, hi, size=(n_uniform, 3))
    return np.concatenate([surface, uniform], axis=0)


def sample_points(
    mesh: trimesh.Trimesh,
    rng: np.random.Generator,
    n: int,
    sigma: float,
    ratio: int = 16,
    bounds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PIFu training points with balanced occupancy labels.

    Args:
      mesh: the scan in the normalised frame (holes allowed).
      rng: numpy random generator (all randomness comes from it).
      n: number of points to return.
      sigma: std of the Gaussian perturbation of surface samples, normalised units.
      ratio: surface : uniform candidate ratio (PIFu: 16).
      bounds: (2, 3) [min, max] box of the uniform samples; default the mesh's bounds.

    Returns:
      points (n, 3) float32 and labels (n,) bool (True inside), in random order;
      ``min(#inside candidates, n // 2)`` of them inside.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    box = np.asarray(mesh.bounds if bounds is None else bounds, np.float64)
    inside_pts, outside_pts = [], []
    target_in = n_out = 0
    # PIFu's rule fixes the inside count on the first batch of candidates; later batches
    # only top up a shortfall of outside points (rare: tiny n or a box hugging the mesh).
    for attempt in range(16):
        cand = _candidates(mesh, rng, 4 * n, max(1, (4 * n) // ratio), sigma, box)
        lab = label_points(mesh, cand)
        inside_pts.append(cand[lab])
        outside_pts.append(cand[~lab])
        n_out += int((~lab).sum())
        if attempt == 0:
            target_in = min(int(lab.sum()), n // 2)
        if n_out >= n - target_in:
            break
    else:
        raise RuntimeError("could not draw enough outside points; is the box too tight?")
    inside = np.concatenate(inside_pts)[:target_in]
    outside = np.concatenate(outside_pts)[: n - target_in]
    points = np.concatenate([inside, outside]).astype(np.float32)
    labels = np.concatenate([np.ones(len(inside), bool), np.zeros(len(outside), bool)])
    order = rng.permutation(n)
    return points[order], labels[order]

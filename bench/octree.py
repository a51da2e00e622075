"""Octree grid evaluation: official semantics vs the narrow-band mode.

Prints, for an analytic human-sized shape (a union of capsules, occupancy with a transition
about one voxel wide at R = 512), the number of queried points, the wall time of the grid
logic alone (time inside the field callback subtracted) and the distance between the two
meshes in voxels.

    JAX_PLATFORMS=cpu python -m bench.octree [--resolutions 256 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial import cKDTree

from hdjax.geometry import mesh, octree

# (end a, end b, radius) in the normalised crop cube, y up; a coarse standing figure with
# thin fingers-like rods so thin parts are exercised.
_CAPSULES = [
    ((0.0, 0.45, 0.0), (0.0, -0.05, 0.0), 0.16),
    ((0.08, -0.1, 0.0), (0.1, -0.85, 0.02), 0.07),
    ((-0.08, -0.1, 0.0), (-0.1, -0.85, -0.02), 0.07),
    ((0.1, -0.85, 0.02), (0.1, -0.88, 0.15), 0.035),
    ((-0.1, -0.85, -0.02), (-0.1, -0.88, 0.11), 0.035),
    ((0.2, 0.4, 0.0), (0.5, 0.05, 0.05), 0.045),
    ((-0.2, 0.4, 0.0), (-0.55, 0.1, 0.0), 0.045),
    ((0.5, 0.05, 0.05), (0.56, -0.03, 0.06), 0.012),
    ((0.5, 0.05, 0.05), (0.53, -0.04, 0.09), 0.01),
    ((-0.55, 0.1, 0.0), (-0.6, 0.02, 0.02), 0.012),
    ((0.0, 0.62, 0.0), (0.0, 0.72, 0.0), 0.1),
]


def figure_occupancy(pts: np.ndarray, width: float = 0.005) -> np.ndarray:
    """`(N, 3) float32` query-frame points -> `(N,) float32` occupancy, ~1 inside."""
    p = pts.astype(np.float32)
    d = np.full(len(p), np.inf, np.float32)
    for a, b, rad in _CAPSULES:
        a, b = np.float32(a), np.float32(b)
        ab = b - a
        t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
        d = np.minimum(d, np.linalg.norm(p - a - t[:, None] * ab, axis=1) - np.float32(rad))
    w = np.float32(width)
    return np.float32(0.5) - np.float32(0.5) * d / np.sqrt(d * d + w * w)


class TimedField:
    """Grid-index callback that accumulates the time spent in the field itself."""

    def __init__(self, resolution: int):
        self.resolution = resolution
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = figure_occupancy(octree.indices_to_points(idx, self.resolution))
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def run_official_loop(resolution: int) -> float:
    """Grid seconds of the official pifu-hd Python loop on the same field (same result)."""
    from PIFuHD.sdf import create_grid, eval_grid_octree  # optional: pifu-hd installed

    coords, _ = create_grid(resolution, resolution, resolution)
    coords[1] *= -1  # calib⁻¹ = diag(1, −1, 1)
    spent = [0.0]

    def eval_func(points):
        t = time.perf_counter()
        out = figure_occupancy(points.T.astype(np.float32))
        spent[0] += time.perf_counter() - t
        return out

    t = time.perf_counter()
    eval_grid_octree(coords, eval_func)
    return time.perf_counter() - t - spent[0]


def run(mode: str, resolution: int, init: int):
    field = TimedField(resolution)
    t = time.perf_counter()
    grid, stats = octree.eval_grid(field, resolution, method=mode, init_resolution=init)
    wall = time.perf_counter() - t - field.seconds
    return grid, stats, wall, field.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    parser.add_argument(
        "--official-loop", action="store_true", help="also time the pifu-hd Python loop"
    )
    args = parser.parse_args()
    header = f"{'R':>5} {'mode':<16} {'init':>4} {'queries':>11} {'ratio':>6} {'calls':>5}"
    header += f" {'grid s':>7} {'max dist (vox)':>14}"
    print(header)
    print("-" * len(header))
    for r in args.resolutions:
        ref, ref_stats, wall, calls = run("octree", r, 64)
        ref_verts, _ = mesh.extract_mesh(ref, r)
        del ref
        tree = cKDTree(ref_verts)
        print(
            f"{r:>5} {'official octree':<16} {64:>4} {ref_stats.queries:>11,} {1:>6.3f} "
            f"{calls:>5} {wall:>7.2f} {0:>14.2f}"
        )
        if args.official_loop:
            wall = run_official_loop(r)
            print(
                f"{r:>5} {'pifu-hd loop':<16} {64:>4} {ref_stats.queries:>11,} {1:>6.3f} "
                f"{calls:>5} {wall:>7.2f} {0:>14.2f}"
            )
        for init in (64, 32):
            grid, stats, wall, calls = run("narrowband", r, init)
            verts, _ = mesh.extract_mesh(grid, r)
            del grid
            dist = max(tree.query(verts)[0].max(), cKDTree(verts).query(ref_verts)[0].max())
            print(
                f"{r:>5} {'narrow band':<16} {init:>4} {stats.queries:>11,} "
                f"{stats.queries / ref_stats.queries:>6.3f} {calls:>5} {wall:>7.2f} "
                f"{dist * r / 2:>14.2f}"
            )


if __name__ == "__main__":
    main()

"""Benchmark of the training-data renderer and point labelling; prints a table.

    python bench/data.py [--faces-level 7] [--size 2048] [--points 1000000] [--repeat 3]

The mesh is a subdivided icosphere stretched into a body-sized ellipsoid with a wavy
surface (level 7 = 327,680 faces), normalised the 2K2K way and rendered with the 2K2K
camera (front + back maps, shading, normals); labels are generalised winding numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import trimesh

from hdjax.data import camera as C
from hdjax.data.render import cast_rays, render
from hdjax.data.sampling import PIFU_SIGMA_COARSE, label_points, sample_points


def body_like_mesh(level: int) -> trimesh.Trimesh:
    """Icosphere (20·4^level faces) turned into a tall wavy ellipsoid (non-convex)."""
    m = trimesh.creation.icosphere(subdivisions=level)
    v = m.vertices * [0.35, 1.0, 0.2]
    v = v * (1.0 + 0.08 * np.sin(9.0 * v[:, 1:2]) * np.cos(7.0 * v[:, 0:1]))
    return trimesh.Trimesh(v, m.faces, process=False)


def timed(fn, repeat: int) -> tuple[tuple[float, float], object]:
    """Median wall and CPU seconds (CPU = all threads of this process: on a shared machine
    it moves less with the other users' load than wall time)."""
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return (float(np.median(wall)), float(np.median(cpu))), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces-level", type=int, default=7)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    raw = body_like_mesh(args.faces_level)
    mesh = C.normalize_mesh(raw, C.twok2k_normalization(raw.vertices, raw.faces))
    cam = C.PerspCamera(size=args.size, yaw_deg=10.0)
    rng = np.random.default_rng(0)
    rows = []

    origins, dirs = C.camera_rays(cam)
    o, d = origins.reshape(-1, 3) @ cam.rotation, dirs.reshape(-1, 3) @ cam.rotation
    t, _ = timed(lambda: cast_rays(mesh, o, d), args.repeat)
    rows.append((f"front ray cast only, {args.size}² rays", t))
    fresh = mesh.copy()  # no cached vertex normals yet
    t, _ = timed(lambda: render(fresh, cam, rng), 1)
    rows.append((f"first render() of a fresh mesh, persp {args.size}² (+ normals)", t))
    t, out = timed(lambda: render(mesh, cam, rng), args.repeat)
    fg = out["mask"].mean()
    rows.append((f"render() persp {args.size}², front+back, all maps", t))
    ortho = C.OrthoCamera(size=min(args.size, 1024))
    pmesh = C.normalize_mesh(raw, C.pifu_normalization(raw.vertices))
    t, _ = timed(lambda: render(pmesh, ortho, rng), args.repeat)
    rows.append((f"render() ortho {ortho.size}², front+back, all maps", t))

    pts = np.random.default_rng(1).uniform(-1, 1, (args.points, 3)) * pmesh.extents / 2
    t, _ = timed(lambda: label_points(pmesh, pts), args.repeat)
    rows.append((f"label_points, {args.points:,} points (winding number)", t))
    t, _ = timed(lambda: sample_points(pmesh, rng, 8000, PIFU_SIGMA_COARSE), args.repeat)
    rows.append(("sample_points n=8000 (34k candidates, labelled)", t))

    print(
        f"# {platform.processor() or platform.machine()}, mesh {len(mesh.faces):,} faces, "
        f"foreground {fg:.1%} of pixels, median of {args.repeat}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | wall s | cpu s |")
    print(f"|{'-' * (width + 2)}|--------|-------|")
    for name, (wall, cpu) in rows:
        print(f"| {name:<{width}} | {wall:6.3f} | {cpu:5.2f} |")
    print(f"# load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

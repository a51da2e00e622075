"""Occupancy training points for PIFuHD: PIFu's sampling, labelled by winding number.

`sample_points(mesh, rng, n, sigma, box)` follows PIFu's ``select_sampling_method``:
``4n`` points sampled uniformly on the surface (area-weighted) plus isotropic Gaussian
noise of standard deviation ``sigma``, and ``4n / ratio`` points uniform in a fixed box
(PIFu's 16 : 1). The candidates are shuffled, labelled, and split into inside and outside;
the first ``n/2`` inside points are kept (all of them when there are fewer) and outside
points fill the rest. The shuffle before the split is what keeps the uniform candidates:
without it they sit at the end of both lists and a truncation drops every one of them,
and the network is then never supervised far from the surface. About 1/17 of the points
are uniform (≈ 5.5 %). The candidates are drawn and labelled in chunks sized to what is
still missing, and drawing stops once both halves are full: the same distribution (the
candidates are i.i.d.) for about a quarter of the labelling.

**Shared surface pool.** Surface candidates do not depend on the view, so the views of one
subject can take theirs from one labelled pool (`surface_pool`, ``pool=``), each view in its
own random order: every view's candidates are still i.i.d. surface samples, views only share
some of them. Labelling is most of a record's cost, and a pool of 3n shared by 12 views
labels about a quarter as many points per record. What is lost is little: a training step
reads 8,000 of a record's n points, so one epoch reads ~8k × views points per subject out of
the pool's 3n distinct ones. Uniform candidates depend on the view's box and are drawn per
view.

The uniform box is the **reconstruction cube**, [−1, 1]³ of the view frame
(`RECONSTRUCTION_CUBE`; the ortho camera's image spans x, y ∈ [−1, 1] and the PIFuHD query
frame keeps z in the same range): every place the network is asked about at reconstruction
time is supervised, and no point is wasted outside it. PIFu instead uses a fixed box in
scan centimetres (B_MIN = (−128, −28, −128), B_MAX = (128, 228, 128)), which is its own
dataset's framing of the same idea; a tight mesh box would leave the corners of the cube,
where floating blobs appear, unsupervised. ``box_rotation`` turns box (view-frame)
coordinates into the mesh frame, so each view's cube is covered whatever its yaw.

Units: the mesh and ``sigma`` are in the normalised frame of `hdjax.geometry.camera`.

`label_points(mesh, points)` is inside = generalised winding number > 0.5
(point-cloud-utils' fast winding number), so scans with holes or several overlapping shells
get sensible labels where ray parity or ``trimesh.contains`` fail.
"""

from __future__ import annotations

import numpy as np
import point_cloud_utils as pcu
import trimesh

RECONSTRUCTION_CUBE = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])

_CHUNK = 1 << 20  # bounds the memory of one pcu call
_CANDIDATES = 4  # PIFu draws 4n surface candidates


def winding_number(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N,) float64 generalised winding number (≈1 inside, ≈0 outside)."""
    v = np.ascontiguousarray(mesh.vertices, np.float64)
    f = np.ascontiguousarray(mesh.faces, np.int64)
    p = np.ascontiguousarray(points, np.float64).reshape(-1, 3)
    out = [
        # reshape: pcu returns a 0-d array for a single point
        np.asarray(pcu.triangle_soup_fast_winding_number(v, f, p[i : i + _CHUNK])).reshape(-1)
        for i in range(0, len(p), _CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def signed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N,) float64 signed distance to a closed mesh, negative inside."""
    # point-cloud-utils 0.31 crashes on a view into a larger array and answers nonsense for a
    # single point: fresh arrays, two points at least.
    p = np.array(points, np.float64).reshape(-1, 3)
    if len(p) == 0:
        return np.zeros(0)
    two = np.concatenate([p, p[:1]]) if len(p) == 1 else p
    v, f = np.array(vertices, np.float64), np.array(faces, np.int64)
    return np.asarray(pcu.signed_distance_to_mesh(two, v, f)[0])[: len(p)]


def label_points(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N,) bool, True inside (winding number > 0.5)."""
    return winding_number(mesh, points) > 0.5


def surface_pool(
    mesh: trimesh.Trimesh,
    rng: np.random.Generator,
    size: int,
    sigma: float,
    solid: trimesh.Trimesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` labelled surface candidates for `sample_points` (``pool=``); ``solid`` as
    there.

    Returns:
      points (size, 3) float64, area-weighted surface samples plus N(0, σ²) noise, and
      labels (size,) bool (True inside).
    """
    points, _ = trimesh.sample.sample_surface(mesh, size, seed=rng)
    points = points + rng.normal(scale=sigma, size=points.shape)
    return points, label_points(mesh if solid is None else solid, points)


def _draw(mesh, solid, rng, size, n_uniform, sigma, box, box_rotation, pool):
    """``size`` surface + ``n_uniform`` uniform candidates, labelled and shuffled; the
    surface ones come from ``pool`` (points, labels) while it lasts. Returns the candidates,
    their labels and what is left of the pool."""
    take = min(size, len(pool[0]))
    surface = [pool[0][:take]]
    labels = [pool[1][:take]]
    if take < size:
        fresh, fresh_labels = surface_pool(mesh, rng, size - take, sigma, solid)
        surface.append(fresh)
        labels.append(fresh_labels)
    uniform = rng.uniform(box[0], box[1], size=(n_uniform, 3)) @ box_rotation
    cand = np.concatenate([*surface, uniform], axis=0)
    lab = np.concatenate([*labels, label_points(mesh if solid is None else solid, uniform)])
    order = rng.permutation(len(cand))
    return cand[order], lab[order], (pool[0][take:], pool[1][take:])


def sample_points(
    mesh: trimesh.Trimesh,
    rng: np.random.Generator,
    n: int,
    sigma: float,
    box: np.ndarray = RECONSTRUCTION_CUBE,
    box_rotation: np.ndarray | None = None,
    ratio: int = 16,
    pool: tuple[np.ndarray, np.ndarray] | None = None,
    solid: trimesh.Trimesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PIFu training points with balanced occupancy labels.

    Args:
      mesh: the scan in the normalised frame (holes allowed).
      rng: numpy random generator (all randomness comes from it).
      n: number of points to return.
      sigma: std of the Gaussian perturbation of surface samples, normalised units.
      box: (2, 3) [min, max] of the uniform samples, in the box frame.
      box_rotation: (3, 3) rotation from the mesh frame to the box frame (a camera's
        yaw: box = R · mesh); identity by default.
      ratio: surface : uniform candidate ratio (PIFu: 16).
      pool: labelled surface candidates (`surface_pool`, same mesh and σ) to take the
        surface candidates from, in an order drawn from ``rng``, before drawing new ones.
      solid: the closed mesh whose winding number labels the points, when ``mesh`` is only
        its outer surface (a generated body's pieces without their buried faces: its open
        seams would label inexactly there); default ``mesh``.

    Returns:
      points (n, 3) float32 and labels (n,) bool (True inside), in random order;
      ``min(#inside candidates, n // 2)`` of them inside.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    box = np.asarray(box, np.float64)
    rot = np.eye(3) if box_rotation is None else np.asarray(box_rotation, np.float64)
    if pool is None:
        pool = (np.zeros((0, 3)), np.zeros(0, bool))
    else:
        order = rng.permutation(len(pool[0]))
        pool = (np.asarray(pool[0], np.float64)[order], np.asarray(pool[1], bool)[order])
    inside_pts, outside_pts = [], []
    n_in = n_out = drawn = 0
    limit = _CANDIDATES * n
    # PIFu labels 4n surface candidates (+ 4n / ratio uniform ones) and keeps
    # min(#inside, n/2) inside points. The candidates are i.i.d., so drawing and labelling
    # them in chunks sized to what is still missing, and stopping once both halves are full,
    # keeps exactly the same distribution while labelling ~1.1n instead of ~4.25n points
    # (labelling is most of a record's build time). Only when all 4n hold fewer than n/2
    # inside points does their inside count decide; later chunks then top up outside
    # points alone (rare: tiny n or a box hugging the mesh).
    for _ in range(64):
        within = drawn < limit
        if drawn == 0:
            size = n + n // 10
        else:  # the larger shortfall at the rates seen so far, with 10 % to spare
            seen = max(n_in + n_out, 1)
            short_in = (n // 2 - n_in) * seen / max(n_in, 1) if within else 0.0
            short_out = (n - min(n_in, n // 2) - n_out) * seen / max(n_out, 1)
            size = int(1.1 * max(short_in, short_out)) + 256
        if within:
            size = min(size, limit - drawn)
        cand, lab, pool = _draw(
            mesh, solid, rng, size, max(1, size // ratio), sigma, box, rot, pool
        )
        if within:
            inside_pts.append(cand[lab])
            n_in += int(lab.sum())
        outside_pts.append(cand[~lab])
        n_out += int((~lab).sum())
        drawn += size
        target_in = min(n_in, n // 2)
        if (drawn >= limit or n_in >= n // 2) and n_out >= n - target_in:
            break
    else:
        raise RuntimeError("could not draw enough outside points; is the box too tight?")
    inside = np.concatenate(inside_pts)[:target_in]
    outside = np.concatenate(outside_pts)[: n - target_in]
    points = np.concatenate([inside, outside]).astype(np.float32)
    labels = np.concatenate([np.ones(len(inside), bool), np.zeros(len(outside), bool)])
    order = rng.permutation(n)
    return points[order], labels[order]

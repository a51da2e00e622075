"""2K2K depth maps -> normals, points and meshes (spec 2k2k.md §4).

Depth maps here are in 2K2K *network units* ``D = d / 512`` (D = 2 at the subject centre,
0 = background; `hdjax.geometry.camera` has the encoding), laid out (H, W) or NHWC
(..., H, W, 1), row 0 at the top.

* `get_normal`: the official depth -> normal map (training targets, the depth-consistency
  loss, the demo's images). Works on numpy arrays (data pipeline, no JAX) and on JAX arrays
  (losses, differentiable). `normal_targets` gives the training targets from ground-truth
  depth: records store view-frame normals (+x right), whose x axis is mirrored relative to
  `get_normal`'s (`view_normals_to_twok2k` converts, for comparisons).
* `demo_depth_cleanup` + `depth_maps_to_points`: the demo's post-processing and ``pers2pc``
  (points in the view frame, divided by the official 1.0367394 unless ``divisor=1``).
* `stitch_mesh`: a fast watertight mesher of ours: one triangle grid over the front map, one
  over the back map (reversed), and a wall of two triangles along every silhouette edge.
* `poisson_mesh`: screened Poisson (the official route, through open3d instead of pymeshlab),
  only when the optional `geometry` extra is installed.
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.ndimage
import trimesh

from hdjax.errors import HdjaxError
from hdjax.geometry import camera as cam

NORMAL_CUT_OFF = 0.2  # get_normal zeroes every channel where D < this
NORMAL_Z = 1.0 / 255.0  # the official, unscaled z component of the gradient
BACK_EROSION = 3  # the demo erodes the front mask 3× (3×3) to mask the back depth


def _xp(x):
    """jax.numpy for JAX arrays (and tracers), else numpy; never imports JAX itself."""
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return jax.numpy
    return np


def get_normal(depth, cut_off: float = NORMAL_CUT_OFF):
    """The official ``get_normal``: depth (network units) -> normal map in [0, 1].

    With D the depth: g_h = D[r, c] − D[r, c+1] (0 on the last column), g_v = D[r−1, c] −
    D[r, c] (0 on the first row), g_z = 1/255; n = (g_h, g_v, g_z) / |·|, returned as
    (n + 1) / 2 with all three channels 0 where D < ``cut_off``. Channel 0 therefore grows
    toward the *left* of the image (−x of the view frame), channel 1 upward (+y), channel 2
    toward the camera: the x channel is mirrored relative to view-frame normals (+x right,
    as the `twok2k` records store them), and z is not metrically scaled — the convention
    2K2K's networks are trained on.

    Args:
      depth: (..., H, W, 1) float depth, numpy (result numpy float32) or JAX (result JAX).
      cut_off: background threshold.

    Returns:
      (..., H, W, 3) float32 normals in [0, 1] (0 on the background).
    """
    xp = _xp(depth)
    d = xp.asarray(depth, dtype=xp.float32)
    if d.ndim < 3 or d.shape[-1] != 1:
        raise ValueError(f"expected depth of shape (..., H, W, 1), got {d.shape}")
    g_h = d[..., :, :-1, :] - d[..., :, 1:, :]
    g_h = xp.concatenate([g_h, xp.zeros_like(d[..., :, :1, :])], axis=-2)
    g_v = d[..., :-1, :, :] - d[..., 1:, :, :]
    g_v = xp.concatenate([xp.zeros_like(d[..., :1, :, :]), g_v], axis=-3)
    g_z = xp.full_like(d, NORMAL_Z)
    norm = xp.sqrt(g_h * g_h + g_v * g_v + g_z * g_z)
    n = (xp.concatenate([g_h, g_v, g_z], axis=-1) / norm + 1.0) / 2.0
    return xp.where(d < cut_off, xp.zeros_like(n), n).astype(xp.float32)


def normal_targets(front, back):
    """2K2K's normal training targets: `get_normal` of the ground-truth depth maps.

    As the official loss builder computes them: from the depth with background 0 (before
    the front background becomes 6 for the depth loss), front channels 0-2, back 3-5 — the
    layout of the normal networks' outputs.

    Args:
      front, back: (..., H, W, 1) depth in network units (record depth d / 512).

    Returns:
      (..., H, W, 6) float32 in [0, 1].
    """
    xp = _xp(front)
    return xp.concatenate([get_normal(front), get_normal(back)], axis=-1)


def view_normals_to_twok2k(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """View-frame unit normals (+x right, +y up, +z to the camera) -> `get_normal`'s axes.

    Only the axes change (x mirrored) and the encoding ((n + 1) / 2, background 0); a
    rendered normal and `get_normal` of the rendered depth then agree in direction up to
    `get_normal`'s unscaled z (see there).

    Args:
      normals: (..., 3) float unit normals in the view frame, e.g. decoded record normals.
      mask: optional (...) bool foreground; background becomes 0.
    """
    n = np.asarray(normals, np.float32) * np.array([-1.0, 1.0, 1.0], np.float32)
    out = (n + 1.0) / 2.0
    if mask is not None:
        out = np.where(np.asarray(mask)[..., None], out, 0.0)
    return out.astype(np.float32)


def _as_map(depth: np.ndarray, name: str) -> np.ndarray:
    d = np.asarray(depth, np.float64)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise HdjaxError(f"{name} depth must be a square (H, W[, 1]) map, got {d.shape}")
    return d


def demo_depth_cleanup(front: np.ndarray, back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official demo's clean-up of predicted depth maps before meshing.

    Both maps are zeroed where front > back ("artifact removal"); the back map is kept only
    where the front mask survives 3 erosions by a 3×3 square (image borders count as
    foreground, as in OpenCV's erosion).

    Args:
      front, back: (H, W[, 1]) depth in network units (background 0).

    Returns:
      (front, back), each (H, W) float64.
    """
    f, b = _as_map(front, "front"), _as_map(back, "back")
    artifact = f > b
    f = np.where(artifact, 0.0, f)
    b = np.where(artifact, 0.0, b)
    keep = scipy.ndimage.binary_erosion(
        f > 0, structure=np.ones((3, 3), bool), iterations=BACK_EROSION, border_value=1
    )
    return f, np.where(keep, b, 0.0)


def _pixel_points(
    depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, camera: cam.PerspCamera, divisor
) -> np.ndarray:
    """(N, 3) float64 view-frame points of the given pixels of a network-unit depth map."""
    d = depth[rows, cols] * cam.TWOK2K_NETWORK_SCALE
    r = cam.decode_ray_depth(d, camera)
    f, c = camera.focal, camera.principal
    dirs = np.stack([(cols - c) / f, -(rows - c) / f, -np.ones(len(rows))], axis=1)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    p = dirs * r[:, None]
    p[:, 2] += camera.distance
    return p / divisor


def depth_maps_to_points(
    front: np.ndarray,
    back: np.ndarray,
    camera: cam.PerspCamera | None = None,
    divisor: float = cam.TWOK2K_OUTPUT_DIVISOR,
    cleanup: bool = True,
) -> np.ndarray:
    """The demo's point cloud: front and back depth -> (N, 3) points (``pers2pc``).

    Args:
      front, back: (H, W[, 1]) depth in network units (background 0), H = W.
      camera: the camera; default `PerspCamera` of size H (FOV 50°, distance 1).
      divisor: the official 1.0367394 (default) or 1 for points on the depicted surface.
      cleanup: apply `demo_depth_cleanup` first, as the demo does.

    Returns:
      (N, 3) float64 view-frame points (object centred, +y up, +z toward the camera): the
      front points, then the back points.
    """
    f, b = (_as_map(front, "front"), _as_map(back, "back"))
    if cleanup:
        f, b = demo_depth_cleanup(f, b)
    camera = camera or cam.PerspCamera(size=f.shape[0])
    d_scale = cam.TWOK2K_NETWORK_SCALE
    points = [cam.depth_to_points(m * d_scale, camera, divisor)[0] for m in (f, b)]
    return np.concatenate(points, axis=0)


def _grid_faces(index: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Two triangles per full quad, (v00, v10, v01) and (v01, v10, v11): +z facing for a
    front map (rows go down = −y, columns right = +x)."""
    r, c = np.nonzero(quads)
    v00, v01 = index[r, c], index[r, c + 1]
    v10, v11 = index[r + 1, c], index[r + 1, c + 1]
    return np.concatenate([np.stack([v00, v10, v01], 1), np.stack([v01, v10, v11], 1)])


def _remove_pinches(quads: np.ndarray, max_rounds: int = 64) -> np.ndarray:
    """Drop quads that touch another only at a corner (two silhouette fans meeting at one
    vertex would share its wall edge between four triangles); the lower quad goes."""
    q = quads.copy()
    for _ in range(max_rounds):
        down = q[:-1, :-1] & q[1:, 1:] & ~q[:-1, 1:] & ~q[1:, :-1]
        up = q[:-1, 1:] & q[1:, :-1] & ~q[:-1, :-1] & ~q[1:, 1:]
        if not (down.any() or up.any()):
            break
        q[1:, 1:] &= ~down
        q[1:, :-1] &= ~up
    return q


def _boundary_edges(index: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """(E, 2) directed silhouette edges (a, b), as the front triangles traverse them.

    A grid edge is on the silhouette when exactly one full quad touches it; its direction
    is the one the quad's triangles give it (top a quad's edge runs right to left, bottom
    left to right, left edge downward, right edge upward).
    """
    q = np.pad(quads, 1)  # q[r + 1, c + 1] = quad (r, c); outside = no quad
    # Horizontal edge (r, c)-(r, c+1): quad below = (r, c), above = (r-1, c).
    below, above = q[1:, 1:-1], q[:-1, 1:-1]  # (h, w-1)
    r, c = np.nonzero(below & ~above)
    top = np.stack([index[r, c + 1], index[r, c]], 1)
    r, c = np.nonzero(above & ~below)
    bottom = np.stack([index[r, c], index[r, c + 1]], 1)
    # Vertical edge (r, c)-(r+1, c): quad right = (r, c), left = (r, c-1).
    right, left = q[1:-1, 1:], q[1:-1, :-1]  # (h-1, w)
    r, c = np.nonzero(right & ~left)
    left_edges = np.stack([index[r, c], index[r + 1, c]], 1)
    r, c = np.nonzero(left & ~right)
    right_edges = np.stack([index[r + 1, c], index[r, c]], 1)
    return np.concatenate([top, bottom, left_edges, right_edges])


def stitch_mesh(
    front: np.ndarray,
    back: np.ndarray,
    camera: cam.PerspCamera | None = None,
    divisor: float = cam.TWOK2K_OUTPUT_DIVISOR,
) -> trimesh.Trimesh:
    """A closed mesh from front and back depth maps (no extra dependency; ~s at 2048²).

    The foreground is the front map's (D > 0). Every 2×2 block of foreground pixels gives
    two front triangles (vertices: the front points) and the same two, reversed, on the
    back (the back points; where the back map is empty, e.g. the demo's eroded rim, the
    back takes the front depth, so the surface closes at zero thickness). Every grid edge
    on the silhouette (touched by one block only) gets a wall of two triangles joining its
    front and back copies. Each edge is then shared by exactly two consistently oriented
    triangles: the mesh is watertight (pixels in no full 2×2 block are dropped, and so is
    one of two blocks that touch only at a corner). Run
    `demo_depth_cleanup` first for the demo's maps.

    Args:
      front, back: (H, W[, 1]) depth in network units (background 0), H = W.
      camera: default `PerspCamera` of size H.
      divisor: output scale, as `depth_maps_to_points`.

    Returns:
      a `trimesh.Trimesh` (process=False), view frame, outward normals.
    """
    f, b = _as_map(front, "front"), _as_map(back, "back")
    if f.shape != b.shape:
        raise HdjaxError(f"front {f.shape} and back {b.shape} depth maps differ in size")
    camera = camera or cam.PerspCamera(size=f.shape[0])
    fg = f > 0
    quads = _remove_pinches(fg[:-1, :-1] & fg[1:, :-1] & fg[:-1, 1:] & fg[1:, 1:])
    used = np.zeros_like(fg)
    for dr, dc in ((0, 0), (1, 0), (0, 1), (1, 1)):
        used[dr : dr + quads.shape[0], dc : dc + quads.shape[1]] |= quads
    rows, cols = np.nonzero(used)
    n = len(rows)
    if n == 0:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    index = np.full(fg.shape, -1, np.int64)
    index[rows, cols] = np.arange(n)
    b_filled = np.where(b > 0, b, f)
    verts = np.concatenate(
        [
            _pixel_points(f, rows, cols, camera, divisor),
            _pixel_points(b_filled, rows, cols, camera, divisor),
        ]
    )
    front_faces = _grid_faces(index, quads)
    back_faces = front_faces[:, ::-1] + n
    a, e = _boundary_edges(index, quads).T
    walls = np.concatenate([np.stack([e, a, a + n], 1), np.stack([e, a + n, e + n], 1)])
    faces = np.concatenate([front_faces, back_faces, walls])
    return trimesh.Trimesh(verts, faces, process=False)


def poisson_mesh(
    front: np.ndarray,
    back: np.ndarray,
    camera: cam.PerspCamera | None = None,
    divisor: float = cam.TWOK2K_OUTPUT_DIVISOR,
    depth: int = 10,
    threads: int | None = None,
) -> trimesh.Trimesh:
    """Screened Poisson surface of the demo's point cloud (the `geometry` extra).

    The official route: pymeshlab's screened Poisson at octree depth 10 (open3d's when only
    open3d is installed). Here the points are the vertices of `stitch_mesh` (front and back
    points, as the demo's cloud) and their normals come from its faces, so they need neither
    the official 70-neighbour estimation nor orientation.

    ``threads``: pymeshlab's OpenMP threads (default: its own); its threads spin while they
    wait, so on a busy machine fewer are faster.

    Raises:
      HdjaxError: neither pymeshlab nor open3d can be imported.
    """
    stitched = stitch_mesh(front, back, camera, divisor)
    points = np.asarray(stitched.vertices, np.float64)
    normals = np.asarray(stitched.vertex_normals, np.float64)
    try:
        import pymeshlab
    except ImportError:
        pymeshlab = None
    if pymeshlab is not None:
        meshes = pymeshlab.MeshSet()
        meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points, v_normals_matrix=normals))
        options = {} if threads is None else {"threads": threads}
        meshes.generate_surface_reconstruction_screened_poisson(depth=depth, **options)
        out = meshes.current_mesh()
        return trimesh.Trimesh(
            out.vertex_matrix(), out.face_matrix().astype(np.int64), process=False
        )
    try:
        import open3d as o3d
    except ImportError as e:  # also open3d's missing system libraries (libusb)
        raise HdjaxError(
            "Poisson meshing needs pymeshlab: pip install 'hdjax[geometry]' (or use the "
            f"default stitch mesher); open3d is not usable either ({e})"
        ) from None
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.normals = o3d.utility.Vector3dVector(normals)
    mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    return trimesh.Trimesh(
        np.asarray(mesh.vertices), np.asarray(mesh.triangles, np.int64), process=False
    )

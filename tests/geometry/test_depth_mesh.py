"""2K2K depth maps -> normals, points and meshes (hdjax.geometry.depth_mesh)."""

from __future__ import annotations

import numpy as np
import point_cloud_utils as pcu
import pytest
import scipy.ndimage
import trimesh

from hdjax.data import render as render_lib
from hdjax.data import subjects
from hdjax.errors import HdjaxError
from hdjax.geometry import camera as cam
from hdjax.geometry import depth_mesh as dm

RADIUS = 0.3


@pytest.fixture(scope="module")
def sphere_render():
    """A sphere of radius 0.3 at the origin rendered by the 2K2K camera at 128²."""
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    camera = cam.PerspCamera(size=128, yaw_deg=0.0)
    out = render_lib.render(mesh, camera, np.random.default_rng(0))
    return camera, out


def _encode(n: np.ndarray) -> np.ndarray:
    return (n / np.linalg.norm(n, axis=-1, keepdims=True) + 1.0) / 2.0


def test_get_normal_of_a_plane():
    """D = 2 + a·col + b·row: g_h = −a, g_v = −b inside; the last column has g_h = 0 and the
    first row g_v = 0; z is 1/255; pixels with D < 0.2 are 0 in all channels."""
    a, b = 0.01, -0.004
    rows, cols = np.mgrid[0:12, 0:16].astype(np.float64)
    depth = 2.0 + a * cols + b * rows
    depth[5, 3] = 0.1  # below the cut-off
    n = dm.get_normal(depth[..., None])
    assert n.shape == (12, 16, 3) and n.dtype == np.float32
    z = 1.0 / 255.0
    TOL = 5e-5  # float32 differences of D ~ 2: measured 7e-6
    inner = n[7:, :-1][:, 5:]
    np.testing.assert_allclose(
        inner, np.broadcast_to(_encode(np.array([-a, -b, z])), inner.shape), atol=TOL
    )
    np.testing.assert_allclose(n[0, 5], _encode(np.array([-a, 0.0, z])), atol=TOL)
    np.testing.assert_allclose(n[8, -1], _encode(np.array([0.0, -b, z])), atol=TOL)
    np.testing.assert_array_equal(n[5, 3], 0.0)
    # The neighbours of the hole see its depth difference (no masking of gradients).
    np.testing.assert_allclose(n[5, 2], _encode(np.array([depth[5, 2] - 0.1, -b, z])), atol=TOL)


def test_get_normal_batches_and_jax():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    depth = (2.0 + 0.01 * rng.normal(size=(2, 9, 7, 1)).cumsum(1)).astype(np.float32)
    depth[0, :2] = 0.0
    n = dm.get_normal(depth)
    assert n.shape == (2, 9, 7, 3)
    np.testing.assert_array_equal(n[1], dm.get_normal(depth[1]))
    nj = dm.get_normal(jnp.asarray(depth))
    assert isinstance(nj, jax.Array)
    np.testing.assert_allclose(np.asarray(nj), n, atol=1e-6)
    grad = jax.grad(lambda d: dm.get_normal(d).sum())(jnp.asarray(depth))
    assert np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).max() > 0
    targets = dm.normal_targets(depth, depth[::-1])
    assert targets.shape == (2, 9, 7, 6)
    np.testing.assert_array_equal(targets[..., 3:], dm.get_normal(depth[::-1]))
    with pytest.raises(ValueError, match="H, W, 1"):
        dm.get_normal(depth[..., 0])


def test_get_normal_mirrors_x_of_view_frame_normals(sphere_render):
    """The data fact: rendered (record) normals are view-frame, +x right; get_normal of the
    rendered depth points its x channel the other way (and y the same way)."""
    _, out = sphere_render
    inner = scipy.ndimage.binary_erosion(out["mask"], iterations=3)
    g = 2.0 * dm.get_normal(out["depth_front"][..., None] / 512.0) - 1.0
    n = out["normal_front"]
    side = inner & (np.abs(n[..., 0]) > 0.2)
    assert side.sum() > 500
    assert np.mean(np.sign(g[..., 0][side]) == -np.sign(n[..., 0][side])) > 0.99
    up = inner & (np.abs(n[..., 1]) > 0.2)
    assert np.mean(np.sign(g[..., 1][up]) == np.sign(n[..., 1][up])) > 0.99
    # After view_normals_to_twok2k the in-image directions agree (z is unscaled there).
    v = 2.0 * dm.view_normals_to_twok2k(n, out["mask"]) - 1.0
    a, b = g[..., :2][inner], v[..., :2][inner]
    ok = np.linalg.norm(b, axis=1) > 0.2
    cos = np.sum(a[ok] * b[ok], 1) / np.linalg.norm(a[ok], axis=1) / np.linalg.norm(b[ok], axis=1)
    assert np.median(cos) > 0.999  # measured 0.9998
    assert np.all(dm.view_normals_to_twok2k(n, out["mask"])[~out["mask"]] == 0)


def test_demo_depth_cleanup():
    front = np.zeros((32, 32))
    front[4:24, 6:26] = 2.0
    front[0:10, 28:32] = 1.9  # touches the image border
    back = np.where(front > 0, 2.2, 0.0)
    back[10, 10] = 1.5  # front > back: both removed
    f, b = dm.demo_depth_cleanup(front[..., None], back)
    assert f[10, 10] == 0 and b[10, 10] == 0
    assert b[15, 15] and not b[7:14, 7:14].any()  # the removed pixel erodes its surroundings
    assert b[7:21, 9].any() and not b[:, 8].any()  # 3 pixels eroded from the left
    assert b[0:7, 31].all() and not b[0:7, 30].any() and not b[7:, 31].any()  # border: kept
    # Exactly the 3-fold 3×3 erosion with the image border counting as foreground.
    ref = scipy.ndimage.grey_erosion((f > 0).astype(float), size=(7, 7), mode="nearest") > 0
    np.testing.assert_array_equal(b > 0, ref & (back > 0) & (f > 0))


def test_points_lie_on_the_sphere(sphere_render):
    camera, out = sphere_render
    front, back = out["depth_front"] / 512.0, out["depth_back"] / 512.0
    pts = dm.depth_maps_to_points(front, back, camera, divisor=1.0, cleanup=False)
    assert len(pts) == 2 * out["mask"].sum()
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), RADIUS, atol=5e-4)  # measured 8e-5
    scaled = dm.depth_maps_to_points(front, back, camera, cleanup=False)
    np.testing.assert_allclose(scaled, pts / cam.TWOK2K_OUTPUT_DIVISOR)
    cleaned = dm.depth_maps_to_points(front, back, camera)
    f, b = dm.demo_depth_cleanup(front, back)
    assert len(cleaned) == (f > 0).sum() + (b > 0).sum() < len(pts)
    n = out["mask"].sum()  # front points, then the back points of the same pixels
    assert np.all(pts[n:, 2] <= pts[:n, 2]) and pts[n:, 2].mean() < 0 < pts[:n, 2].mean()


def test_stitched_sphere_is_watertight(sphere_render):
    camera, out = sphere_render
    mesh = dm.stitch_mesh(out["depth_front"] / 512.0, out["depth_back"] / 512.0, camera, 1.0)
    assert mesh.is_watertight and mesh.is_winding_consistent
    volume = 4.0 / 3.0 * np.pi * RADIUS**3
    assert abs(mesh.volume - volume) / volume < 0.05  # measured 0.6 % (silhouette pixels lost)
    # Outward: the front faces the camera (+z), the back faces away.
    centroids = mesh.triangles_center
    assert np.mean(np.sum(mesh.face_normals * centroids, axis=1) > 0) > 0.99


def test_stitch_handles_pinches_holes_and_empty_maps():
    front = np.zeros((16, 16))
    front[2:6, 2:6] = 2.0
    front[6:10, 6:10] = 2.0  # touches the first square at one corner only
    front[11:14, 2:14] = 2.0
    front[12, 5] = 0.0  # a hole pixel
    front[1, 12] = 2.0  # an isolated pixel: no full 2×2 block
    back = np.where(front > 0, 2.1, 0.0)
    mesh = dm.stitch_mesh(front, back)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    empty = dm.stitch_mesh(np.zeros((8, 8)), np.zeros((8, 8)))
    assert len(empty.faces) == 0
    with pytest.raises(HdjaxError, match="differ"):
        dm.stitch_mesh(np.zeros((8, 8)), np.zeros((16, 16)))


def test_round_trip_body_depth_to_mesh():
    """Ground-truth depth of an embedded body (512², yaw 20°) -> stitched mesh -> near the
    body: mean distances in cm of the 1.52 m body, both ways (measured 0.054 / 0.074 cm)."""
    s = subjects.load_embedded_body("body_01")
    norm = cam.twok2k_normalization(s.mesh.vertices, s.mesh.faces)
    body = cam.normalize_mesh(s.mesh, norm)
    camera = cam.PerspCamera(size=512, yaw_deg=20.0)
    out = render_lib.render(body, camera, np.random.default_rng(0))
    mesh = dm.stitch_mesh(out["depth_front"] / 512.0, out["depth_back"] / 512.0, camera, 1.0)
    assert mesh.is_watertight
    gt = trimesh.Trimesh(cam.to_view(body.vertices, camera), body.faces, process=False)
    per_cm = norm.scale / 100.0
    rng = np.random.default_rng(0)

    def mean_cm(src, dst):
        pts, _ = trimesh.sample.sample_surface(src, 20000, seed=rng)
        d, _, _ = pcu.closest_points_on_mesh(
            np.asarray(pts), np.asarray(dst.vertices), np.asarray(dst.faces, np.int64)
        )
        return float(d.mean()) / per_cm

    assert mean_cm(mesh, gt) < 0.3
    assert mean_cm(gt, mesh) < 0.4
    assert abs(mesh.volume - gt.volume) / gt.volume < 0.02  # measured < 0.2 %


def test_poisson_mesh(sphere_render):
    camera, out = sphere_render
    front, back = out["depth_front"] / 512.0, out["depth_back"] / 512.0
    try:
        import pymeshlab  # noqa: F401
    except ImportError:
        with pytest.raises(HdjaxError, match="pymeshlab"):
            dm.poisson_mesh(front, back, camera)
        pytest.skip("pymeshlab (the geometry extra) is not installed")
    # One thread: beside another test worker, spinning OpenMP threads crawl.
    mesh = dm.poisson_mesh(front, back, camera, divisor=1.0, depth=7, threads=1)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.median(np.abs(radii - RADIUS)) < 0.01

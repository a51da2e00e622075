"""Cameras, normalisations and the 2K2K depth encoding."""

import math

import numpy as np
import pytest
import trimesh

from hdjax.data import codecs
from hdjax.geometry import camera as C


def test_ortho_calib_is_pifuhd_eval_calib_at_yaw_zero():
    np.testing.assert_array_equal(C.OrthoCamera(512).calib, np.diag([1.0, -1, 1, 1]))


@pytest.mark.parametrize("size", [512, 1024])
@pytest.mark.parametrize("yaw", [0.0, 30.0, -90.0])
def test_ortho_project_matches_calib_align_corners(size, yaw):
    cam = C.OrthoCamera(size, yaw)
    pts = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    uv = (np.c_[pts, np.ones(50)] @ cam.calib.T.astype(np.float64))[:, :2]
    # grid_sample(align_corners=True): −1 / +1 are the centres of the first / last pixels.
    # calib is float32: 1e-3 px is far above its rounding and far below any convention error.
    np.testing.assert_allclose(C.project(pts, cam), (uv + 1) * (size - 1) / 2, atol=1e-3)
    corners = C.project(np.array([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]), C.OrthoCamera(size))
    np.testing.assert_allclose(corners, [[0, 0], [size - 1, size - 1]])


def test_yaw_is_right_handed_about_y():
    np.testing.assert_allclose(C.yaw_matrix(90.0) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(C.yaw_matrix(90.0) @ [0, 1, 0], [0, 1, 0], atol=1e-12)


def test_persp_constants_and_calib():
    cam = C.PerspCamera(yaw_deg=20.0)
    assert cam.focal == pytest.approx(2195.975, abs=1e-3)
    assert cam.principal == 1023.5
    pts = np.random.default_rng(1).uniform(-0.35, 0.35, (40, 3))
    h = np.c_[pts, np.ones(40)] @ cam.calib.T.astype(np.float64)
    np.testing.assert_allclose(h[:, :2] / h[:, 2:3], C.project(pts, cam), atol=1e-2)
    np.testing.assert_allclose(C.project(np.zeros((1, 3)), cam), [[1023.5, 1023.5]])


def test_persp_rays_project_back_to_their_pixels():
    cam = C.PerspCamera(size=64, yaw_deg=0.0)
    origins, dirs = C.camera_rays(cam)
    pts = origins + dirs * 0.9  # 0.9 along every ray
    uv = C.project(pts.reshape(-1, 3), cam).reshape(64, 64, 2)
    u, v = C.pixel_grid(64)
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)


def test_depth_encoding_round_trips():
    cam = C.PerspCamera()
    r = np.array([0.6, 1.0, 1.3])
    d = C.encode_ray_depth(r, cam)
    assert d[1] == pytest.approx(1024.0)
    assert C.depth_to_network(d)[1] == pytest.approx(2.0)
    np.testing.assert_allclose(C.decode_ray_depth(d, cam), r, atol=1e-6)
    png = codecs.persp_depth_to_png(d)
    assert png.dtype == np.uint16
    np.testing.assert_allclose(codecs.png_to_persp_depth(png), d, atol=1 / 64 + 1e-4)
    np.testing.assert_array_equal(C.encode_ray_depth(r, cam, mask=np.array([1, 0, 1], bool))[1], 0)


def test_pifu_normalization_height_and_sigma_units():
    body = trimesh.creation.box((40.0, 175.0, 25.0))
    body.apply_translation((3.0, 90.0, -7.0))
    norm = C.pifu_normalization(body.vertices)
    v = norm.apply(body.vertices)
    assert np.ptp(v[:, 1]) == pytest.approx(C.PIFU_BODY_HEIGHT)
    assert C.PIFU_BODY_HEIGHT == pytest.approx(1.7578125)
    assert v[:, 1].min() == pytest.approx(-v[:, 1].max())
    np.testing.assert_allclose(norm.invert(v), body.vertices, atol=1e-9)
    assert C.PIFU_SIGMA_COARSE == pytest.approx(5 / 102.4)
    assert C.PIFU_SIGMA_FINE == pytest.approx(3 / 102.4)


def test_area_median_centre_ignores_where_the_vertices_are_dense():
    """A box whose front face is finely meshed: the vertex median moves toward the
    front, the surface median stays in the middle (a body model's dense face did the same
    and turned each body about a point ~5 % of its height in front of it, issue #21)."""
    box = trimesh.creation.box((40.0, 175.0, 25.0))
    box.apply_translation((3.0, 90.0, -7.0))
    v, f = box.vertices, box.faces
    for _ in range(5):  # the front face only
        front = np.flatnonzero(v[f].mean(1)[:, 2] > 5.0 - 7.0)
        v, f = trimesh.remesh.subdivide(v, f, face_index=front)
    mesh = trimesh.Trimesh(v, f, process=False)
    vertex = C.pifu_normalization(mesh.vertices).center
    area = C.pifu_normalization(mesh.vertices, 1, mesh.faces, "area_median").center
    assert vertex[2] > -7.0 + 4.0  # pulled > 4 units toward the dense half
    np.testing.assert_allclose(area, (3.0, 90.0, -7.0), atol=0.5)
    with pytest.raises(ValueError, match="faces"):
        C.pifu_normalization(mesh.vertices, center="area_median")


def test_twok2k_normalization():
    mesh = trimesh.creation.capsule(height=1.5, radius=0.3)
    mesh.apply_translation((0.2, -0.4, 1.0))
    norm = C.twok2k_normalization(mesh.vertices, mesh.faces)
    np.testing.assert_allclose(norm.center, mesh.centroid, atol=1e-9)  # area-weighted
    moved = C.normalize_mesh(mesh, norm)
    assert np.abs(moved.vertices).max() == pytest.approx(1 / 2.8)
    assert math.isclose(norm.scale * 2.8 * np.abs(mesh.vertices - norm.center).max(), 1.0)


def test_depth_to_points_rejects_wrong_size():
    with pytest.raises(ValueError, match="does not match"):
        C.depth_to_points(np.zeros((8, 8)), C.PerspCamera(size=16))


@pytest.mark.parametrize("cam", [C.OrthoCamera(256, 30.0), C.PerspCamera(size=256, yaw_deg=-10)])
def test_footprint_holds_every_projected_point(cam):
    offset = np.array([0.1, -0.05, 0.0])
    pts = np.random.default_rng(3).uniform(-0.15, 0.15, (500, 3)) + offset
    r0, r1, c0, c1 = C.footprint(pts, cam, margin=0)
    u, v = C.project(pts, cam).T
    # The window is clipped to the image: check the points that land in it.
    seen = (u > -0.5) & (u < 255.5) & (v > -0.5) & (v < 255.5)
    u, v = u[seen], v[seen]
    assert seen.sum() > 400
    assert np.all((u >= c0 - 0.5) & (u <= c1 - 0.5) & (v >= r0 - 0.5) & (v <= r1 - 0.5))
    assert (r1 - r0) * (c1 - c0) < 256 * 256 / 2  # and it is a real saving
    behind = np.r_[pts, [[0.0, 0.0, 1.5]]]
    if isinstance(cam, C.PerspCamera):
        assert C.footprint(behind, cam) == (0, 256, 0, 256)

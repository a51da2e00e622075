"""Winding-number labels and PIFu point sampling."""

import numpy as np
import point_cloud_utils as pcu
import pytest
import trimesh

from hdjax.data import subjects
from hdjax.data.point_sampling import (
    RECONSTRUCTION_CUBE,
    label_points,
    sample_points,
    surface_pool,
    winding_number,
)
from hdjax.geometry import camera as cam

R = 0.5


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=R)


def _points(n=20000, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3))


def test_labels_equal_analytic_sphere(sphere):
    p = _points()
    rho = np.linalg.norm(p, axis=1)
    far = np.abs(rho - R) > 2e-3  # the polyhedron lies within 1e-3 of the sphere
    np.testing.assert_array_equal(label_points(sphere, p)[far], (rho < R)[far])
    w = winding_number(sphere, p)
    assert np.all(np.abs(w[rho < 0.8 * R] - 1) < 0.05)
    assert np.all(np.abs(w[rho > 1.2 * R]) < 0.05)
    np.testing.assert_array_equal(label_points(sphere, np.zeros((1, 3))), [True])


def test_labels_survive_holes(sphere):
    holed = sphere.copy()
    drop = np.random.default_rng(1).choice(len(holed.faces), 12, replace=False)
    holed.update_faces(np.setdiff1d(np.arange(len(holed.faces)), drop))
    assert not holed.is_watertight
    p = _points(seed=2)
    rho = np.linalg.norm(p, axis=1)
    far = np.abs(rho - R) > 0.05
    np.testing.assert_array_equal(label_points(holed, p)[far], (rho < R)[far])
    # A mesh with a hole this size breaks ray parity / contains for some points; the
    # winding number stays within 0.02 of all-correct even close to the surface.
    near = np.abs(rho - R) > 5e-3
    assert np.mean(label_points(holed, p)[near] != (rho < R)[near]) < 0.02


def test_sample_points_pifu_rule(sphere):
    n, sigma = 2000, 0.05
    pts, lab = sample_points(sphere, np.random.default_rng(3), n, sigma)
    assert pts.shape == (n, 3) and pts.dtype == np.float32
    assert lab.shape == (n,) and lab.dtype == bool
    assert lab.sum() == n // 2  # plenty of inside candidates: exactly half inside
    np.testing.assert_array_equal(lab, label_points(sphere, pts))
    rho = np.linalg.norm(pts, axis=1)
    # Most points are surface samples with N(0, σ²) offsets; the rest are uniform in the cube.
    near = np.abs(rho - R) < 4 * sigma
    assert 0.9 < near.mean() < 0.99
    assert np.std(rho[near] - R) == pytest.approx(sigma, rel=0.25)
    assert np.all(np.abs(pts[~near]) <= 1 + 1e-6)


def _far_share(mesh, pts):
    d, _, _ = pcu.closest_points_on_mesh(
        pts.astype(np.float64), np.asarray(mesh.vertices), np.asarray(mesh.faces)
    )
    return float(np.mean(d > 1e-4))


def test_uniform_points_survive_balancing_and_fill_the_cube():
    """With σ → 0 only the uniform points leave the surface: PIFu keeps 1/17 of them."""
    s = subjects.load_embedded_body("body_00")
    mesh = cam.normalize_mesh(s.mesh, cam.pifu_normalization(s.mesh.vertices))
    pts, lab = sample_points(mesh, np.random.default_rng(1), 20000, sigma=1e-7)
    share = _far_share(mesh, pts)
    assert 0.04 < share < 0.075, share  # 4·n/16 of 4.25·n candidates, ≈ 5.9 % of picks
    # The cube, not the tight mesh box: the body is ~0.5 wide, the cube 2.
    lo, hi = mesh.bounds
    beyond = np.any((pts < lo - 0.2) | (pts > hi + 0.2), axis=1)
    assert beyond.mean() > 0.02
    assert np.all(np.abs(pts[beyond]) <= 1 + 1e-6)
    assert not lab[beyond].any()


def test_uniform_box_turns_with_the_view(sphere):
    rot = cam.yaw_matrix(45.0)
    pts, _ = sample_points(sphere, np.random.default_rng(4), 4000, 1e-7, RECONSTRUCTION_CUBE, rot)
    uniform = np.abs(np.linalg.norm(pts, axis=1) - R) > 1e-3
    view = pts[uniform] @ rot.T
    assert np.all(np.abs(view) <= 1 + 1e-5)
    # Corners of the view cube, outside the unrotated one, are reached.
    assert np.any(np.abs(pts[uniform][:, [0, 2]]).max(1) > 1.05)


def test_sample_points_is_seeded_and_keeps_few_inside(sphere):
    a = sample_points(sphere, np.random.default_rng(7), 500, 0.02)
    b = sample_points(sphere, np.random.default_rng(7), 500, 0.02)
    np.testing.assert_array_equal(a[0], b[0])
    # Uniform box far larger than the body: few inside candidates, all of them kept.
    box = np.array([[-40.0] * 3, [40.0] * 3])
    pts, lab = sample_points(sphere, np.random.default_rng(8), 400, 2.0, box, ratio=1)
    assert 0 < lab.sum() < 200
    assert len(pts) == 400
    np.testing.assert_array_equal(lab, label_points(sphere, pts))


def test_views_share_the_pool_in_their_own_order(sphere):
    """Surface candidates come from the shared labelled pool: two views share some of
    them, each view's set is still PIFu's balanced one, labels stay exact."""
    n, sigma = 2000, 0.05
    pool = surface_pool(sphere, np.random.default_rng(0), 3 * n, sigma)
    np.testing.assert_array_equal(pool[1], label_points(sphere, pool[0]))
    members = {p.tobytes() for p in pool[0].astype(np.float32)}
    views = [sample_points(sphere, np.random.default_rng(v), n, sigma, pool=pool) for v in (1, 2)]
    shared = []
    for pts, lab in views:
        np.testing.assert_array_equal(lab, label_points(sphere, pts))
        assert lab.sum() == n // 2
        from_pool = np.array([p.tobytes() in members for p in pts])
        # Everything but the uniform candidates (≈ 1/17) comes from the pool.
        assert 0.9 < from_pool.mean() < 0.99, from_pool.mean()
        uniform = pts[~from_pool]
        assert np.all(np.abs(uniform) <= 1 + 1e-6)
        assert np.abs(np.linalg.norm(uniform, axis=1) - R).mean() > 2 * sigma
        shared.append({p.tobytes() for p in pts[from_pool]})
    # Each view takes ~1.1n of the 3n: about a third of one view's points are in the other.
    overlap = len(shared[0] & shared[1]) / len(shared[0])
    assert 0.2 < overlap < 0.6, overlap


def test_an_exhausted_pool_is_topped_up_with_fresh_points(sphere):
    n, sigma = 2000, 0.05
    pool = surface_pool(sphere, np.random.default_rng(0), n // 4, sigma)
    pts, lab = sample_points(sphere, np.random.default_rng(1), n, sigma, pool=pool)
    assert len(pts) == n and lab.sum() == n // 2
    np.testing.assert_array_equal(lab, label_points(sphere, pts))
    members = {p.tobytes() for p in pool[0].astype(np.float32)}
    assert 0.1 < np.mean([p.tobytes() in members for p in pts]) < 0.3


def test_sample_points_rejects_bad_n(sphere):
    with pytest.raises(ValueError, match="positive"):
        sample_points(sphere, np.random.default_rng(0), 0, 0.05)

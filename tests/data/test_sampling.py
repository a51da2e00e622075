"""Winding-number labels and PIFu point sampling."""

import numpy as np
import pytest
import trimesh

from hdjax.data.sampling import label_points, sample_points, winding_number

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
    lo, hi = sphere.bounds
    rho = np.linalg.norm(pts, axis=1)
    # Most points are surface samples with N(0, σ²) offsets; the rest are uniform in the box.
    near = np.abs(rho - R) < 4 * sigma
    assert near.mean() > 0.9
    assert np.std(rho[near] - R) == pytest.approx(sigma, rel=0.25)
    box = np.all((pts >= lo - 1e-6) & (pts <= hi + 1e-6), axis=1)
    assert (~near & ~box).sum() < 0.01 * n


def test_sample_points_is_seeded_and_keeps_few_inside(sphere):
    a = sample_points(sphere, np.random.default_rng(7), 500, 0.02)
    b = sample_points(sphere, np.random.default_rng(7), 500, 0.02)
    np.testing.assert_array_equal(a[0], b[0])
    # Uniform box far larger than the body: few inside candidates, all of them kept.
    bounds = np.array([[-40.0] * 3, [40.0] * 3])
    pts, lab = sample_points(sphere, np.random.default_rng(8), 400, 2.0, ratio=1, bounds=bounds)
    assert 0 < lab.sum() < 200
    assert len(pts) == 400
    np.testing.assert_array_equal(lab, label_points(sphere, pts))


def test_sample_points_rejects_bad_n(sphere):
    with pytest.raises(ValueError, match="positive"):
        sample_points(sphere, np.random.default_rng(0), 0, 0.05)

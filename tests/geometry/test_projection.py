"""Orthographic projection on NumPy and JAX arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hdjax.geometry.projection import EVAL_CALIB, orthogonal


def _inputs():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    calib = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    calib[0] = EVAL_CALIB
    calib[1, :3, :3] = 2.0 * np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], np.float32)
    calib[1, :3, 3] = [0.5, -0.25, 1.0]
    return points, calib


def test_orthogonal_by_hand_on_numpy():
    points, calib = _inputs()
    out = orthogonal(points, calib)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 5, 3)
    x, y, z = points[1].T
    np.testing.assert_array_equal(out[0], points[0] * [1, -1, 1])  # y flip only
    np.testing.assert_allclose(out[1], np.stack([2 * z + 0.5, 2 * y - 0.25, -2 * x + 1], -1))


def test_orthogonal_jax_matches_numpy_eager_and_jitted():
    points, calib = _inputs()
    ref = orthogonal(points, calib)
    eager = orthogonal(jnp.asarray(points), jnp.asarray(calib))
    traced = jax.jit(orthogonal)(points, calib)
    mixed = orthogonal(jnp.asarray(points), calib)
    for out in (eager, traced, mixed):
        assert isinstance(out, jax.Array) and out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-6)


def test_perspective_matches_the_2k2k_camera():
    from hdjax.geometry import camera as C
    from hdjax.geometry.projection import perspective

    cam = C.PerspCamera(size=256, yaw_deg=20.0)
    pts = np.random.default_rng(0).uniform(-0.3, 0.3, (40, 3))
    want = C.project(pts, cam)
    calib = np.asarray(cam.calib, np.float64)[None]
    # calib is stored float32: measured 2e-6 px; 1e-4 px is far below any convention error.
    np.testing.assert_allclose(perspective(pts[None], calib)[0, :, :2], want, atol=1e-4)
    got = perspective(jnp.asarray(pts[None], jnp.float32), jnp.asarray(calib, jnp.float32))
    # float32 pixels of a 256² image: 1e-3 px is far above rounding, far below any error.
    np.testing.assert_allclose(np.asarray(got)[0, :, :2], want, atol=1e-3)

"""Octree grid evaluation: exact parity with the official `eval_grid_octree`, narrow band."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hdjax.geometry import octree


def _sdf(kind: str, x, y, z):
    if kind == "sphere":
        return np.sqrt(x**2 + y**2 + z**2) - 0.5
    if kind == "two_spheres":
        a = np.sqrt((x - 0.3) ** 2 + y**2 + z**2) - 0.3
        b = np.sqrt((x + 0.4) ** 2 + (y - 0.2) ** 2 + z**2) - 0.25
        return np.minimum(a, b)
    if kind == "box":
        q = np.abs(np.stack([x, y, z])) - np.array([0.5, 0.3, 0.2])[:, None, None, None]
        return np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(0), 0)
    if kind == "noisy":
        wobble = np.sin(9 * x) * np.cos(7 * y) * np.sin(5 * z + 1)
        return np.sqrt(x**2 + y**2 + z**2) - 0.5 + 0.05 * wobble
    raise ValueError(kind)


def dense_field(kind: str, r: int, width: float = 0.02) -> np.ndarray:
    """`(R, R, R) float32` occupancy sigmoid(−sdf / width) at every grid node, query frame."""
    g = np.arange(r) * (2.0 / r) - 1.0  # official spacing 2/R: the last node is 1 − 2/R
    x, y, z = np.meshgrid(g, -g, g, indexing="ij")
    return (1.0 / (1.0 + np.exp(_sdf(kind, x, y, z) / width))).astype(np.float32)


def official_grid(dense: np.ndarray, init: int):
    """Runs the official octree on the official coordinates; field looked up from `dense`.

    Skips the calling test when the official package (pifu-hd) is not installed.
    """
    official_sdf = pytest.importorskip("PIFuHD.sdf")
    r = dense.shape[0]
    coords, _ = official_sdf.create_grid(r, r, r)
    flat = coords.reshape(3, -1).T
    calib_inv = np.diag([1.0, -1.0, 1.0, 1.0])
    flat = np.concatenate([flat, np.ones((flat.shape[0], 1))], 1) @ calib_inv.T
    coords = flat[:, :3].T.reshape(3, r, r, r)
    calls = []

    def eval_func(points):
        idx = np.rint((points.T * np.array([1.0, -1.0, 1.0]) + 1.0) * r / 2).astype(np.int64)
        calls.append(idx)
        return dense[idx[:, 0], idx[:, 1], idx[:, 2]]

    grid = official_sdf.eval_grid_octree(
        coords, eval_func, init_resolution=init, num_samples=1 << 40
    )
    return grid, calls


def lookup(dense: np.ndarray, calls: list | None = None):
    def eval_fn(idx):
        assert idx.dtype == np.int32 and idx.ndim == 2 and idx.shape[1] == 3
        if calls is not None:
            calls.append(idx.astype(np.int64))
        return dense[idx[:, 0], idx[:, 1], idx[:, 2]]

    return eval_fn


def test_indices_follow_official_frame():
    r = 8
    pts = octree.indices_to_points(np.array([[0, 0, 0], [7, 2, 4]]), r)
    assert pts.dtype == np.float32
    np.testing.assert_array_equal(pts, [[-1, 1, -1], [0.75, 0.5, 0]])


@pytest.mark.parametrize(("r", "init"), [(64, 16), (128, 32), (64, 64), (48, 16)])
@pytest.mark.parametrize("kind", ["sphere", "two_spheres", "box", "noisy"])
def test_octree_matches_official_exactly(kind, r, init):
    dense = dense_field(kind, r)
    ref, ref_calls = official_grid(dense, init)
    calls = []
    grid, stats = octree.eval_grid(lookup(dense, calls), r, method="octree", init_resolution=init)
    assert grid.dtype == np.float32 and grid.shape == (r, r, r)
    np.testing.assert_array_equal(grid, ref.astype(np.float32))
    # Same points, same order, level by level.
    assert len(calls) == len(ref_calls)
    for ours, theirs in zip(calls, ref_calls, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert stats.queries == sum(len(c) for c in ref_calls)
    assert stats.queries < r**3
    filled = (grid[:-1, :-1, :-1] != dense[:-1, :-1, :-1]).any()
    # Stride 1 from the start evaluates densely; otherwise fills must have happened, or the
    # test would not exercise the fill order.
    assert filled == (init < r)
    assert not grid[-1].any() and not grid[:, -1].any() and not grid[:, :, -1].any()


def test_octree_default_init_matches_official():
    dense = dense_field("noisy", 128, width=0.05)
    ref, _ = official_grid(dense, 64)
    grid, _ = octree.eval_grid(lookup(dense), 128, method="octree")
    np.testing.assert_array_equal(grid, ref.astype(np.float32))


def test_fill_order_later_cells_win_on_shared_faces():
    # A field whose neighbouring cells all skip with different means: only the C-order
    # overwrite rule reproduces the official values on shared faces, edges and corners.
    r, init = 32, 4
    rng = np.random.default_rng(0)
    i = np.arange(r, dtype=np.float64)
    ramp = 0.1 + 0.0015 * (i[:, None, None] + 2 * i[None, :, None] + 3 * i[None, None, :])
    dense = (ramp + 0.002 * rng.uniform(size=ramp.shape)).astype(np.float32)
    ref, _ = official_grid(dense, init)
    grid, _ = octree.eval_grid(lookup(dense), r, method="octree", init_resolution=init)
    np.testing.assert_array_equal(grid, ref.astype(np.float32))


@pytest.mark.parametrize("method", ["octree", "narrowband"])
def test_max_batch_chunks_calls_without_changing_result(method):
    dense = dense_field("sphere", 32)
    calls = []
    a, _ = octree.eval_grid(
        lookup(dense, calls), 32, method=method, init_resolution=8, max_batch=100
    )
    assert max(len(c) for c in calls) <= 100
    b, _ = octree.eval_grid(lookup(dense), 32, method=method, init_resolution=8)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["sphere", "two_spheres", "box", "noisy"])
def test_narrowband_keeps_sign_and_queries_less(kind):
    r, init = 128, 32
    dense = dense_field(kind, r)
    _, st_ref = octree.eval_grid(lookup(dense), r, method="octree", init_resolution=init)
    calls = []
    nb, st = octree.eval_grid(lookup(dense, calls), r, method="narrowband", init_resolution=init)
    assert st.queries < st_ref.queries
    assert st.queries == sum(len(c) for c in calls)
    # Every node is either evaluated exactly or on the correct side of 0.5.
    inner = (slice(0, -1),) * 3
    np.testing.assert_array_equal(nb[inner] > 0.5, dense[inner] > 0.5)
    # Nodes next to the surface carry the true value, so marching cubes is exact there.
    sign = dense[inner] > 0.5
    edge = np.zeros_like(sign)
    for ax in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        cross = sign[tuple(a)] != sign[tuple(b)]
        edge[tuple(a)] |= cross
        edge[tuple(b)] |= cross
    np.testing.assert_array_equal(nb[inner][edge], dense[inner][edge])
    assert not nb[-1].any() and not nb[:, -1].any() and not nb[:, :, -1].any()


def test_narrowband_rejects_non_power_of_two_ratio():
    with pytest.raises(ValueError, match="power-of-two"):
        octree.eval_grid(lambda i: np.zeros(len(i)), 96, method="narrowband", init_resolution=32)


def test_eval_grid_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown grid method 'dense'"):
        octree.eval_grid(lambda i: np.zeros(len(i)), 8, method="dense")


def test_narrowband_dilation_adds_coarse_blocks_and_keeps_sign():
    r, init = 64, 16
    dense = dense_field("noisy", r)
    _, st0 = octree.eval_grid(lookup(dense), r, init_resolution=init)
    calls = []
    nb, st1 = octree.eval_grid(lookup(dense, calls), r, init_resolution=init, dilation=1)
    assert st1.queries == sum(len(c) for c in calls)
    # Whole blocks around straddling cells are added at the coarse levels (not the finest).
    for (s0, c0), (s1, c1) in zip(st0.per_level[1:-1], st1.per_level[1:-1], strict=True):
        assert s0 == s1 and c1 > c0
    assert st1.queries > st0.queries
    inner = (slice(0, -1),) * 3
    np.testing.assert_array_equal(nb[inner] > 0.5, dense[inner] > 0.5)


def _low_contrast(kind: str, r: int) -> np.ndarray:
    """Fields without contrast: an untrained network's (noise within ±0.002 of 0.5, every
    cell straddling 0.5), a blurred body whose occupancy never leaves [0.45, 0.55], and
    smooth noise of contrast about twice the threshold, surfaces everywhere."""
    rng = np.random.default_rng(3)
    if kind == "untrained":
        return (0.5 + 0.002 * rng.uniform(-1, 1, (r,) * 3)).astype(np.float32)
    if kind == "noise":
        base = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((r,) * 3), 1.5)
        return (1 / (1 + np.exp(-0.1 * base / base.std()))).astype(np.float32)
    return 0.45 + 0.1 * dense_field("noisy", r, width=2.0)


@pytest.mark.parametrize("kind", ["untrained", "blurred", "noise"])
def test_fast_grid_costs_no_more_than_official_without_contrast(kind):
    r, init = 64, 16
    dense = _low_contrast(kind, r)
    _, official = octree.eval_grid(lookup(dense), r, method="octree", init_resolution=init)
    calls = []
    grid, fast = octree.eval_grid(lookup(dense, calls), r, init_resolution=init)
    assert fast.queries == sum(len(c) for c in calls)
    assert fast.queries <= official.queries
    # threshold 0 switches the rule off: the tracing then costs more than the official octree.
    _, traced = octree.eval_grid(lookup(dense), r, init_resolution=init, threshold=0.0)
    assert traced.queries > official.queries
    if kind == "noise":  # contrast at every level: refined where the official refines
        assert fast.queries > 16**3
        return
    # Nothing beyond the first lattice: every cell lacks contrast. (The sharp fields of
    # test_narrowband_keeps_sign_and_queries_less meet the rule nowhere near the surface.)
    assert fast.per_level[0] == (4, 16**3) and fast.queries == 16**3
    # Unrefined cells keep the interpolation of true corner values.
    inner = (slice(0, -1),) * 3
    assert dense.min() - 1e-6 <= grid[inner].min() <= grid[inner].max() <= dense.max() + 1e-6
    np.testing.assert_array_equal(grid[::4, ::4, ::4], dense[::4, ::4, ::4])

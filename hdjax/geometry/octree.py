"""Occupancy grids for marching cubes: the official PIFuHD octree and a narrow-band variant.

Grid convention (official `create_grid` + `calib⁻¹ = diag(1, −1, 1)`): integer index i along each
axis maps to −1 + i·2/R, so the grid stops at 1 − 2/R, and the y axis of the query frame is
flipped relative to the grid's second index. The network is evaluated through a callback that
receives integer indices; `indices_to_points` turns them into query-frame points.

Both evaluators leave the last index along every axis unevaluated at 0, as the official code
does (its `notprocessed` mask starts False there).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

EvalFn = Callable[[np.ndarray], np.ndarray]
"""`(N, 3) int32 grid indices -> (N,) float` occupancy in [0, 1]."""


@dataclass(frozen=True)
class GridStats:
    """How many points an evaluator queried.

    Attributes:
      resolution: R of the (R, R, R) grid.
      queries: total number of points passed to `eval_fn`.
      per_level: `(stride, count)` for each level, coarse to fine.
    """

    resolution: int
    queries: int
    per_level: tuple[tuple[int, int], ...]


def indices_to_points(indices: np.ndarray, resolution: int) -> np.ndarray:
    """Maps integer grid indices to points of the network's query frame.

    Args:
      indices: `(N, 3) int` grid indices (x, y, z), each in [0, R).
      resolution: R.

    Returns:
      `(N, 3) float32` points (x, −y, z) with each coordinate −1 + i·2/R; the y flip is the
      official `calib⁻¹ = diag(1, −1, 1)` applied to the grid.
    """
    pts = np.asarray(indices, dtype=np.float64) * (2.0 / resolution) - 1.0
    pts[:, 1] = -pts[:, 1]
    return pts.astype(np.float32)


def _call(eval_fn: EvalFn, indices: np.ndarray, max_batch: int | None) -> np.ndarray:
    """Evaluates `eval_fn` on `(N, 3) int32` indices in chunks of at most `max_batch`."""
    n = indices.shape[0]
    if n == 0:
        return np.zeros((0,), np.float64)
    step = n if max_batch is None else max_batch
    outs = []
    for start in range(0, n, step):
        chunk = indices[start : start + step]
        out = np.asarray(eval_fn(chunk)).reshape(-1)
        if out.shape[0] != chunk.shape[0]:
            raise ValueError(f"eval_fn returned {out.shape[0]} values for {chunk.shape[0]} points")
        outs.append(out)
    # float64 storage as in the official code, so fill means of float32 values stay exact.
    return np.concatenate(outs).astype(np.float64, copy=False)


def _corner_min_max(lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over the 8 corners of each cell of a `(a, b, c)` lattice: `(a-1, b-1, c-1)`."""
    lo = hi = None
    for dx, dy, dz in itertools.product((0, 1), repeat=3):
        corner = lattice[
            dx : lattice.shape[0] - 1 + dx,
            dy : lattice.shape[1] - 1 + dy,
            dz : lattice.shape[2] - 1 + dz,
        ]
        lo = corner.copy() if lo is None else np.minimum(lo, corner, out=lo)
        hi = corner.copy() if hi is None else np.maximum(hi, corner, out=hi)
    return lo, hi


def _block_view(arr: np.ndarray, stride: int, cells: tuple[int, ...], upper: tuple[int, ...]):
    """A writable `(nx, sx, ny, sy, nz, sz)` view of one part of every cell's closed block.

    Along an axis with `upper == 0` the part is the half-open range [c·s, c·s + s) of cell c
    (length s); with `upper == 1` it is the single far face c·s + s. Within one `upper`
    pattern the parts of different cells are disjoint, so one masked copy fills them all.
    """
    base = arr[tuple(slice(stride * u, None) for u in upper)]
    shape, strides = [], []
    for n, u, st in zip(cells, upper, base.strides, strict=True):
        shape += [n, 1 if u else stride]
        strides += [st * stride, st]
    return np.lib.stride_tricks.as_strided(base, shape, strides, writeable=True)


# The official loop fills cells in C order, so on a node shared by several filled cells the
# lexicographically largest cell wins. A node's candidate cells differ by "upper" offsets: the
# node is in the lower part of cell c0 and on the far face of c0 − 1. The largest cell prefers
# upper = 0 on x first, then y, then z, i.e. priority decreases in lexicographic order of
# `upper`; applying the patterns from lowest to highest priority lets the winner write last.
_FILL_ORDER = tuple(reversed(list(itertools.product((0, 1), repeat=3))))


def _fill_cells(arr: np.ndarray, stride: int, mask: np.ndarray, values) -> None:
    """Writes `values` (array `(nx, ny, nz)` or scalar) to the closed blocks of masked cells.

    Reproduces the official sequential `arr[x:x+s+1, y:y+s+1, z:z+s+1] = v` loop over the
    masked cells in C order, vectorised.
    """
    cells = np.argwhere(mask)
    if cells.shape[0] * (stride + 1) ** 3 < arr.size // 8:
        # Few cells (typical at the finer levels): write their points directly.
        flat_arr = arr.reshape(-1)  # a view: arr is C-contiguous
        vals = values[mask] if np.ndim(values) else values
        for upper in _FILL_ORDER:
            axes = [np.array([stride]) if u else np.arange(stride) for u in upper]
            offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
            pts = (cells[:, None, :] * stride + offsets).reshape(-1, 3)
            flat = np.ravel_multi_index(pts.T, arr.shape)
            flat_arr[flat] = np.repeat(vals, len(offsets)) if np.ndim(vals) else vals
        return
    m6 = mask[:, None, :, None, :, None]
    v6 = values[:, None, :, None, :, None] if np.ndim(values) else values
    # With upper_z = 0 the z parts of consecutive cells tile a contiguous run; merging them
    # (values and mask repeated along z) gives numpy long inner loops instead of length-s ones.
    mz = np.repeat(mask, stride, axis=2)[:, None, :, None, :]
    vz = np.repeat(values, stride, axis=2)[:, None, :, None, :] if np.ndim(values) else values
    for upper in _FILL_ORDER:
        view = _block_view(arr, stride, mask.shape, upper)
        if upper[2] == 0:
            shape = (*view.shape[:4], view.shape[4] * stride)
            view = np.lib.stride_tricks.as_strided(
                view, shape, view.strides[:4] + view.strides[5:], writeable=True
            )
            np.copyto(view, vz, where=mz)
        else:
            np.copyto(view, v6, where=m6)


def _eval_octree(
    eval_fn: EvalFn,
    resolution: int,
    init_resolution: int,
    threshold: float,
    max_batch: int | None,
) -> tuple[np.ndarray, GridStats]:
    r = resolution
    if r < 2 or init_resolution < 1:
        raise ValueError(
            f"need resolution >= 2 and init_resolution >= 1, got {r}, {init_resolution}"
        )
    sdf = np.zeros((r, r, r), np.float64)
    todo = np.zeros((r, r, r), bool)  # the official `notprocessed`
    todo[:-1, :-1, :-1] = True
    stride = max(r // init_resolution, 1)
    per_level = []
    while stride > 0:
        # Every coarser lattice is a sub-lattice of this one, so the official cumulative
        # `grid_mask` equals the stride-s lattice.
        lattice_todo = todo[::stride, ::stride, ::stride]
        idx = np.stack(np.nonzero(lattice_todo), axis=-1).astype(np.int32) * stride
        vals = _call(eval_fn, idx, max_batch)
        sdf[idx[:, 0], idx[:, 1], idx[:, 2]] = vals
        todo[idx[:, 0], idx[:, 1], idx[:, 2]] = False
        per_level.append((stride, int(idx.shape[0])))
        if stride <= 1:
            break
        lo, hi = _corner_min_max(sdf[::stride, ::stride, ::stride])
        n = lo.shape
        h = stride // 2
        centre_todo = todo[h::stride, h::stride, h::stride][: n[0], : n[1], : n[2]]
        skip = ((hi - lo) < threshold) & centre_todo
        mean = 0.5 * (lo + hi)
        _fill_cells(sdf, stride, skip, mean)
        _fill_cells(todo, stride, skip, False)
        stride //= 2
    stats = GridStats(r, sum(c for _, c in per_level), tuple(per_level))
    return sdf.astype(np.float32), stats


def _upsample2(a: np.ndarray, out_len: tuple[int, int, int]) -> np.ndarray:
    """Doubles the lattice density along each axis by linear interpolation.

    New even nodes copy old ones, odd nodes average their two neighbours; a trailing odd node
    with no right neighbour copies the left one.
    """
    # Last axis first: its strided writes are the slow ones, so do them on the smallest array.
    for axis in (2, 1, 0):
        m = a.shape[axis]
        shape = list(a.shape)
        shape[axis] = out_len[axis]
        out = np.empty(shape, a.dtype)

        def sl(s, ax=axis):
            return tuple(s if i == ax else slice(None) for i in range(3))

        out[sl(slice(0, None, 2))] = a[sl(slice(0, (out_len[axis] + 1) // 2))]
        n_odd = out_len[axis] // 2
        n_mid = min(n_odd, m - 1)
        mid = out[sl(slice(1, 2 * n_mid, 2))]
        np.add(a[sl(slice(0, n_mid))], a[sl(slice(1, n_mid + 1))], out=mid)
        mid *= 0.5
        if n_odd > n_mid:
            out[sl(slice(2 * n_mid + 1, None, 2))] = a[sl(slice(m - 1, m))]
        a = out
    return a


_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)), np.int64)  # (8, 3)
_CUBE = ndimage.generate_binary_structure(3, 3)  # 26-connectivity


def _cells_straddle(vals: np.ndarray, cells: np.ndarray, level: float) -> np.ndarray:
    """Whether the 8 corner values of each `(K, 3)` cell straddle `level` -> `(K,) bool`."""
    corners = cells[:, None, :] + _CORNERS  # (K, 8, 3)
    v = vals[corners[..., 0], corners[..., 1], corners[..., 2]]
    return (v.min(axis=1) <= level) & (v.max(axis=1) >= level)


def _unique_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sorted unique flat indices of the in-range `(K, 3)` rows of a lattice of `shape`."""
    ok = ((rows >= 0) & (rows < np.array(shape))).all(axis=1)
    # A scatter into a lattice-sized mask beats sorting millions of indices.
    mask = np.zeros(int(np.prod(shape)), bool)
    mask[np.ravel_multi_index(rows[ok].T, shape)] = True
    return np.flatnonzero(mask)


def _evaluate_new(
    vals: np.ndarray, done: np.ndarray, flat: np.ndarray, stride: int, query: EvalFn
) -> np.ndarray:
    """Evaluates the not-done nodes among sorted flat indices of the stride lattice.

    `query` takes grid indices, so lattice indices are scaled by `stride`. Fills `vals` and
    marks `done` in place; returns the flat indices evaluated.
    """
    flat = flat[~done.ravel()[flat]]
    idx = np.stack(np.unravel_index(flat, vals.shape), axis=-1).astype(np.int32)
    vals.ravel()[flat] = query(idx * stride)
    done.ravel()[flat] = True
    return flat


def _pin_last(vals: np.ndarray, done: np.ndarray, last: int, stride: int) -> None:
    """Sets the grid's last index along every axis to 0 and done, if on the stride lattice."""
    if last % stride == 0:
        k = last // stride
        vals[k], vals[:, k], vals[:, :, k] = 0, 0, 0
        done[k], done[:, k], done[:, :, k] = True, True, True


def _block_nodes(cells: np.ndarray, n: int) -> np.ndarray:
    """`(n, n, n) bool`: every node of the closed blocks of the masked coarse cells."""
    need = np.zeros((n, n, n), bool)
    c = cells.shape
    for dx, dy, dz in itertools.product(range(3), repeat=3):
        need[dx : dx + 2 * c[0] : 2, dy : dy + 2 * c[1] : 2, dz : dz + 2 * c[2] : 2] |= cells
    return need


def _split_cells(cells: np.ndarray, m: int) -> np.ndarray:
    """Coarse cell mask -> the `(m, m, m)` mask of their 2×2×2 fine sub-cells."""
    fine = cells.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    out = np.zeros((m, m, m), bool)
    k = tuple(min(m, d) for d in fine.shape)
    out[: k[0], : k[1], : k[2]] = fine[: k[0], : k[1], : k[2]]
    return out


def _follow_surface(
    vals: np.ndarray,
    done: np.ndarray,
    seed: np.ndarray,
    level: float,
    stride: int,
    query: EvalFn,
    frozen: np.ndarray,
) -> int:
    """Evaluates the fine lattice along the surface, starting in the `seed` coarse cells.

    Fine values start as trilinear interpolants of the coarse cell corners, so only sub-cells
    of straddling coarse cells can straddle. Evaluate the corners of every straddling fine
    cell; new values can make neighbouring cells straddle, so re-test the cells touching new
    nodes until no straddling cell has an interpolated corner. The surface is then followed
    across coarse-cell faces wherever it goes, except into `frozen` fine cells (their nodes
    are already done, so it stops at their faces). Returns the number of nodes evaluated.
    """
    cell_shape = tuple(n - 1 for n in vals.shape)
    coarse = np.argwhere(seed)
    cells = _unique_rows((2 * coarse[:, None, :] + _CORNERS).reshape(-1, 3), cell_shape)
    count = 0
    while cells.shape[0]:
        rows = np.stack(np.unravel_index(cells, cell_shape), axis=-1)
        keep = _cells_straddle(vals, rows, level)
        keep &= ~frozen[rows[:, 0], rows[:, 1], rows[:, 2]]
        rows = rows[keep]
        nodes = _unique_rows((rows[:, None, :] + _CORNERS).reshape(-1, 3), vals.shape)
        new = _evaluate_new(vals, done, nodes, stride, query)
        count += len(new)
        if not len(new):
            break
        new_rows = np.stack(np.unravel_index(new, vals.shape), axis=-1)
        cells = _unique_rows((new_rows[:, None, :] - _CORNERS).reshape(-1, 3), cell_shape)
    return count


def _eval_narrowband(
    eval_fn: EvalFn,
    resolution: int,
    init_resolution: int,
    level: float,
    threshold: float,
    dilation: int,
    max_batch: int | None,
) -> tuple[np.ndarray, GridStats]:
    r = resolution
    stride = r // init_resolution if init_resolution >= 1 else 0
    if r < 2 or stride < 1 or r % init_resolution or stride & (stride - 1):
        raise ValueError(
            f"narrow band needs R divisible by init_resolution with a power-of-two ratio, "
            f"got R={r}, init_resolution={init_resolution}"
        )
    query = functools.partial(_call, eval_fn, max_batch=max_batch)
    last = r - 1  # never evaluated, 0 (official convention)
    n = (r + stride - 1) // stride
    vals = np.zeros((n, n, n), np.float32)
    done = np.zeros((n, n, n), bool)
    _pin_last(vals, done, last, stride)
    first = _evaluate_new(vals, done, np.flatnonzero(~done), stride, query)
    per_level = [(stride, len(first))]
    # Cells of the current lattice left unrefined for lack of contrast (see `eval_grid`).
    frozen = np.zeros((n - 1,) * 3, bool)
    trailing = False
    while stride > 1:
        lo, hi = _corner_min_max(vals)
        seed = (lo <= level) & (hi >= level) & ~frozen
        # The official skip rule, on cells whose 8 corners the official octree would hold too:
        # evaluated values, or values inside a frozen block (which stay within that block's
        # corner range, as the official fill constant does). Such a cell is never refined,
        # and its closed block stops the surface tracing, as the official fill does.
        settled = done.copy()
        if trailing:
            # `_upsample2` copied the last coarse node into the trailing odd one, beyond
            # every coarse cell; the copy counts as settled so that the contrast rule reaches
            # the grid's far faces, which the official octree fills like any other cell.
            settled[-1] |= settled[-2]
            settled[:, -1] |= settled[:, -2]
            settled[:, :, -1] |= settled[:, :, -2]
        settled = _corner_min_max(settled.view(np.uint8))[0].astype(bool)
        frozen |= settled & (hi - lo < threshold)
        seed &= ~frozen
        del lo, hi, settled
        stride //= 2
        n = (r + stride - 1) // stride
        vals = _upsample2(vals, (n, n, n))
        fine_done = np.zeros((n, n, n), bool)
        fine_done[::2, ::2, ::2] = done
        trailing = n == 2 * done.shape[0]
        done = fine_done
        _pin_last(vals, done, last, stride)
        coarse_frozen = frozen
        if frozen.any():
            # Their blocks keep the interpolated values for good: never evaluated, never
            # crossed by the surface tracing.
            done |= _block_nodes(frozen, n)
            frozen = _split_cells(frozen, n - 1)
        else:
            frozen = np.zeros((n - 1,) * 3, bool)
        count = 0
        if dilation > 0 and stride > 1 and seed.any():
            # Robust option: evaluate every node of the cells around straddling ones, which
            # catches features that dip into a cell without making its corners straddle.
            seed = ndimage.binary_dilation(seed, _CUBE, iterations=dilation) & ~coarse_frozen
            need = np.flatnonzero(_block_nodes(seed, n))
            count += len(_evaluate_new(vals, done, need, stride, query))
        count += _follow_surface(vals, done, seed, level, stride, query, frozen)
        per_level.append((stride, count))
    stats = GridStats(r, sum(k for _, k in per_level), tuple(per_level))
    return vals, stats


GridMethod = Literal["narrowband", "octree"]


def eval_grid(
    eval_fn: EvalFn,
    resolution: int,
    *,
    method: GridMethod = "narrowband",
    init_resolution: int = 64,
    threshold: float = 0.05,
    level: float = 0.5,
    dilation: int = 0,
    max_batch: int | None = None,
) -> tuple[np.ndarray, GridStats]:
    """Evaluates an occupancy grid for marching cubes without querying every node.

    `method="octree"` is the official PIFuHD octree (`lib/sdf.py: eval_grid_octree`),
    vectorised: starting at stride R // init_resolution and halving to 1, it evaluates the
    not-yet-processed nodes of the stride lattice; then every lattice cell whose 8 corner values
    span less than `threshold` and whose centre node is still unprocessed is filled (closed
    block, corners overwritten, later cells in C order winning on shared faces) with the mean
    of its corner min and max. The result equals the official grid cast to float32, bit for
    bit. Working memory is float64 (8·R³ bytes, 1 GiB at R = 512) to reproduce the official
    fill values exactly.

    `method="narrowband"` follows the `level` iso-surface instead. It evaluates the whole
    stride R // init_resolution lattice, then halves the stride level by level. A finer lattice
    starts as the trilinear interpolation of the coarser one (so a node keeps the side of
    `level` of its coarse cell's corners and marching cubes sees no surface in cells that do
    not straddle); then the corners of every fine cell that straddles `level`
    (min ≤ level ≤ max) are evaluated, the cells touching newly evaluated nodes are re-tested,
    and so on until every straddling cell has only evaluated corners. The surface is therefore
    traced across coarse-cell faces wherever it goes, and wherever marching cubes puts a vertex
    both edge ends are true network values. It differs from the official octree only where the
    two evaluate different nodes: a surface component that crosses no edge of the first
    lattice is missed (the official code misses it too unless a cell's corner values vary by
    ≥ its threshold; `dilation` > 0 adds full-block evaluation of the cells around straddling
    ones at the coarse levels for more safety). On the analytic shapes of the tests and bench
    the meshes coincide (max vertex distance < 0.01 voxel) with 0.3–0.7× the queries
    (`python -m bench.octree`).

    Both methods share the official contrast rule: a cell whose 8 corner values span less
    than `threshold` is not refined. In the narrow band it applies to cells whose corners the
    official octree would hold as well (evaluated values, or values inside a block already
    left unrefined); such a cell keeps its interpolated values for good and the surface
    tracing stops at its faces, so a field without contrast (an untrained network: every cell
    straddles 0.5 within ±0.002) costs the first lattice only, where tracing the noise would
    evaluate nearly the dense grid. Measured on R = 128 noise fields: never more queries than
    the official octree, except white noise of contrast near `threshold` itself (+4 %).

    Args:
      eval_fn: `(N, 3) int32` grid indices (C order of the grid) -> `(N,)` occupancy. Called a
        few times per level (or per `max_batch` chunk); use `indices_to_points` for
        coordinates.
      resolution: R. For "narrowband", R / init_resolution must be a power of two.
      method: "octree" (official, exact) or "narrowband" (fewer queries).
      init_resolution: resolution of the first, always fully evaluated lattice.
      threshold: the official skip threshold on a cell's corner value range (see above);
        0 disables it for "narrowband" (every straddling cell is traced).
      level: "narrowband" only: the iso-level marching cubes will extract.
      dilation: "narrowband" only: cells of dilation around straddling cells whose whole
        blocks are evaluated at the coarse levels (not at the finest); 0 disables it.
      max_batch: optional cap on the points per `eval_fn` call.

    Returns:
      grid: `(R, R, R) float32` occupancy, indexed [x, y, z]; the last index of each axis is 0
        (never evaluated, as in the official code).
      stats: the query counts.

    Raises:
      ValueError: unknown method, or a resolution the method cannot use.
    """
    if method == "octree":
        return _eval_octree(eval_fn, resolution, init_resolution, threshold, max_batch)
    if method == "narrowband":
        return _eval_narrowband(
            eval_fn, resolution, init_resolution, level, threshold, dilation, max_batch
        )
    raise ValueError(f"unknown grid method {method!r} (narrowband | octree)")

"""The solids of the garments (`garments`): the body's signed distance and part blend on a
grid (`BodyField`), each garment's field and its closed mesh (`build_garment`), and the
faces buried inside another piece (`hide_buried_faces`). The method is described in the
`garments` module docstring."""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree

from hdjax.data import point_sampling
from hdjax.datasets.synthetic_humans.garments import (
    ARM_L,
    ARM_R,
    FOOT_L,
    FOOT_R,
    HEAD,
    LEG_L,
    LEG_R,
    NECK,
    PARTS,
    TORSO,
    Garment,
    GarmentSpec,
)
from hdjax.datasets.synthetic_humans.garments_colours import pattern_colours

GRID_M = 0.012  # field grid and marching-cubes voxel
# One midpoint subdivision (vertices every ~6 mm instead of ~12 mm) sharpens the colour
# patterns but makes a 1024² PIFuHD record ~30 % slower to render and label (measured 2.9 s
# against 2.2 s; 2.0 s naked), so it is off.
SUBDIVIDE = False
BAND_M = 0.06  # the body's signed distance is computed this close to a vertex
FAR = 0.05  # field value of points known to be far outside a garment
CLIP = 0.03  # region fields are clipped to ±this before parts are blended


# ---------------------------------------------------------------- the body's field


def _segment_param(x: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Closest point of segment a-b to each of ``x`` (N, 3): its parameter t and distance."""
    ab = b - a
    t = np.clip(((x - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    d = x - a - t[:, None] * ab
    return t, np.sqrt(np.einsum("nc,nc->n", d, d))


def _limb_param(x: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(N,) fraction of arc length along a 3-joint chain of the closest chain point."""
    l1, l2 = (float(np.linalg.norm(joints[i + 1] - joints[i])) for i in (0, 1))
    t1, d1 = _segment_param(x, joints[0], joints[1])
    t2, d2 = _segment_param(x, joints[1], joints[2])
    return np.where(d1 <= d2, t1 * l1, l1 + t2 * l2) / (l1 + l2)


class BodyField:
    """The body's signed distance, part blend and frames on one grid, shared by garments.

    Args:
      vertices: (V, 3) subject-frame body; normals: (V, 3) unit outward; parts: (V,) `PARTS`;
      keypoints: (31, 3) (`hdjax.datasets.synthetic_humans.bodies`).
    """

    def __init__(self, vertices, normals, parts, keypoints):
        self.vertices = np.asarray(vertices, np.float64)
        self.parts = np.asarray(parts)
        self.kp = kp = np.asarray(keypoints, np.float64)
        # The band and a margin; garments may reach beyond (their blocks share the lattice).
        self.lo = self.vertices.min(0) - (BAND_M + 3 * GRID_M)
        self.hi = self.vertices.max(0) + (BAND_M + 3 * GRID_M)
        self.shape = tuple(int(n) for n in np.ceil((self.hi - self.lo) / GRID_M) + 1)
        # Candidate nodes: near a vertex on a 2x coarser grid (a cheap distance transform).
        coarse = np.zeros(tuple(s // 2 + 1 for s in self.shape), bool)
        ci = np.floor((self.vertices - self.lo) / (2 * GRID_M)).astype(int)
        coarse[tuple(ci.T)] = True
        near = ndimage.distance_transform_edt(~coarse) <= BAND_M / (2 * GRID_M) + 1.5
        idx = np.stack(np.nonzero(near), 1)
        fine = (
            idx[:, None, :] * 2
            + np.array(np.meshgrid(*[[0, 1]] * 3, indexing="ij")).reshape(3, -1).T[None]
        )
        fine = fine.reshape(-1, 3)
        fine = fine[np.all(fine < self.shape, axis=1)]
        x = self.lo + fine * GRID_M
        tree = cKDTree(self.vertices)
        dist, nn = tree.query(x, k=4, distance_upper_bound=BAND_M)
        keep = np.isfinite(dist[:, 0])
        fine, x, dist, nn = fine[keep], x[keep], dist[keep], nn[keep]
        ok = np.isfinite(dist)
        nn = np.where(ok, nn, nn[:, :1])
        w = np.where(ok, 1.0 / (dist**2 + 1e-6), 0.0)
        w /= w.sum(1, keepdims=True)
        normals = np.asarray(normals, np.float64)
        plane = np.einsum("nkc,nkc->nk", x[:, None] - self.vertices[nn], normals[nn])
        sdf = np.full(self.shape, np.nan, np.float32)
        sdf[tuple(fine.T)] = (w * plane).sum(1)
        # Nodes farther than the band: inside if their component does not reach the border.
        far = np.isnan(sdf)
        labels, _ = ndimage.label(far)
        border = np.unique(
            np.concatenate(
                [labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[..., [0, -1]].ravel()]
            )
        )
        outside = np.isin(labels, border[border > 0])
        self.inside_far = far & ~outside
        self.sdf = np.where(far, np.where(outside, np.float32(1.0), np.float32(-1.0)), sdf)
        self.band = np.full(self.shape, -1, np.int64)
        self.band[tuple(fine.T)] = np.arange(len(fine))
        member = np.zeros((len(fine), len(PARTS)), np.float32)
        rows = np.arange(len(fine))
        for k in range(nn.shape[1]):
            member[rows, self.parts[nn[:, k]]] += w[:, k]
        self.member = member
        # Frames from the keypoints.
        self.y_hip = float(kp[11:13, 1].mean())
        self.y_shoulder = float(kp[5:7, 1].mean())
        self.torso = self.y_shoulder - self.y_hip
        self.centre = np.array([kp[11:13, 0].mean(), 0.0, kp[11:13, 2].mean()])
        self.arms = [kp[[5, 7, 9]], kp[[6, 8, 10]]]
        self.legs = [kp[[11, 13, 15]], kp[[12, 14, 16]]]
        self.hand_tips = [kp[23:27].mean(0), kp[27:31].mean(0)]
        self.arm_len = [float(np.linalg.norm(np.diff(a, axis=0), axis=1).sum()) for a in self.arms]
        self.leg_len = [float(np.linalg.norm(np.diff(a, axis=0), axis=1).sum()) for a in self.legs]
        ear = kp[3:5].mean(0)
        left = kp[3] - kp[4]
        left /= np.linalg.norm(left)
        fwd = kp[0] - ear
        fwd -= (fwd @ left) * left
        fwd /= np.linalg.norm(fwd)
        self.head_origin = ear
        self.head_axes = np.stack([left, np.cross(fwd, left), fwd])  # rows: left, up, forward
        hv = self.to_head(self.vertices[self.parts == HEAD])
        self.head_lo, self.head_hi = hv.min(0), hv.max(0)
        self.eye = self.to_head(kp[1:3]).mean(0)

    def to_head(self, x: np.ndarray) -> np.ndarray:
        """Subject frame -> head frame (left, up, forward), origin between the ears."""
        return (np.asarray(x) - self.head_origin) @ self.head_axes.T

    def block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """The block of grid nodes covering [lo, hi] (it may reach beyond this grid): the
        index of its first node and its shape."""
        a = np.floor((lo - self.lo) / GRID_M).astype(int)
        b = np.ceil((hi - self.lo) / GRID_M).astype(int) + 1
        return a, tuple(int(n) for n in b - a)

    def take(self, grid: np.ndarray, start: np.ndarray, shape: tuple[int, ...], fill):
        """The values of one of this field's grids over a block; ``fill`` beyond the grid."""
        out = np.full(shape, fill, grid.dtype)
        lo = np.maximum(start, 0)
        hi = np.minimum(start + np.array(shape), self.shape)
        if np.all(hi > lo):
            dst = tuple(
                slice(int(i - s), int(j - s)) for i, j, s in zip(lo, hi, start, strict=True)
            )
            out[dst] = grid[tuple(slice(int(i), int(j)) for i, j in zip(lo, hi, strict=True))]
        return out

    def nearest_bone(self, x: np.ndarray) -> np.ndarray:
        kp = self.kp
        mid_hip, mid_sho = kp[11:13].mean(0), kp[5:7].mean(0)
        bones = [
            (TORSO, mid_hip, mid_sho), (TORSO, kp[11], kp[5]), (TORSO, kp[12], kp[6]),
            (HEAD, kp[3:5].mean(0), kp[0]), (NECK, mid_sho, kp[3:5].mean(0)),
            (ARM_L, kp[5], kp[7]), (ARM_L, kp[7], kp[9]), (ARM_R, kp[6], kp[8]),
            (ARM_R, kp[8], kp[10]), (LEG_L, kp[11], kp[13]), (LEG_L, kp[13], kp[15]),
            (LEG_R, kp[12], kp[14]), (LEG_R, kp[14], kp[16]),
        ]  # fmt: skip
        d = np.stack([_segment_param(x, a, b)[1] for _, a, b in bones], 1)
        return np.array([p for p, _, _ in bones])[d.argmin(1)]


# ---------------------------------------------------------------- garment fields


def _superellipse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a⁴ + b⁴)^¼: the cross-sections are rounded rectangles, which hug a waist or hips
    much closer than an ellipse does."""
    return np.sqrt(np.sqrt(a**4 + b**4))


def _frustum_profile(body: BodyField, top_y, hem_y, flare, extra):
    """Radii (along x) of a rounded-rectangle frustum from ``top_y`` down to ``hem_y``
    enclosing the torso and legs at every height and below it (plus ``extra``), widening
    by ``flare`` towards the hem: (heights descending, radii, z/x aspect ratio)."""
    v, parts = body.vertices, body.parts
    lower = np.isin(parts, (TORSO, LEG_L, LEG_R))
    sel = lower & (v[:, 1] <= top_y) & (v[:, 1] >= hem_y - 0.02)
    d = v[sel] - body.centre
    hip = lower & (np.abs(v[:, 1] - body.y_hip) < 0.03)
    ratio = float(np.clip(np.ptp(v[hip, 2]) / max(np.ptp(v[hip, 0]), 1e-3), 0.5, 1.0))
    need = _superellipse(d[:, 0], d[:, 2] / ratio)
    heights = np.arange(top_y, hem_y - 0.03, -0.01)
    which = np.clip(np.searchsorted(-heights, -v[sel, 1]), 0, len(heights) - 1)
    radius = np.zeros(len(heights))
    np.maximum.at(radius, which, need)
    # Hanging cloth widens downwards; a stride or a wide stance would balloon it, so the
    # radius stays below 1.3x the hips' (legs beyond it are covered by the leg shell).
    radius = np.maximum.accumulate(radius)
    radius = np.minimum(radius, 1.3 * radius[np.argmin(np.abs(heights - body.y_hip))]) + extra
    span = max(top_y - hem_y, 1e-3)
    radius += flare * np.clip((top_y - heights) / span, 0, 1) ** 1.5
    return heights, radius, ratio


def _frustum(body: BodyField, x, top_y, hem_y, flare, extra):
    """Field (< 0 inside) of `_frustum_profile`'s frustum, carved away 1.5 cm around the
    arms and hands (a hand hanging beside the thigh stays out of the skirt)."""
    heights, radius, ratio = _frustum_profile(body, top_y, hem_y, flare, extra)
    rx = np.interp(-x[..., 1], -heights, radius)
    rz = rx * ratio
    dx, dz = x[..., 0] - body.centre[0], x[..., 2] - body.centre[2]
    f = (_superellipse(dx / rx, dz / rz) - 1.0) * rz
    f = np.maximum(f, np.maximum(hem_y - x[..., 1], x[..., 1] - top_y))
    near = f < 0.02
    flat = x[near]
    d_arm = np.full(len(flat), np.inf)
    for arm, tip in zip(body.arms, body.hand_tips, strict=True):
        for a, b, r in ((arm[0], arm[1], 0.05), (arm[1], arm[2], 0.042), (arm[2], tip, 0.045)):
            d_arm = np.minimum(d_arm, _segment_param(flat, a, b)[1] - r)
    f[near] = np.maximum(f[near], 0.015 - d_arm)
    return f


def _capsule(x, a, b, ra, rb):
    t, _ = _segment_param(x.reshape(-1, 3), a, b)
    p = a + t[:, None] * (b - a)
    d = np.linalg.norm(x.reshape(-1, 3) - p, axis=1) - (ra + t * (rb - ra))
    return d.reshape(x.shape[:-1])


def _part_fields(body: BodyField, spec: GarmentSpec, x: np.ndarray):
    """Per-part (offset, region) of a garment at nodes ``x`` (..., 3): dict part -> pair of
    arrays or scalars (region < 0 inside); parts not named are not covered."""
    p, y = spec.params, x[..., 1]
    flat = x.reshape(-1, 3)
    out: dict[int, tuple[Any, Any]] = {}

    def arms(length, offset, flare):
        for k, part in enumerate((ARM_L, ARM_R)):
            s = _limb_param(flat, body.arms[k]).reshape(y.shape)
            out[part] = (offset + flare * s, (s - length) * body.arm_len[k])

    def legs(length, offset, hem_offset):
        for k, part in enumerate((LEG_L, LEG_R)):
            s = _limb_param(flat, body.legs[k]).reshape(y.shape)
            out[part] = (offset + (hem_offset - offset) * s, (s - length) * body.leg_len[k])

    neck_y = body.y_shoulder + 0.03
    if spec.kind in ("top", "dress", "coat"):
        hem_y = body.y_hip + p.get("hem", -0.6) * body.torso
        chest_y = body.y_hip + 0.75 * body.torso
        grow = np.clip((chest_y - y) / max(chest_y - hem_y, 0.05), 0, 1)
        torso = (p["offset"] + p.get("looseness", 0.0) * grow, np.maximum(hem_y - y, y - neck_y))
        # The neck and the tops of the legs take the torso's cuts, so the neckline and the
        # hem are planes rather than the ragged edges of the parts.
        for part in (TORSO, NECK, LEG_L, LEG_R):
            out[part] = torso
        sleeve_offset = p.get("sleeve_offset", p["offset"])
        arms(p["sleeve_length"], sleeve_offset, p.get("sleeve_flare", 0.0))
        if spec.kind in ("dress", "coat"):
            _, hem = _skirt_span(body, spec)
            for part in (LEG_L, LEG_R):
                out[part] = (min(_skirt_offset(p), BAND_M - 0.015), hem - y)
    elif spec.kind in ("trousers", "shorts"):
        waist_y = body.y_hip + p["waist"] * body.torso
        out[TORSO] = (p["offset"], y - waist_y)
        legs(p["leg_length"], p["offset"], p["hem_offset"])
    elif spec.kind == "skirt":
        waist_y, hem = _skirt_span(body, spec)
        out[TORSO] = (p["offset"], y - waist_y)
        for part in (LEG_L, LEG_R):
            out[part] = (p["offset"], np.maximum(hem - y, y - waist_y))
    elif spec.kind == "shoes":
        for part in (FOOT_L, FOOT_R):
            out[part] = (p["offset"], -CLIP)
        for k, part in enumerate((LEG_L, LEG_R)):
            s = _limb_param(flat, body.legs[k]).reshape(y.shape)
            out[part] = (p["offset"], (p["height"] - s) * body.leg_len[k])
    elif spec.kind == "hair":
        h = body.to_head(x)
        f, u = h[..., 2], h[..., 1]
        lo, eye = body.head_lo, body.eye
        line = np.interp(f, [lo[2], 0.0, eye[2]], [-0.05, eye[1] - 0.005, eye[1] + p["hairline"]])
        out[HEAD] = (p["offset"], line - u)
    return out


def _skirt_offset(params: dict[str, float]) -> float:
    """How far a skirt, dress or coat frustum stands off the body (a coat clears what is
    under it)."""
    return params.get("skirt_offset", params["offset"])


def _skirt_span(body: BodyField, spec: GarmentSpec) -> tuple[float, float]:
    """(top, hem) heights of a skirt, dress or coat frustum: from the waist down a fraction
    ``length`` of the way to the ankles."""
    p = spec.params
    waist_y = body.y_hip + p.get("waist", 0.3) * body.torso
    return waist_y, waist_y - p["length"] * (waist_y - body.legs[0][2, 1])


def _primitive_box(body: BodyField, spec: GarmentSpec) -> np.ndarray | None:
    """(2, 3) box holding the garment's simple solids, or None."""
    p = spec.params
    if spec.kind in ("skirt", "dress", "coat"):
        top, hem = _skirt_span(body, spec)
        _, radius, ratio = _frustum_profile(body, top, hem, p["flare"], _skirt_offset(p))
        r = np.array([radius.max(), 0.0, radius.max() * ratio]) + GRID_M
        c = body.centre
        return np.array([c - r + [0, hem - 0.02, 0], c + r + [0, top + 0.02, 0]])
    if spec.kind != "hair" or spec.style == "short":
        return None
    o = body.head_origin
    lo = np.array([o[0] - 0.2, body.y_shoulder - p["length"] - 0.05, o[2] - 0.25])
    return np.array([lo, o + 0.25])


def _primitives(body: BodyField, spec: GarmentSpec, x: np.ndarray) -> np.ndarray | None:
    """Union (min) of the garment's simple solids at ``x``, or None."""
    p = spec.params
    if spec.kind in ("skirt", "dress", "coat"):
        waist_y, hem = _skirt_span(body, spec)
        return _frustum(body, x, waist_y, hem, p["flare"], _skirt_offset(p))
    if spec.kind != "hair" or spec.style == "short":
        return None
    h = body.to_head(x)
    lo, hi, eye = body.head_lo, body.head_hi, body.eye
    vol = p["volume"]
    if spec.style in ("bob", "long"):
        centre = np.array([0.0, 0.5 * (hi[1] + eye[1] - 0.1), 0.5 * (lo[2] + hi[2])])
        axes = np.array(
            [hi[0] + vol, 0.5 * (hi[1] - eye[1] + 0.1) + 0.6 * vol, 0.5 * (hi[2] - lo[2]) + vol]
        )
        q = np.linalg.norm((h - centre) / axes, axis=-1)
        f = (q - 1.0) * axes.min()
        f = np.maximum(f, h[..., 2] - (eye[2] - 0.03))  # stay behind the face
        f = np.maximum(f, (eye[1] - 0.11) - h[..., 1])
        if spec.style == "long":
            f = np.minimum(f, _back_slab(body, x, p["length"], vol))
        return f
    back = body.head_origin + body.head_axes.T @ np.array([0.0, 0.6 * hi[1], lo[2] + 0.01])
    if spec.style == "bun":
        r = 0.03 + vol * 0.6
        centre = back - body.head_axes[2] * 0.01 + body.head_axes[1] * 0.01
        return np.linalg.norm(x - centre, axis=-1) - r
    start = body.head_origin + body.head_axes.T @ np.array([0.0, 0.02, lo[2] + 0.01])
    end = start + np.array([0.0, -p["length"], -0.03])
    return _capsule(x, start, end, 0.025, 0.012)


def _back_slab(body: BodyField, x, length, thick):
    """Long hair down the back: a slab behind the head, neck and back to ``length`` below
    the shoulders, following the back's profile."""
    v = body.vertices
    cx = body.centre[0]
    width = body.head_hi[0] + 0.01
    top = body.head_origin[1] + 0.02
    bottom = body.y_shoulder - length
    sel = (np.abs(v[:, 0] - cx) < width) & np.isin(body.parts, (HEAD, NECK, TORSO))
    sel &= (v[:, 1] > bottom - 0.02) & (v[:, 1] < top + 0.02)
    bins = np.arange(bottom - 0.02, top + 0.03, 0.01)
    which = np.clip(np.searchsorted(bins, v[sel, 1]), 0, len(bins) - 1)
    back = np.full(len(bins), np.inf)
    np.minimum.at(back, which, v[sel, 2])
    ok = np.isfinite(back)
    back = np.interp(bins, bins[ok], back[ok])
    back = ndimage.minimum_filter1d(back, 7)
    zb = np.interp(x[..., 1], bins, back)
    y = x[..., 1]
    w = width + 0.12 * np.clip(body.head_origin[1] - y, 0, None)
    f = np.abs(x[..., 0] - cx) - w
    f = np.maximum(f, np.maximum(bottom - y, y - top))
    return np.maximum(f, np.maximum((zb - thick) - x[..., 2], x[..., 2] - (zb + 0.03)))


def _bounds(body: BodyField, spec: GarmentSpec) -> tuple[np.ndarray, np.ndarray]:
    """A box holding the garment: its parts' vertices plus the band, and its solids."""
    parts = sorted(_part_fields(body, spec, body.vertices[:1]))
    v = body.vertices[np.isin(body.parts, parts)]
    lo, hi = v.min(0) - BAND_M, v.max(0) + BAND_M
    box = _primitive_box(body, spec)
    if box is not None:
        lo, hi = np.minimum(lo, box[0]), np.maximum(hi, box[1])
    return lo, hi


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """min(a, b) with the crease rounded over ``k`` (only ever adds material): a skirt or a
    bob meets the cloth or hair above it without a shelf."""
    h = np.clip(k - np.abs(a - b), 0.0, None) / k
    return np.minimum(a, b) - h * h * k / 4.0


def garment_field(body: BodyField, spec: GarmentSpec) -> tuple[np.ndarray, np.ndarray]:
    """The garment's field (< 0 inside) on its grid block, and the block's first node.

    Only nodes that can be inside are evaluated: band nodes of a covered part, nodes deep
    in the body, and nodes in the box of a simple solid; every other node is `FAR`.
    """
    start, shape = body.block(*_bounds(body, spec))
    origin = body.lo + start * GRID_M
    parts = sorted(_part_fields(body, spec, body.vertices[:1]))
    band = body.take(body.band, start, shape, -1)
    in_band = band >= 0
    covered = np.zeros(shape, bool)
    covered[in_band] = body.member[band[in_band]][:, parts].sum(1) > 1e-3
    covered |= body.take(body.inside_far, start, shape, False)
    idx = np.nonzero(covered)
    x = origin + np.stack(idx, 1) * GRID_M
    member = np.zeros((len(x), len(PARTS)), np.float32)
    b = band[idx]
    member[b >= 0] = body.member[b[b >= 0]]
    deep = b < 0
    if deep.any():
        member[deep] = np.eye(len(PARTS), dtype=np.float32)[body.nearest_bone(x[deep])]
    total = np.zeros(len(x), np.float32)
    offset = np.zeros(len(x), np.float32)
    region = np.zeros(len(x), np.float32)
    for part, (o, r) in _part_fields(body, spec, x).items():
        m = member[:, part]
        total += m
        offset += m * o
        region += m * np.clip(r, -CLIP, CLIP)
    region += (1.0 - total) * CLIP
    f = np.full(shape, FAR, np.float32)
    f[idx] = np.maximum(body.take(body.sdf, start, shape, 1.0)[idx] - offset, region)
    box = _primitive_box(body, spec)
    if box is not None:
        lo = np.clip(np.floor((box[0] - origin) / GRID_M).astype(int), 0, shape)
        hi = np.clip(np.ceil((box[1] - origin) / GRID_M).astype(int) + 1, 0, shape)
        sub = tuple(slice(int(a), int(c)) for a, c in zip(lo, hi, strict=True))
        axes = [origin[d] + GRID_M * np.arange(lo[d], hi[d]) for d in range(3)]
        xs = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        f[sub] = _smooth_union(f[sub], _primitives(body, spec, xs), 0.04)
    return f, origin


def _mesh_from_field(f: np.ndarray, origin: np.ndarray) -> trimesh.Trimesh:
    """Marching cubes of the field's zero set (optionally subdivided, `SUBDIVIDE`), Taubin
    smoothing, and no fragments (`_drop_fragments`)."""
    from skimage.measure import marching_cubes

    padded = np.pad(f, 1, constant_values=FAR)
    verts, faces, _, _ = marching_cubes(padded, 0.0, spacing=(GRID_M,) * 3)
    # scikit-image's winding is outward for a field that is negative inside.
    verts = verts + origin - GRID_M
    if SUBDIVIDE:
        verts, faces = trimesh.remesh.subdivide(verts, faces)
    mesh = _drop_fragments(trimesh.Trimesh(verts, faces, process=False))
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=8)
    return mesh


# A closed piece of a garment smaller than this fraction of its largest is a fragment of the
# field (a sliver where a region's edge grazes the zero level, a blob inside the body), not
# cloth: a shoe or a second sleeve is as large as the first, fragments are under 0.3 %.
FRAGMENT_FRACTION = 0.01


def _drop_fragments(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The mesh without its closed pieces of less than `FRAGMENT_FRACTION` of the largest's
    volume."""
    pieces = trimesh.graph.connected_components(
        mesh.face_adjacency, nodes=np.arange(len(mesh.faces))
    )
    if len(pieces) < 2:
        return mesh
    volumes = np.array([abs(mesh.submesh([p], append=True).volume) for p in pieces])
    keep = np.concatenate(
        [p for p, v in zip(pieces, volumes, strict=True) if v >= FRAGMENT_FRACTION * volumes.max()]
    )
    faces = mesh.faces[np.sort(keep)]
    used, inverse = np.unique(faces, return_inverse=True)
    return trimesh.Trimesh(mesh.vertices[used], inverse.reshape(-1, 3), process=False)


def build_garment(body: BodyField, spec: GarmentSpec) -> Garment:
    """The closed mesh and colours of one garment.

    Raises:
      ValueError: the garment encloses nothing on this body (its region is empty).
    """
    f, origin = garment_field(body, spec)
    if not np.any(f < 0):
        raise ValueError(f"{spec.kind} ({spec.style}) encloses nothing on this body")
    mesh = _mesh_from_field(f, origin)
    verts = np.asarray(mesh.vertices)
    return Garment(
        spec=spec,
        vertices=verts.astype(np.float32),
        faces=np.asarray(mesh.faces, np.int32),
        colors=pattern_colours(spec, verts),
    )


BURIED_M = 0.003  # a face this deep inside another piece is hidden by it


def hide_buried_faces(
    vertices: np.ndarray, faces: np.ndarray, garments: list[Garment]
) -> np.ndarray:
    """Mark the faces of the body and of every garment that lie inside another piece.

    A face is buried when its vertices and its centre are all more than `BURIED_M` inside
    one and the same other piece, by the signed distance to that piece's closed mesh (exact,
    not its grid field: a grid field is ~1 mm off the smoothed mesh it made, which hid faces
    of the outer surface and let the renderer see through them, issue #24). What is left
    covers the boundary of the union of the pieces, so it renders as the closed pieces do,
    while PIFu's area-weighted surface samples no longer fall on skin under the clothes or
    on cloth under a coat. Labels still come from the closed pieces
    (`bodies.GeneratedBody.subject`): open seams would make winding numbers inexact.

    Sets ``visible`` on every garment and returns the body's (F,) bool.
    """
    pieces = [(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))]
    pieces += [(g.vertices.astype(np.float64), g.faces.astype(np.int64)) for g in garments]
    visible = []
    for k, (v, f) in enumerate(pieces):
        probes = np.concatenate([v, v[f].mean(1)])  # vertices, then face centres
        buried = np.zeros(len(f), bool)
        for j, (vj, fj) in enumerate(pieces):
            near = np.all((probes >= vj.min(0)) & (probes <= vj.max(0)), axis=1)
            if j == k or not near.any():
                continue
            deep = np.zeros(len(probes), bool)  # outside j's box is outside j
            deep[near] = point_sampling.signed_distance(vj, fj, probes[near]) < -BURIED_M
            buried |= deep[: len(v)][f].all(1) & deep[len(v) :]
        visible.append(~buried)
    for g, vis in zip(garments, visible[1:], strict=True):
        g.visible = vis
    return visible[0]

"""PyTorch-exact sampling for 2K2K: `affine_grid` + `grid_sample` (align_corners=False,
bilinear, zeros) down to the float32 operation order, so sample positions agree bit for
bit; the official resizes, its blur, the inverse part transforms, and the part crops and
blending weights evaluated on each part's centre-crop window of the canonical frame only
(the official warps the whole 2048^2 frame, then crops; the blur of the (h-16, w-16) window
never leaves the h x w crop). Everything here is float32.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from hdjax.models.twok2k.canvas import BLUR_SIGMA, BLUR_TAPS, CANVAS, OFFICIAL, Geometry


@functools.lru_cache(maxsize=8)
def base_grid(n: int) -> np.ndarray:
    """`affine_grid`'s base coordinates for n pixels (align_corners=False), bit-exact.

    torch.linspace(-1, 1, n) (start + i step below the middle, end - (n-1-i) step above,
    each rounded once) scaled by (n - 1) / n in two float32 roundings.  -> (n,) float32.
    """
    step = np.float32(2.0) / np.float32(n - 1)
    i = np.arange(n, dtype=np.float64)
    lin = np.where(i < n // 2, -1.0 + np.float64(step) * i, 1.0 - np.float64(step) * (n - 1 - i))
    lin = lin.astype(np.float32)
    return (lin * np.float32(n - 1)) / np.float32(n)


def _rounded(p: jnp.ndarray) -> jnp.ndarray:
    """p itself, but no longer a product that the compiler may fuse into an FMA."""
    return jnp.where(jnp.isnan(p), jnp.zeros_like(p), p)


def affine_coords(theta: jnp.ndarray, rows: np.ndarray, cols: np.ndarray, size: int):
    """Pixel coordinates that `grid_sample(affine_grid(theta))` reads for output pixels
    (rows x cols) of a size^2 frame, in a size^2 source.

    theta (2, 3); rows (R,), cols (C,) int arrays (may be traced) -> ix, iy (R, C) float32.
    """
    g = jnp.asarray(base_grid(size))
    x = g[cols][None, :]
    y = g[rows][:, None]
    # Sequential float32 products and sums, as the bmm in affine_grid computes them. XLA:CPU
    # would contract a product and the following sum into one FMA (one rounding less, up to
    # 2e-4 pixel away from PyTorch's positions); a select between them prevents that.
    gx = _rounded(x * theta[0, 0]) + _rounded(y * theta[0, 1]) + theta[0, 2]
    gy = _rounded(x * theta[1, 0]) + _rounded(y * theta[1, 1]) + theta[1, 2]
    half = np.float32(size / 2)
    return (gx + 1) * half - np.float32(0.5), (gy + 1) * half - np.float32(0.5)


def _bilinear_taps(ix: jnp.ndarray, iy: jnp.ndarray, h: int, w: int):
    """The four taps of bilinear `grid_sample` (zeros padding) at pixel coords (ix, iy):
    [(row index, col index, weight, in_bounds)], in grid_sample's nw, ne, sw, se order."""
    x0 = jnp.floor(ix)
    y0 = jnp.floor(iy)
    wx = ix - x0
    wy = iy - y0
    ex = 1 - wx
    sy = 1 - wy
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    taps = []
    for dy, dx, wt in ((0, 0, sy * ex), (0, 1, sy * wx), (1, 0, wy * ex), (1, 1, wy * wx)):
        r, c = y0 + dy, x0 + dx
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        taps.append((jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1), wt, inside))
    return taps


def bilinear_sample(src: jnp.ndarray, ix: jnp.ndarray, iy: jnp.ndarray) -> jnp.ndarray:
    """src (H, W, C) at (ix, iy) (R, Cols) -> (R, Cols, C), zeros outside."""
    out = None
    for r, c, wt, inside in _bilinear_taps(ix, iy, src.shape[0], src.shape[1]):
        term = jnp.where(inside[..., None], src[r, c], 0.0) * wt[..., None]
        out = term if out is None else out + term
    return out


def _ones_sample(ix: jnp.ndarray, iy: jnp.ndarray, h: int, w: int) -> jnp.ndarray:
    """`grid_sample` of an all-ones h x w map at (ix, iy): the in-bounds tap weight sum."""
    out = None
    for _, _, wt, inside in _bilinear_taps(ix, iy, h, w):
        term = jnp.where(inside, 1.0, 0.0) * wt
        out = term if out is None else out + term
    return out


def invert_affine(theta: jnp.ndarray) -> jnp.ndarray:
    """(..., 2, 3) -> (..., 2, 3): [R^-1, -R^-1 T] (the official `inv_aff`), bit-exact.

    `torch.linalg.inv` solves R X = I by LU with partial pivoting: l = c / a, u = d - l b,
    then substitutions that multiply by the reciprocals of the pivots. Rounding like it
    matters: a last-bit change of the inverse moves warp-back positions by 1e-4 pixel, which
    at a window's edge decides whether a pixel gets a (tiny) weight or none, hence a normal
    or zero.
    """
    r = theta[..., :2]
    a, b, c, d = r[..., 0, 0], r[..., 0, 1], r[..., 1, 0], r[..., 1, 1]
    swap = jnp.abs(c) > jnp.abs(a)
    a, b, c, d = (jnp.where(swap, q, p) for p, q in ((a, c), (b, d), (c, a), (d, b)))
    l = c / a
    u = d - _rounded(l * b)
    ra = 1 / a
    ru = 1 / u
    cols = []
    for e0, e1 in ((1.0, 0.0), (0.0, 1.0)):
        y1 = jnp.where(swap, e1, e0)
        y2 = jnp.where(swap, e0, e1) - _rounded(l * y1)
        x2 = _rounded(y2 * ru)
        x1 = (y1 - _rounded(b * x2)) * ra
        cols.append(jnp.stack([x1, x2], -1))
    inv = jnp.stack(cols, -1)  # (..., 2, 2)
    t = theta[..., 2]
    inv_t = -(_rounded(inv[..., 0] * t[..., :1]) + _rounded(inv[..., 1] * t[..., 1:]))
    return jnp.concatenate([inv, inv_t[..., None]], -1)


def downsample8_bilinear(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, H/8, W/8, C): `F.interpolate(bilinear, align_corners=False)`
    without antialiasing — each output is the mean of input pixels 8i+3 and 8i+4 per axis,
    summed in PyTorch's order (columns, then rows)."""
    s = x[:, :, 3::8] + x[:, :, 4::8]
    return (s[:, 3::8] + s[:, 4::8]) * np.float32(0.25)


@functools.lru_cache(maxsize=8)
def _upsample_taps(n_in: int, n_out: int):
    """Indices and weights of bilinear align_corners=False upsampling along one axis."""
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0).astype(np.float32)
    i0 = np.floor(src).astype(np.int32)
    lam = (src - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1).astype(np.int32)
    return i0, i1, (1 - lam).astype(np.float32), lam


def upsample_bilinear(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """(B, h, w, C) -> (B, size, size, C), `F.interpolate(bilinear, align_corners=False)`."""
    c0, c1, cw0, cw1 = _upsample_taps(x.shape[2], size)
    r0, r1, rw0, rw1 = _upsample_taps(x.shape[1], size)
    a = x[:, :, c0] * cw0[:, None] + x[:, :, c1] * cw1[:, None]
    return a[:, r0] * rw0[:, None, None] + a[:, r1] * rw1[:, None, None]


@functools.lru_cache(maxsize=2)
def gaussian_taps(taps: int = BLUR_TAPS, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """torchvision's normalised 1-D Gaussian kernel (taps at -(k-1)/2 .. (k-1)/2)."""
    x = np.linspace(-(taps - 1) / 2, (taps - 1) / 2, taps, dtype=np.float32)
    pdf = np.exp(-0.5 * (x / np.float32(sigma)) ** 2)
    return (pdf / pdf.sum()).astype(np.float32)


def blur(x: jnp.ndarray, taps: int = BLUR_TAPS, sigma: float = BLUR_SIGMA) -> jnp.ndarray:
    """Separable Gaussian (official: 15x15, sigma 5) with zero padding. (N, h, w) -> (N, h, w).

    The official blur reflect-pads its 2048^2 frame; callers only blur maps whose 8-pixel
    border is zero, inside which reflection and zeros agree.
    """
    k = jnp.asarray(gaussian_taps(taps, sigma))
    r = (taps - 1) // 2
    xp = jnp.pad(x, ((0, 0), (r, r), (0, 0)))
    x = sum(xp[:, i : i + x.shape[1]] * k[i] for i in range(taps))
    xp = jnp.pad(x, ((0, 0), (0, 0), (r, r)))
    return sum(xp[:, :, i : i + x.shape[2]] * k[i] for i in range(taps))


def crop_window(h: int, w: int, canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the centre (h, w) crop of the canonical frame."""
    return np.arange(canvas // 2 - h // 2, canvas // 2 + h // 2), np.arange(
        canvas // 2 - w // 2, canvas // 2 + w // 2
    )


def sample_part_window(
    src: jnp.ndarray, theta: jnp.ndarray, crop: tuple[int, int]
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The centre crop of `grid_sample(src, affine_grid(theta))`, computed on the crop only.

    src (S, S, C) (S = 2048 official); theta (2, 3) canonical -> image ->
    (crop (h, w, C), ones map (h, w)).
    """
    canvas = src.shape[0]
    rows, cols = crop_window(*crop, canvas)
    ix, iy = affine_coords(theta, rows, cols, canvas)
    return bilinear_sample(src, ix, iy), _ones_sample(ix, iy, canvas, canvas)


def blend_weight(ones: jnp.ndarray, geom: Geometry = OFFICIAL) -> jnp.ndarray:
    """Unnormalised blending weight of one part on its crop window: the in-image map with
    its frame (8 pixels official) zeroed, blurred. (N, h, w) -> (N, h, w)."""
    f = geom.blur_frame
    framed = jnp.zeros_like(ones).at[:, f:-f, f:-f].set(ones[:, f:-f, f:-f])
    return blur(framed, geom.blur_taps, geom.blur_sigma)

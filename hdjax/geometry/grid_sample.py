"""Pixel-aligned feature sampling (`grid_sample` equivalents), vmapped over points."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _sample_point_align_corners(feat: jnp.ndarray, uv: jnp.ndarray) -> jnp.ndarray:
    """Bilinear sample of one point. feat (H, W, C), uv (2,) in [-1, 1] -> (C,).

    uv[0] runs along the width, uv[1] along the height; -1/+1 are the centres of the first/last
    pixels (align_corners=True); taps outside the map contribute zero (padding "zeros").
    """
    h, w, _ = feat.shape
    x = (uv[0] + 1) * 0.5 * (w - 1)
    y = (uv[1] + 1) * 0.5 * (h - 1)
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    tx, ty = x - x0, y - y0
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    out = jnp.zeros(feat.shape[-1], feat.dtype)
    for dy, wy in ((0, 1 - ty), (1, ty)):
        for dx, wx in ((0, 1 - tx), (1, tx)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            tap = feat[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
            out = out + jnp.where(valid, wx * wy, 0.0).astype(feat.dtype) * tap
    return out


def grid_sample_align_corners(feat: jnp.ndarray, uv: jnp.ndarray) -> jnp.ndarray:
    """`F.grid_sample(feat, uv, bilinear, zeros, align_corners=True)` for a batch of point sets.

    Args:
      feat: (B, H, W, C) feature maps.
      uv: (B, N, 2) normalised image coordinates (x, y).
    Returns:
      (B, N, C) sampled features.
    """
    per_image = jax.vmap(_sample_point_align_corners, in_axes=(None, 0))
    return jax.vmap(per_image)(feat, uv)

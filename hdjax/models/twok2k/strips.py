"""Strip-wise refiner blocks: the 1024^2 and 2048^2 blocks run together in row strips with
a halo, so no 64-channel map of either exists in full.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Row strips of the 1024^2 and 2048^2 refiner blocks: the halo covers their 3-pixel reach.
STRIP_ROWS = 256
STRIP_HALO = 4


def _rows(fn, d_prev: jnp.ndarray, n: jnp.ndarray, start, count: int, halo: int) -> jnp.ndarray:
    """Rows [start, start + count) of fn(d_prev, n), computed on a window of count + 2 halo
    rows (shifted inwards at the image border, where the zero padding is the image's own).

    fn is a stack of 'same' convolutions of reach < halo after a nearest x2 upsampling of
    d_prev; inside the window its border rows are wrong only within that reach. start and
    halo are even (d_prev has half the rows).
    """
    height = n.shape[1]
    window = min(count + 2 * halo, height)
    lo = jnp.clip(start - halo, 0, height - window)
    n_s = jax.lax.dynamic_slice_in_dim(n, lo, window, axis=1)
    d_s = jax.lax.dynamic_slice_in_dim(d_prev, lo // 2, window // 2, axis=1)
    return jax.lax.dynamic_slice_in_dim(fn(d_s, n_s), start - lo, count, axis=1)


def _check_strips(height: int, strip: int, halo: int) -> None:
    if height % strip or strip % 4 or halo % 4:
        raise ValueError(f"height {height}, strip {strip} and halo {halo} do not tile")


def _stack_strips(out: jnp.ndarray) -> jnp.ndarray:
    """(K, B, strip, W, F) -> (B, K * strip, W, F)."""
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape(out.shape[0], -1, *out.shape[3:])


def strip_apply(fn, d_prev: jnp.ndarray, n: jnp.ndarray, strip: int, halo: int) -> jnp.ndarray:
    """fn(d_prev, n) row strip by row strip (see `_rows`).

    d_prev (B, H/2, W/2, C) and n (B, H, W, 6) -> fn's (B, H, W, F).
    """
    height = n.shape[1]
    if height <= strip + 2 * halo:
        return fn(d_prev, n)
    _check_strips(height, strip, halo)
    return _stack_strips(
        jax.lax.map(
            lambda k: _rows(fn, d_prev, n, k * strip, strip, halo), jnp.arange(height // strip)
        )
    )


def strip_apply2(fn2, fn3, d1, n2, n, strip: int, halo: int) -> jnp.ndarray:
    """fn3(fn2(d1, n2), n) strip by strip, fn2 computed only on the rows each strip needs:
    neither stage's full-size 64-channel map exists (256 MiB at 1024^2 for the 2K2K refiner).

    d1 (B, H/4, W/4, C), n2 (B, H/2, W/2, 6), n (B, H, W, 6) -> (B, H, W, F).
    """
    height = n.shape[1]
    window = strip + 2 * halo
    if height <= window or n2.shape[1] <= window // 2 + 2 * halo:
        return fn3(fn2(d1, n2), n)
    _check_strips(height, strip, halo)

    def one(k):
        start = k * strip
        lo = jnp.clip(start - halo, 0, height - window)
        d2 = _rows(fn2, d1, n2, lo // 2, window // 2, halo)
        n_s = jax.lax.dynamic_slice_in_dim(n, lo, window, axis=1)
        return jax.lax.dynamic_slice_in_dim(fn3(d2, n_s), start - lo, strip, axis=1)

    return _stack_strips(jax.lax.map(one, jnp.arange(height // strip)))

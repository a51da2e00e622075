"""Small layers and resampling ops shared by the models (NHWC throughout).

PyTorch's `interpolate(..., align_corners=True)` and `ReflectionPad2d` have no exact
counterpart in `jax.image`, so they are written here as separable interpolation matrices
(built with numpy at trace time, applied as matmuls, which XLA runs fast on every backend).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# PyTorch's bicubic convolution constant.
_CUBIC_A = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2.  (N,) -> (N, 4)."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_in: int, n_out: int, kind: str) -> np.ndarray:
    """(n_out, n_in) float64 matrix resampling one axis with align_corners=True."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out, dtype=np.float64) * scale
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    mat = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if kind == "bilinear":
        i1 = np.minimum(i0 + 1, n_in - 1)
        np.add.at(mat, (rows, i0), 1 - t)
        np.add.at(mat, (rows, i1), t)
    elif kind == "bicubic":
        w = _cubic_weights(t)
        for k, off in enumerate((-1, 0, 1, 2)):
            # Taps past the border reuse the edge pixel, as PyTorch clamps indices.
            np.add.at(mat, (rows, np.clip(i0 + off, 0, n_in - 1)), w[:, k])
    else:
        raise ValueError(f"unknown interpolation {kind!r}")
    return mat


def resize_align_corners(x: jnp.ndarray, size: tuple[int, int], kind: str) -> jnp.ndarray:
    """Resize like `F.interpolate(x, size, mode=kind, align_corners=True)`.

    Args:
      x: (B, H, W, C) float.
      size: output (H', W').
      kind: "bilinear" or "bicubic" (cubic A = -0.75, edge taps clamped).
    Returns:
      (B, H', W', C), same dtype as x.
    """
    mh = jnp.asarray(_interp_matrix(x.shape[1], size[0], kind), x.dtype)
    mw = jnp.asarray(_interp_matrix(x.shape[2], size[1], kind), x.dtype)
    x = jnp.einsum("oh,bhwc->bowc", mh, x, precision="highest")
    return jnp.einsum("pw,bowc->bopc", mw, x, precision="highest")


def upsample2x_bicubic(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, 2H, 2W, C), PyTorch bicubic with align_corners=True."""
    return resize_align_corners(x, (2 * x.shape[1], 2 * x.shape[2]), "bicubic")


def avg_pool2x(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, H/2, W/2, C) 2x2 mean (`F.avg_pool2d(x, 2, 2)`; odd edges dropped)."""
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def reflect_pad(x: jnp.ndarray, p: int) -> jnp.ndarray:
    """`nn.ReflectionPad2d(p)` on (B, H, W, C): mirror without repeating the edge."""
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


def group_norm(groups: int, name: str) -> nn.GroupNorm:
    """`nn.GroupNorm(groups, C)` with PyTorch's eps and two-pass variance."""
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5, use_fast_variance=False, name=name)


def instance_norm(x: jnp.ndarray) -> jnp.ndarray:
    """Affine-free `nn.InstanceNorm2d` (biased variance, eps 1e-5) on (B, H, W, C)."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
    return (x - mean) * jnp.reciprocal(jnp.sqrt(var + 1e-5))

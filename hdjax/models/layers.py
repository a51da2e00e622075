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
def _interp_taps(n_in: int, n_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each (taps, n_out), resampling one axis, align_corners=True."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out, dtype=np.float64) * scale
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    if kind == "bilinear":
        offsets, weights = (0, 1), np.stack([1 - t, t])
    elif kind == "bicubic":
        offsets, weights = (-1, 0, 1, 2), _cubic_weights(t).T
    else:
        raise ValueError(f"unknown interpolation {kind!r}")
    # Taps past the border reuse the edge pixel, as PyTorch clamps indices.
    index = np.stack([np.clip(i0 + off, 0, n_in - 1) for off in offsets])
    return index.astype(np.int32), weights.astype(np.float32)


def _resize_axis(x: jnp.ndarray, axis: int, n_out: int, kind: str) -> jnp.ndarray:
    index, weights = _interp_taps(x.shape[axis], n_out, kind)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = None
    # A few gathered taps per output, not a dense (n_out, n_in) matmul: at 512² x 256
    # channels the dense form cost ~50x the arithmetic (0.95 s per hourglass upsample).
    for idx, w in zip(index, weights, strict=True):
        term = jnp.take(x, jnp.asarray(idx), axis=axis) * jnp.asarray(w, x.dtype).reshape(shape)
        out = term if out is None else out + term
    return out


def resize_align_corners(x: jnp.ndarray, size: tuple[int, int], kind: str) -> jnp.ndarray:
    """Resize like `F.interpolate(x, size, mode=kind, align_corners=True)`.

    Args:
      x: (B, H, W, C) float.
      size: output (H', W').
      kind: "bilinear" or "bicubic" (cubic A = -0.75, edge taps clamped).
    Returns:
      (B, H', W', C), same dtype as x.
    """
    return _resize_axis(_resize_axis(x, 1, size[0], kind), 2, size[1], kind)


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


def _conv_params(module: nn.Module, k: int, cin: int, cout: int):
    """`kernel` (k, k, cin, cout) and `bias` (cout,), named and initialised as `nn.Conv`'s."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (k, k, cin, cout), jnp.float32)
    return kernel, module.param("bias", nn.initializers.zeros, (cout,), jnp.float32)


class ThinConv(nn.Module):
    """A stride-1 k x k convolution with few output channels (RGB heads), as one matmul.

    XLA's CPU convolution runs at a few GFLOP/s when the output has a handful of channels
    (the 7x7 64 -> 3 head of the normal nets took 1.3 s at 512², PyTorch 0.16 s). Here the
    matmul comes first (every tap's contribution at once, (B, H, W, k, k, F)) and the taps are
    then shift-added: 0.14 s. Same parameters and result as
    `nn.Conv(features, (k, k), padding="VALID")`.
    """

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, C) -> (B, H - k + 1, W - k + 1, features)."""
        k = self.kernel_size
        kernel, bias = _conv_params(self, k, x.shape[-1], self.features)
        h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
        per_tap = jnp.einsum("bhwc,ijco->bhwijo", x, kernel, precision="highest")
        y = sum(per_tap[:, dy : dy + h, dx : dx + w, dy, dx] for dy in range(k) for dx in range(k))
        return y + bias


class Im2colConv(nn.Module):
    """A stride-1 k x k VALID convolution as im2col + one matmul, for small feature maps.

    At 32² x 1024 channels (the normal nets' residual blocks, 18 convs) XLA's CPU convolution
    of a padded input took 0.40 s per conv, im2col + matmul 0.16 s (PyTorch: 0.11 s). The
    patch matrix is k²·C·H·W floats (37 MB there), so use it only on small maps. Same
    parameters and result as `nn.Conv(features, (k, k), padding="VALID")`.
    """

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, C) -> (B, H - k + 1, W - k + 1, features)."""
        k, cin = self.kernel_size, x.shape[-1]
        kernel, bias = _conv_params(self, k, cin, self.features)
        h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
        patches = jnp.concatenate(
            [x[:, dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)], axis=-1
        )
        y = jnp.dot(patches, kernel.reshape(k * k * cin, self.features), precision="highest")
        return y + bias

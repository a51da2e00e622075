"""Layers, initialisers and resampling ops shared by the models (NHWC throughout).

PyTorch's `interpolate(..., align_corners=True)` and `ReflectionPad2d` have no exact
counterpart in `jax.image`, so they are written here as separable interpolation taps (built
with numpy at trace time). `Numerics` carries the accelerator choices every module takes:
plain `nn.Conv` ("xla") or matmul kernels that XLA:CPU runs faster ("cpu"), how 1x1 convs are
differentiated, the computation dtype and the matmul precision. Parameters are float32 and
named alike in all.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CONV_IMPLS = ("xla", "cpu")
CONV_GRADS = ("xla", "matmul", "split")
DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = ("default", "high", "highest")

# The official `init_net`: Conv/Linear weights N(0, 0.02), biases 0; norm affines stay 1 / 0.
KERNEL_INIT = nn.initializers.normal(0.02)
BIAS_INIT = nn.initializers.zeros


@dataclasses.dataclass(frozen=True)
class Numerics:
    """How the layers compute (not what): nothing here changes a parameter.

    Attributes:
      conv_impl: "xla": `nn.Conv` everywhere (GPU/TPU); "cpu": the few convolutions XLA:CPU
        runs slowly become matmuls (`ThinConv`, `Im2colConv`), same parameters and result.
      conv_grad: how `conv` layers are differentiated: "xla": autodiff of XLA's conv;
        "matmul": 1x1 convs' gradients are matmuls (`PointwiseMatmulGrad`); "split": those,
        and stride-1 k x k convs' kernel gradients summed over small pieces (`SplitGrad`,
        what training on CPU takes). The forward pass is the same in all three.
      dtype: computation dtype (parameters stay float32).
      precision: matmul/conv precision; "highest" keeps float32 accuracy on GPU/TPU.
    """

    conv_impl: str = "xla"
    conv_grad: str = "xla"
    dtype: str = "float32"
    precision: str = "highest"

    def __post_init__(self):
        for field, allowed in (
            ("conv_impl", CONV_IMPLS),
            ("conv_grad", CONV_GRADS),
            ("dtype", DTYPES),
            ("precision", PRECISIONS),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field}={getattr(self, field)!r}: expected one of {allowed}")

    @property
    def jnp_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    def conv(self, features: int, kernel_size: int, name: str, **kw: Any) -> nn.Conv:
        """`nn.Conv` with the official init (unless ``kernel_init`` / ``bias_init`` are
        given), this dtype, precision and gradient."""
        if self.conv_grad != "xla":
            kw["conv_general_dilated_cls"] = {"matmul": PointwiseMatmulGrad, "split": SplitGrad}[
                self.conv_grad
            ]
        kw.setdefault("kernel_init", KERNEL_INIT)
        kw.setdefault("bias_init", BIAS_INIT)
        return nn.Conv(
            features,
            (kernel_size, kernel_size),
            dtype=self.jnp_dtype,
            precision=self.precision,
            name=name,
            **kw,
        )

    def dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(
            features,
            kernel_init=KERNEL_INIT,
            bias_init=BIAS_INIT,
            dtype=self.jnp_dtype,
            precision=self.precision,
            name=name,
        )

    def valid_conv(self, features: int, kernel_size: int, name: str, cpu_kernel: str) -> nn.Module:
        """A stride-1 VALID conv; on "cpu" the matmul kernel `cpu_kernel` ("thin" for few
        output channels, "im2col" for small maps)."""
        if self.conv_impl == "xla":
            return self.conv(features, kernel_size, name, padding="VALID")
        cls = {"thin": ThinConv, "im2col": Im2colConv}[cpu_kernel]
        return cls(features, kernel_size, self, name=name)

    def group_norm(self, groups: int, name: str) -> nn.GroupNorm:
        """`nn.GroupNorm(groups, C)` with PyTorch's eps and two-pass variance."""
        return nn.GroupNorm(
            num_groups=groups,
            epsilon=1e-5,
            use_fast_variance=False,
            dtype=self.jnp_dtype,
            name=name,
        )

    def batch_norm(self, train: bool, name: str | None) -> nn.BatchNorm:
        """`nn.BatchNorm2d` (eps 1e-5, momentum 0.1 == flax 0.9): the batch's statistics
        when ``train``, else the running ones."""
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.jnp_dtype,
            name=name,
        )

    def instance_norm(self, name: str) -> nn.InstanceNorm:
        """Affine-free `nn.InstanceNorm2d` (biased two-pass variance, eps 1e-5)."""
        return nn.InstanceNorm(
            epsilon=1e-5,
            use_scale=False,
            use_bias=False,
            use_fast_variance=False,
            dtype=self.jnp_dtype,
            name=name,
        )


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


@functools.lru_cache(maxsize=64)
def _transposed_taps(n_in: int, n_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The taps of `_interp_taps` seen from the input side: for each input index, the
    outputs that read it and with which weight, each (K, n_in), padded with weight 0."""
    index, weights = _interp_taps(n_in, n_out, kind)
    readers: list[list[tuple[int, float]]] = [[] for _ in range(n_in)]
    for idx, w in zip(index, weights, strict=True):
        for j, (i, wj) in enumerate(zip(idx, w, strict=True)):
            readers[i].append((j, wj))
    k = max(len(r) for r in readers)
    out_index = np.zeros((k, n_in), np.int32)
    out_weights = np.zeros((k, n_in), np.float32)
    for i, r in enumerate(readers):
        for t, (j, wj) in enumerate(r):
            out_index[t, i], out_weights[t, i] = j, wj
    return out_index, out_weights


def _sum_taps(x: jnp.ndarray, axis: int, index: np.ndarray, weights: np.ndarray) -> jnp.ndarray:
    """sum_t x[..., index[t, j], ...] * weights[t, j] along ``axis``."""
    shape = [1] * x.ndim
    shape[axis] = index.shape[1]
    out = None
    for idx, w in zip(index, weights, strict=True):
        term = jnp.take(x, jnp.asarray(idx), axis=axis) * jnp.asarray(w, x.dtype).reshape(shape)
        out = term if out is None else out + term
    return out


# A few gathered taps per output, not a dense (n_out, n_in) matmul, which would cost
# n_in / taps times the arithmetic. The gradient is gathered too (the outputs that read each
# input), because autodiff's scatter-add of the taps is ~10x slower than the forward on
# XLA:CPU and dominated the hourglass's backward pass.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _resize_axis(x: jnp.ndarray, axis: int, n_out: int, kind: str) -> jnp.ndarray:
    return _sum_taps(x, axis, *_interp_taps(x.shape[axis], n_out, kind))


def _resize_axis_fwd(x, axis, n_out, kind):
    # The residual only carries the input length, as a static shape.
    return _resize_axis(x, axis, n_out, kind), jnp.zeros((x.shape[axis], 0), x.dtype)


def _resize_axis_bwd(axis, n_out, kind, length, g):
    return (_sum_taps(g, axis, *_transposed_taps(length.shape[0], n_out, kind)),)


_resize_axis.defvjp(_resize_axis_fwd, _resize_axis_bwd)


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
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def reflect_pad(x: jnp.ndarray, p: int) -> jnp.ndarray:
    """`nn.ReflectionPad2d(p)` on (B, H, W, C): mirror without repeating the edge."""
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


def _conv_params(module: nn.Module, k: int, cin: int, cout: int):
    """`kernel` (k, k, cin, cout) and `bias` (cout,), named and initialised as `Numerics.conv`."""
    kernel = module.param("kernel", KERNEL_INIT, (k, k, cin, cout), jnp.float32)
    bias = module.param("bias", BIAS_INIT, (cout,), jnp.float32)
    dtype = module.numerics.jnp_dtype
    return kernel.astype(dtype), bias.astype(dtype)


class ThinConv(nn.Module):
    """A stride-1 k x k VALID convolution with few output channels (RGB heads), as one matmul.

    XLA:CPU's convolution is slow when the output has a handful of channels; here the matmul
    comes first (every tap's contribution at once, (B, H, W, k, k, F)) and the taps are then
    shift-added. Same parameters and result as `nn.Conv(features, (k, k), padding="VALID")`.
    """

    features: int
    kernel_size: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, C) -> (B, H - k + 1, W - k + 1, features)."""
        k = self.kernel_size
        kernel, bias = _conv_params(self, k, x.shape[-1], self.features)
        x = x.astype(kernel.dtype)
        h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
        per_tap = jnp.einsum("bhwc,ijco->bhwijo", x, kernel, precision=self.numerics.precision)
        y = sum(per_tap[:, dy : dy + h, dx : dx + w, dy, dx] for dy in range(k) for dx in range(k))
        return y + bias


class PointwiseConv(nn.Module):
    """A 1x1 convolution as a matmul over channels (XLA:CPU runs it up to 10x faster than
    its convolution, most for 1-channel outputs such as attention gates). Parameters as
    `nn.Conv`: `kernel` (1, 1, Cin, features), `bias` (features,), initialised by
    ``kernel_init`` / ``bias_init`` (default: the official `init_net`).
    (..., Cin) -> (..., features)."""

    features: int
    numerics: Numerics = Numerics()
    kernel_init: Any = KERNEL_INIT
    bias_init: Any = BIAS_INIT

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cin, dtype = x.shape[-1], self.numerics.jnp_dtype
        kernel = self.param("kernel", self.kernel_init, (1, 1, cin, self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        y = jnp.dot(x.astype(dtype), kernel[0, 0].astype(dtype), precision=self.numerics.precision)
        return y + bias.astype(dtype)


class Im2colConv(nn.Module):
    """A stride-1 k x k VALID convolution as im2col + one matmul, for small feature maps.

    XLA:CPU convolves wide, small maps (the normal nets' 1024-channel residual blocks) slower
    than one matmul over the patch matrix, which holds k²·C·H·W values: use it on small maps
    only. Same parameters and result as `nn.Conv(features, (k, k), padding="VALID")`.
    """

    features: int
    kernel_size: int = 3
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(B, H, W, C) -> (B, H - k + 1, W - k + 1, features)."""
        k, cin = self.kernel_size, x.shape[-1]
        kernel, bias = _conv_params(self, k, cin, self.features)
        x = x.astype(kernel.dtype)
        h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
        patches = jnp.concatenate(
            [x[:, dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)], axis=-1
        )
        y = jnp.dot(
            patches,
            kernel.reshape(k * k * cin, self.features),
            precision=self.numerics.precision,
        )
        return y + bias


def _conv_nhwc(x: jnp.ndarray, kernel: jnp.ndarray, pads: Any, precision: Any) -> jnp.ndarray:
    """A stride-1 NHWC/HWIO convolution."""
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision
    )


# XLA:CPU computes a 1x1 conv's weight gradient as a convolution over the whole image, 4-10x
# slower than the same contraction as one matmul (the hourglass's 256-channel 1x1 convs at
# 128²: 115 ms vs 26 ms; at 256²: 1.4 s vs 0.13 s); the input gradient is a matmul too.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, precision: Any) -> jnp.ndarray:
    return _conv_nhwc(x, kernel, "VALID", precision)


def _pointwise_conv_fwd(x, kernel, precision):
    return _pointwise_conv(x, kernel, precision), (x, kernel)


def _pointwise_conv_bwd(precision, residuals, g):
    x, kernel = residuals
    dx = jnp.einsum("bhwo,co->bhwc", g, kernel[0, 0], precision=precision)
    dkernel = jnp.einsum("bhwc,bhwo->co", x, g, precision=precision)
    return dx, dkernel[None, None]


_pointwise_conv.defvjp(_pointwise_conv_fwd, _pointwise_conv_bwd)


# XLA:CPU's kernel gradient of a k x k conv slows down with the size of its contraction
# (batch x rows x cols) far more than the arithmetic grows: the hourglass's 256->128 3x3 conv
# at 128² takes 90 ms for one sample (torch 53 ms) but 3.2 s for a batch of 8 (torch 0.5 s),
# and 1.2 s on one 512² map with 128->64 channels (torch 0.3 s). Summed over batch-1 pieces
# of about `PIECE_PIXELS` output pixels, the same gradient takes 1.1-1.8x torch's time, and
# the conv's forward + backward runs at 0.77-1.42x torch's speed (`python -m bench.kernels`). Maps
# of up to that many pixels in all keep XLA's own gradient, which the pieces' overhead would
# only slow down. (A `lax.scan` over the pieces is no option:
# XLA:CPU runs convolutions inside loops 50-70x slower.) The input gradient stays XLA's.
PIECE_PIXELS = 8192


def kernel_grad_in_pieces(
    x: jnp.ndarray, g: jnp.ndarray, kernel: jnp.ndarray, pads: Any, precision: Any, pixels: int
) -> jnp.ndarray:
    """The kernel gradient of `_conv_nhwc(x, kernel, pads)` for the cotangent g, as a sum over
    batch-1 pieces of about ``pixels`` output pixels (whole rows) each; XLA's own when g has
    no more than ``pixels`` pixels in all.

    x: (B, H, W, C); g: (B, H', W', O) -> (kh, kw, C, O).
    """
    b, h, w, _ = g.shape
    if b * h * w <= pixels:
        return jax.vjp(lambda k: _conv_nhwc(x, k, pads, precision), kernel)[1](g)[0]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    kh = kernel.shape[0]
    rows = max(1, min(h, pixels // w))
    total = None
    for i in range(b):
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            piece = xp[i : i + 1, r0 : r1 + kh - 1]
            conv = functools.partial(_conv_nhwc, piece, pads="VALID", precision=precision)
            d = jax.vjp(conv, kernel)[1](g[i : i + 1, r0:r1])[0]
            total = d if total is None else total + d
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _piecewise_grad_conv(x: jnp.ndarray, kernel: jnp.ndarray, pads: tuple, precision: Any):
    return _conv_nhwc(x, kernel, pads, precision)


def _piecewise_grad_conv_fwd(x, kernel, pads, precision):
    return _piecewise_grad_conv(x, kernel, pads, precision), (x, kernel)


def _piecewise_grad_conv_bwd(pads, precision, residuals, g):
    x, kernel = residuals
    dx = jax.vjp(lambda x: _conv_nhwc(x, kernel, pads, precision), x)[1](g)[0]
    return dx, kernel_grad_in_pieces(x, g, kernel, pads, precision, PIECE_PIXELS)


_piecewise_grad_conv.defvjp(_piecewise_grad_conv_fwd, _piecewise_grad_conv_bwd)


class PointwiseMatmulGrad:
    """`lax.conv_general_dilated` for `nn.Conv(conv_general_dilated_cls=...)`: the same
    convolution, with matmul gradients when it is a 1x1, stride-1, ungrouped NHWC conv;
    any other conv is lax's own (`SplitGrad` also treats k x k ones)."""

    split_kernel_grad = False

    def __call__(
        self,
        lhs: jnp.ndarray,
        rhs: jnp.ndarray,
        window_strides: tuple[int, ...],
        padding: Any,
        **kw: Any,
    ) -> jnp.ndarray:
        nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
        plain = (
            lhs.ndim == 4
            and tuple(window_strides) == (1, 1)
            and tuple(kw.get("lhs_dilation") or (1, 1)) == (1, 1)
            and tuple(kw.get("rhs_dilation") or (1, 1)) == (1, 1)
            and kw.get("feature_group_count", 1) == 1
            and kw.get("batch_group_count", 1) == 1
            and kw.get("dimension_numbers") == nhwc
        )
        if not plain:
            return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kw)
        pads = padding
        if isinstance(padding, str):
            pads = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
        pads = tuple(tuple(int(p) for p in pair) for pair in pads)
        if rhs.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
            return _pointwise_conv(lhs, rhs, kw.get("precision"))
        if self.split_kernel_grad and min(min(pair) for pair in pads) >= 0:
            return _piecewise_grad_conv(lhs, rhs, pads, kw.get("precision"))
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kw)


class SplitGrad(PointwiseMatmulGrad):
    """`PointwiseMatmulGrad`, and stride-1 k x k convs take their kernel gradient in pieces
    (`kernel_grad_in_pieces`): the forward and input gradient are XLA's."""

    split_kernel_grad = True

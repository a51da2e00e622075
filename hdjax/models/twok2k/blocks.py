"""2K2K's building blocks (NHWC), named as the official modules so that weights map one to
one (`twok2k_official`). Convolutions take the official `weight_init_basic`
(N(0, sqrt(2 / (k k C_out)))) and PyTorch's default bias init; how they compute (dtype,
precision) comes from `Numerics`. 1x1 convolutions are matmuls (`layers.PointwiseConv`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hdjax.models.layers import Numerics, PointwiseConv


def _torch_conv_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


def _kernel_init(k: int, features: int):
    return nn.initializers.normal(math.sqrt(2.0 / (k * k * features)))


def conv(numerics: Numerics, features: int, k: int, cin: int, name: str | None) -> nn.Module:
    """Conv k x k, stride 1, 'same' zero padding, bias, with the official init; a 1x1 is a
    matmul (`PointwiseConv`), a k x k `numerics.conv`."""
    kernel_init, bias_init = _kernel_init(k, features), _torch_conv_bias_init(cin * k * k)
    if k == 1:
        return PointwiseConv(features, numerics, kernel_init, bias_init, name=name)
    return numerics.conv(
        features, k, name, padding="SAME", kernel_init=kernel_init, bias_init=bias_init
    )


class ConvBlock(nn.Module):
    """[Conv3x3 -> BN -> ReLU] x 2.  (B, H, W, Cin) -> (B, H, W, features)."""

    features: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        nx = self.numerics
        for i in range(2):
            x = conv(nx, self.features, 3, x.shape[-1], f"conv{i}")(x)
            x = nn.relu(nx.batch_norm(train, f"bn{i}")(x))
        return x


class SingleConv(nn.Module):
    """Conv3x3 -> BN -> ReLU.  (B, H, W, Cin) -> (B, H, W, features)."""

    features: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        nx = self.numerics
        x = conv(nx, self.features, 3, x.shape[-1], "conv")(x)
        return nn.relu(nx.batch_norm(train, "bn")(x))


# A 3x3 tap over a nearest-x2 upsampled map reads the source row a-1, a, a or a, a, a+1
# depending on the output row's parity: per parity, which of the 3 kernel rows fold onto
# source offsets (-1, 0) or (0, +1).
_PHASE_TAPS = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}
_PHASE_PAD = {0: (1, 0), 1: (0, 1)}


class UpsampleConv3x3(nn.Module):
    """Conv3x3 ('same', bias) of the nearest x2 upsampled input, without upsampling first.

    (B, H, W, Cin) -> (B, 2H, 2W, features). Each of the four output parities is a 2x2
    convolution of the input with the 3x3 kernel's taps folded (2.25x fewer multiply-adds
    than convolving the upsampled map). Parameters `kernel` (3, 3, Cin, features) and `bias`
    are those of the plain `nn.Conv` it replaces.
    """

    features: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cin, k, dtype = x.shape[-1], 3, self.numerics.jnp_dtype
        kernel = self.param(
            "kernel", _kernel_init(k, self.features), (k, k, cin, self.features), jnp.float32
        )
        bias = self.param("bias", _torch_conv_bias_init(cin * k * k), (self.features,), jnp.float32)
        x = x.astype(dtype)
        rows = []
        for p in (0, 1):
            kp = jnp.stack([sum(kernel[i] for i in taps) for taps in _PHASE_TAPS[p]])
            cols = []
            for q in (0, 1):
                kpq = jnp.stack([sum(kp[:, j] for j in taps) for taps in _PHASE_TAPS[q]], 1)
                y = jax.lax.conv_general_dilated(
                    x,
                    kpq.astype(dtype),
                    (1, 1),
                    (_PHASE_PAD[p], _PHASE_PAD[q]),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    precision=self.numerics.precision,
                )
                cols.append(y)
            rows.append(jnp.stack(cols, 3))  # (B, H, W, 2, F)
        y = jnp.stack(rows, 2)  # (B, H, 2, W, 2, F)
        b, h, _, w = y.shape[:4]
        return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(dtype)


class UpConv(nn.Module):
    """Nearest x2 -> Conv3x3 -> BN -> ReLU.  (B, H, W, Cin) -> (B, 2H, 2W, features)."""

    features: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = UpsampleConv3x3(self.features, self.numerics, name="conv")(x)
        return nn.relu(self.numerics.batch_norm(train, "bn")(x))


class AttentionBlock(nn.Module):
    """Additive attention gate: x * sigmoid(BN(conv(relu(BN(conv g) + BN(conv x))))).

    g (B, H, W, Cg), x (B, H, W, Cx) -> (B, H, W, Cx); the gate has one channel and its own
    1-channel BatchNorm before the sigmoid.
    """

    inter: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, g: jnp.ndarray, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        nx = self.numerics
        g1 = nx.batch_norm(train, "g_bn")(conv(nx, self.inter, 1, g.shape[-1], "g_conv")(g))
        x1 = nx.batch_norm(train, "x_bn")(conv(nx, self.inter, 1, x.shape[-1], "x_conv")(x))
        psi = conv(nx, 1, 1, self.inter, "psi_conv")(nn.relu(g1 + x1))
        return x.astype(nx.jnp_dtype) * nn.sigmoid(nx.batch_norm(train, "psi_bn")(psi))


class ConvBlock1x1(nn.Module):
    """Conv1x1 -> ReLU (no BN).  (B, H, W, Cin) -> (B, H, W, features)."""

    features: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.relu(conv(self.numerics, self.features, 1, x.shape[-1], "conv")(x))


def max_pool2x(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (2, 2), strides=(2, 2))

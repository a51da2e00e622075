"""pix2pixHD global generator (the PIFuHD front/back normal nets), in NHWC."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hdjax.models.layers import Numerics, reflect_pad


class ConvTranspose3x3(nn.Module):
    """`nn.ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`: (B,H,W,C) -> (B,2H,2W,F).

    Written as a stride-1 conv over the 2x-dilated input, padded (1, 2); `kernel` is the
    equivalent forward-conv kernel (HWIO), i.e. the PyTorch weight flipped and transposed.
    """

    features: int
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = self.numerics.conv(
            self.features, 3, "conv", padding=((1, 2), (1, 2)), input_dilation=2
        )
        return conv(x)


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x); (B, H, W, C) -> (B, H, W, C)."""

    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c, nx = x.shape[-1], self.numerics
        y = nx.valid_conv(c, 3, "conv0", cpu_kernel="im2col")(reflect_pad(x, 1))
        y = jax.nn.relu(nx.instance_norm("norm0")(y))
        y = nx.valid_conv(c, 3, "conv1", cpu_kernel="im2col")(reflect_pad(y, 1))
        return x + nx.instance_norm("norm1")(y)


class GlobalGenerator(nn.Module):
    """pix2pixHD `GlobalGenerator` with instance norm and a tanh output.

    (B, H, W, C_in) in [-1, 1] -> (B, H, W, out_ch) in [-1, 1]; H, W divisible by 2^n_down.
    Official normal nets: ngf 64, n_down 4, n_blocks 9, out_ch 3.
    """

    out_ch: int = 3
    ngf: int = 64
    n_down: int = 4
    n_blocks: int = 9
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        nx = self.numerics

        def norm_relu(y: jnp.ndarray, name: str) -> jnp.ndarray:
            return jax.nn.relu(nx.instance_norm(name)(y))

        x = nx.conv(self.ngf, 7, "conv_in", padding="VALID")(reflect_pad(x, 3))
        x = norm_relu(x, "norm_in")
        for i in range(self.n_down):
            x = nx.conv(self.ngf * 2 ** (i + 1), 3, f"down{i}", strides=2, padding=1)(x)
            x = norm_relu(x, f"norm_down{i}")
        for i in range(self.n_blocks):
            x = ResnetBlock(nx, name=f"res{i}")(x)
        for i in range(self.n_down):
            x = ConvTranspose3x3(self.ngf * 2 ** (self.n_down - i - 1), nx, name=f"up{i}")(x)
            x = norm_relu(x, f"norm_up{i}")
        x = nx.valid_conv(self.out_ch, 7, "conv_out", cpu_kernel="thin")(reflect_pad(x, 3))
        return jnp.tanh(x)

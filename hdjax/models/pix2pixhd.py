"""pix2pixHD global generator (the PIFuHD front/back normal nets), in NHWC."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hdjax.models.layers import Im2colConv, ThinConv, instance_norm, reflect_pad


class ConvTranspose3x3(nn.Module):
    """`nn.ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`: (B,H,W,C) -> (B,2H,2W,F).

    Written as a stride-1 conv over the 2x-dilated input, padded (1, 2); `kernel` is the
    equivalent forward-conv kernel (HWIO), i.e. the PyTorch weight flipped and transposed.
    """

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.Conv(
            self.features, (3, 3), padding=((1, 2), (1, 2)), input_dilation=2, name="conv"
        )(x)


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x); (B, H, W, C) -> (B, H, W, C)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = x.shape[-1]
        y = Im2colConv(c, name="conv0")(reflect_pad(x, 1))
        y = jax.nn.relu(instance_norm(y))
        y = Im2colConv(c, name="conv1")(reflect_pad(y, 1))
        return x + instance_norm(y)


class GlobalGenerator(nn.Module):
    """pix2pixHD `GlobalGenerator` with instance norm and a tanh output.

    (B, H, W, C_in) in [-1, 1] -> (B, H, W, out_ch) in [-1, 1]; H, W divisible by 2^n_down.
    Official normal nets: ngf 64, n_down 4, n_blocks 9, out_ch 3.
    """

    out_ch: int = 3
    ngf: int = 64
    n_down: int = 4
    n_blocks: int = 9

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.Conv(self.ngf, (7, 7), padding="VALID", name="conv_in")(reflect_pad(x, 3))
        x = jax.nn.relu(instance_norm(x))
        for i in range(self.n_down):
            x = nn.Conv(self.ngf * 2 ** (i + 1), (3, 3), strides=2, padding=1, name=f"down{i}")(x)
            x = jax.nn.relu(instance_norm(x))
        for i in range(self.n_blocks):
            x = ResnetBlock(name=f"res{i}")(x)
        for i in range(self.n_down):
            x = ConvTranspose3x3(self.ngf * 2 ** (self.n_down - i - 1), name=f"up{i}")(x)
            x = jax.nn.relu(instance_norm(x))
        x = ThinConv(self.out_ch, 7, name="conv_out")(reflect_pad(x, 3))
        return jnp.tanh(x)

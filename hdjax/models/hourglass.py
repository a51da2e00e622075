"""Stacked hourglass image filter of PIFu/PIFuHD (`HGFilter`), in NHWC.

Module and parameter names follow the official state dict (`conv1`, `bn1`, `m0/b1_2`, ...), so
the checkpoint reader maps keys one to one; only layouts change at that boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hdjax.models.layers import Numerics, avg_pool2x, upsample2x_bicubic

DOWN_TYPES = ("ave_pool", "no_down")


class ConvBlock(nn.Module):
    """Pre-activation three-branch residual block.

    (B, H, W, C_in) -> (B, H, W, features): three 3x3 convs of features/2, /4, /4 channels,
    concatenated, plus the input (projected by GN-ReLU-1x1 when C_in != features).
    """

    features: int
    groups: int = 32
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        f, nx = self.features, self.numerics

        def branch(y: jnp.ndarray, ch: int, i: int) -> jnp.ndarray:
            y = jax.nn.relu(nx.group_norm(self.groups, f"bn{i}")(y))
            return nx.conv(ch, 3, f"conv{i}", padding=1, use_bias=False)(y)

        out1 = branch(x, f // 2, 1)
        out2 = branch(out1, f // 4, 2)
        out3 = branch(out2, f // 4, 3)
        residual = x
        if x.shape[-1] != f:
            residual = jax.nn.relu(nx.group_norm(self.groups, "bn4")(x))
            residual = nx.conv(f, 1, "downsample", use_bias=False)(residual)
        return jnp.concatenate([out1, out2, out3], axis=-1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass: (B, H, W, C) -> (B, H, W, C), H and W divisible by 2^depth."""

    depth: int
    features: int = 256
    groups: int = 32
    numerics: Numerics = Numerics()

    def _block(self, name: str) -> ConvBlock:
        return ConvBlock(self.features, self.groups, self.numerics, name=name)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self._level(self.depth, x)

    def _level(self, level: int, x: jnp.ndarray) -> jnp.ndarray:
        up = self._block(f"b1_{level}")(x)
        low = self._block(f"b2_{level}")(avg_pool2x(x))
        if level > 1:
            low = self._level(level - 1, low)
        else:
            low = self._block(f"b2_plus_{level}")(low)
        low = self._block(f"b3_{level}")(low)
        return up + upsample2x_bicubic(low)


class HGFilter(nn.Module):
    """PIFu's stacked-hourglass image encoder.

    Attributes:
      num_stack: hourglass stacks; every stack's output is returned (intermediate supervision).
      depth: hourglass depth.
      last_ch: output channels per stack.
      down_type: "ave_pool" (coarse PIFuHD: H/4 output) or "no_down" (fine: H/2 output).
      width: hourglass width (256 in the official models); the stem uses width/4, /2, /2, 1.
      groups: GroupNorm groups.
      numerics: conv implementation, dtype and precision.
    """

    num_stack: int
    depth: int
    last_ch: int
    down_type: str = "ave_pool"
    width: int = 256
    groups: int = 32
    numerics: Numerics = Numerics()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[Sequence[jnp.ndarray], jnp.ndarray]:
        """(B, H, W, C_in) -> ([num_stack x (B, h, w, last_ch)], normx (B, h, w, width/2))."""
        w, g, nx = self.width, self.groups, self.numerics
        if self.down_type not in DOWN_TYPES:
            raise ValueError(f"unsupported down_type {self.down_type!r}")
        x = nx.conv(w // 4, 7, "conv1", strides=2, padding=3)(x)
        x = jax.nn.relu(nx.group_norm(g, "bn1")(x))
        x = ConvBlock(w // 2, g, nx, name="conv2")(x)
        if self.down_type == "ave_pool":
            x = avg_pool2x(x)
        normx = x
        x = ConvBlock(w // 2, g, nx, name="conv3")(x)
        previous = ConvBlock(w, g, nx, name="conv4")(x)

        outputs = []
        for i in range(self.num_stack):
            ll = HourGlass(self.depth, w, g, nx, name=f"m{i}")(previous)
            ll = ConvBlock(w, g, nx, name=f"top_m_{i}")(ll)
            ll = nx.conv(w, 1, f"conv_last{i}")(ll)
            ll = jax.nn.relu(nx.group_norm(g, f"bn_end{i}")(ll))
            out = nx.conv(self.last_ch, 1, f"l{i}")(ll)
            outputs.append(out)
            if i < self.num_stack - 1:
                previous = previous + nx.conv(w, 1, f"bl{i}")(ll) + nx.conv(w, 1, f"al{i}")(out)
        return outputs, normx

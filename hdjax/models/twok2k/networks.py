"""2K2K's networks: `ATUNetSmall` (the six normal nets), `ATUNetME` (dual-encoder
low-resolution depth), `Refine2048` (the three x2 depth blocks), gathered in `TwoK2K` under
the official attribute names so that weights map one to one (`twok2k_official`).

`Numerics` sets how they compute (dtype, precision); parameters are float32 and so are
`TwoK2K`'s outputs, whatever the computation dtype.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hdjax import configlib
from hdjax.models.layers import Numerics
from hdjax.models.twok2k.blocks import (
    AttentionBlock,
    ConvBlock,
    ConvBlock1x1,
    SingleConv,
    UpConv,
    conv,
    max_pool2x,
)
from hdjax.models.twok2k.canvas import PART_NETS


class ATUNetSmall(nn.Module):
    """Attention U-Net, 3 poolings (`ATUNet_small`).

    (B, H, W, Cin) -> (B, H, W, out_ch), H and W divisible by 8. The head is 1x1 + ReLU, so
    the normals (front ch 0-2, back 3-5, encoded (n + 1) / 2) are >= 0. Level widths
    ``width`` x (1, 2, 4, 8) (official 64).
    """

    out_ch: int = 6
    numerics: Numerics = Numerics()
    width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        nx, w = self.numerics, self.width
        x1 = ConvBlock(w, nx, name="Conv1")(x, train)
        x2 = ConvBlock(2 * w, nx, name="Conv2")(max_pool2x(x1), train)
        x3 = ConvBlock(4 * w, nx, name="Conv3")(max_pool2x(x2), train)
        d = ConvBlock(8 * w, nx, name="Conv4")(max_pool2x(x3), train)
        for level, skip, width in ((4, x3, 4 * w), (3, x2, 2 * w), (2, x1, w)):
            d = UpConv(width, nx, name=f"Up{level}")(d, train)
            gated = AttentionBlock(width // 2, nx, name=f"Att{level}")(d, skip, train)
            d = ConvBlock(width, nx, name=f"Up_conv{level}")(jnp.concatenate([gated, d], -1), train)
        return ConvBlock1x1(self.out_ch, nx, name="Conv_1x1")(d)


class ATUNetME(nn.Module):
    """Dual-encoder attention U-Net (`ATUNetME`, the low-resolution depth net).

    x (B, H, W, 3) image, y (B, H, W, 6) normals, H and W divisible by 16 ->
    (B, H, W, out_ch) raw (no activation): front depth, back depth, mask logit. Encoder
    widths ``width`` x (1/2, 1, 2, 4, 8) (official 64).
    """

    out_ch: int = 3
    numerics: Numerics = Numerics()
    width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, y: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        nx, w = self.numerics, self.width
        skips = []
        for branch, z in ((1, x), (2, y)):
            feats = []
            for level, width in enumerate((w // 2, w, 2 * w, 4 * w, 8 * w), start=1):
                if level > 1:
                    z = max_pool2x(z)
                z = ConvBlock(width, nx, name=f"Conv{level}_{branch}")(z, train)
                feats.append(z)
            skips.append(feats)
        d = jnp.concatenate([skips[0][4], skips[1][4]], -1)
        for level, width in ((5, 8 * w), (4, 4 * w), (3, 2 * w), (2, w)):
            d = UpConv(width, nx, name=f"Up{level}")(d, train)
            skip = jnp.concatenate([skips[0][level - 2], skips[1][level - 2]], -1)
            gated = AttentionBlock(width // 2, nx, name=f"Att{level}")(d, skip, train)
            d = ConvBlock(width, nx, name=f"Up_conv{level}")(jnp.concatenate([gated, d], -1), train)
        return conv(nx, self.out_ch, 1, w, "Conv_1x1")(d)


class Refine2048(nn.Module):
    """The high-resolution depth net (`Refine_2048`) without its warp-back (done by
    `blend_part_normals`): three blocks, each up_conv(depth) ++ single_conv(normal) ->
    conv_block -> 1x1 (+ReLU, but plain in the last block).

    `__call__(d, n1, n2, n)`: d (B, S, S, 2) low-res depth; n1 (B, 2S, 2S, 6),
    n2 (B, 4S, 4S, 6), n (B, 8S, 8S, 6) merged normals -> (B, 8S, 8S, 3) raw.
    `stage(k, d_prev, n_k)` runs block k alone (what the strip-wise forward uses). Widths
    ``width`` / 2 per branch, ``width`` merged (official 64).
    """

    numerics: Numerics = Numerics()
    width: int = 64

    def setup(self):
        nx, w = self.numerics, self.width
        for k in (1, 2, 3):
            setattr(self, f"depth{k}", UpConv(w // 2, nx))
            setattr(self, f"normal{k}", SingleConv(w // 2, nx))
            setattr(self, f"merge{k}_1", ConvBlock(w, nx))
        self.merge1_2 = ConvBlock1x1(w, nx)
        self.merge2_2 = ConvBlock1x1(w, nx)
        self.merge3_2 = conv(nx, 3, 1, w, None)

    def stage(self, k: int, d_prev: jnp.ndarray, n_k: jnp.ndarray, train: bool = False):
        """Block k: d_prev (B, H/2, W/2, C), n_k (B, H, W, 6) -> (B, H, W, width or 3)."""
        d = getattr(self, f"depth{k}")(d_prev, train)
        m = jnp.concatenate([d, getattr(self, f"normal{k}")(n_k, train)], -1)
        m = getattr(self, f"merge{k}_1")(m, train)
        return getattr(self, f"merge{k}_2")(m)

    def __call__(self, d, n1, n2, n, train: bool = False) -> jnp.ndarray:
        for k, nk in ((1, n1), (2, n2), (3, n)):
            d = self.stage(k, d, nk, train)
        return d


def _float32(tree):
    """The networks' outputs in float32 (a no-op when they computed in float32)."""
    return jax.tree.map(lambda a: a.astype(jnp.float32), tree)


class TwoK2K(nn.Module):
    """All phase-2 networks under their official names (no computation of its own but the
    `init` pass; `twok2k_forward` runs the model).

    `__call__(crops, img256, d_fb, n1, n2, n)` touches every network once (for `init`):
    crops maps net name -> (N, h, w, 6); img256 (B, 256, 256, 3); d_fb (B, S, S, 2); n1, n2, n
    the merged normals at 2S, 4S, 8S. ``numerics``: dtype and precision of the computation
    (the methods return float32); ``width``: the networks' base width (official 64; smaller
    for CPU-sized training runs).
    """

    numerics: Numerics = Numerics()
    width: int = 64

    def setup(self):
        nx, w = self.numerics, self.width
        for name in PART_NETS:
            setattr(self, f"img2normal_{name}", ATUNetSmall(6, nx, w))
        self.img2normal_down = ATUNetSmall(6, nx, w)
        self.ImgNorm_to_Dep = ATUNetME(3, nx, w)
        self.refine = Refine2048(nx, w)

    def low_res(self, img256: jnp.ndarray, train: bool = False):
        """(B, S, S, 3) -> down normals (B, S, S, 6), raw depth (B, S, S, 3); S = canvas / 8
        (256 official)."""
        d_n = self.img2normal_down(img256, train)
        return _float32((d_n, self.ImgNorm_to_Dep(img256, d_n, train)))

    def part(self, name: str, crops: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Part net `name`: (N, h, w, 6) [RGB crop, low-res front normal crop] -> (N, h, w, 6)."""
        return _float32(getattr(self, f"img2normal_{name}")(crops, train))

    def refine_stage(self, k: int, d_prev, n_k, train: bool = False) -> jnp.ndarray:
        return _float32(self.refine.stage(k, d_prev, n_k, train))

    def refine_all(self, d, n1, n2, n, train: bool = False) -> jnp.ndarray:
        """The three refiner blocks at once (training): see `Refine2048`."""
        return _float32(self.refine(d, n1, n2, n, train))

    def __call__(self, crops, img256, d_fb, n1, n2, n, train: bool = False):
        out = {name: self.part(name, crops[name], train) for name in PART_NETS}
        out["low_res"] = self.low_res(img256, train)
        out["refine"] = self.refine_all(d_fb, n1, n2, n, train)
        return out


def init_variables(key: jax.Array, numerics: Numerics | None = None, width: int = 64) -> dict:
    """Freshly initialised {'params', 'batch_stats'} of `TwoK2K` (the official init; float32
    whatever ``numerics``, None: the default `Numerics`)."""
    crops = {name: jnp.zeros((1, 16, 16, 6)) for name in PART_NETS}
    z = jnp.zeros
    return TwoK2K(numerics or Numerics(), width).init(
        key,
        crops,
        z((1, 16, 16, 3)),
        z((1, 2, 2, 2)),
        z((1, 4, 4, 6)),
        z((1, 8, 8, 6)),
        z((1, 16, 16, 6)),
    )


def numerics_from_config(cfg: ml_collections.ConfigDict, path: str = "model.numerics") -> Numerics:
    """`Numerics` of the 2K2K config section ``cfg`` (``model.numerics``: dtype, precision;
    the 1x1 convs are matmuls on every backend, so no conv_impl)."""
    return configlib.build(Numerics, cfg, path)

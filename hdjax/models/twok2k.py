"""2K2K (Han et al., CVPR 2023) networks and the phase-2 forward, NHWC.

Networks: `ATUNetSmall` (the six normal nets), `ATUNetME` (dual-encoder low-resolution
depth), `Refine2048` (the three x2 depth blocks), gathered in `TwoK2K` under the official
attribute names so that weights map one to one (`twok2k_official`).

The forward (`twok2k_forward`) reproduces the official phase-2 numbers without its twelve
full 2048^2 frames:
  * part crops: the affine grid is evaluated only on each part's centre-crop window of the
    canonical frame (the official code warps the whole 2048^2 frame, then crops);
  * blending weights: the ones map is computed, blurred and warped on that window only (the
    blur of the (h-16, w-16) window never leaves the h x w crop);
  * warp back: each part is sampled only on the image pixels its window can reach (a box
    computed on the host from theta, `warp_boxes`), and accumulated into one 2048^2 sum;
  * the 1024^2 and 2048^2 refiner blocks run together in row strips with a halo, so no
    64-channel map of either exists in full.
Sampling follows PyTorch's `affine_grid` + `grid_sample` (align_corners=False, bilinear,
zeros) down to the float32 operation order, so sample positions agree bit for bit.

Shapes: image (B, 2048, 2048, 3) in [-1, 1]; theta (B, 12, 2, 3) canonical -> image in
normalised coordinates (the official `init_affine`, i.e. what `affine_grid` receives).
Other canvases (a multiple of 128, e.g. 256² for CPU-sized training) scale the part crops,
the blur and the low-resolution branch (`geometry`); the networks take a base width.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hdjax.errors import HdjaxError

CANVAS = 2048
LOW_RES = CANVAS // 8
N_PARTS = 12
# Network -> (crop (h, w) in the canonical frame, part indices it serves), official order.
PART_NETS: dict[str, tuple[tuple[int, int], tuple[int, ...]]] = {
    "face": ((368, 320), (0,)),
    "upper": ((528, 336), (1,)),
    "arm": ((352, 224), (2, 3, 4, 5)),
    "leg": ((272, 256), (6, 7, 8, 9)),
    "shoe": ((176, 128), (10, 11)),
}
PART_CROP: tuple[tuple[int, int], ...] = tuple(
    crop for crop, parts in PART_NETS.values() for _ in parts
)
# The official crops the ones map to (h - 15, w - 15), which its integer halving makes
# (h - 16, w - 16): an 8-pixel frame of the crop window is zero before the blur.
BLUR_FRAME = 8
BLUR_SIGMA = 5.0
BLUR_TAPS = 15
# Row strips of the 1024^2 and 2048^2 refiner blocks: the halo covers their 3-pixel reach.
STRIP_ROWS = 256
STRIP_HALO = 4
# Warp-back boxes are rounded up to this many pixels, so nearby poses share a compilation.
BOX_QUANTUM = 64
BOX_MARGIN = 2


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The sizes of the forward for one canvas (hashable: a static argument of the jit).

    canvas: image side (2048 official); crops: per `PART_NETS` entry, the (h, w) centre crop
    of the canonical frame; blur_frame, blur_sigma, blur_taps: the blending-weight blur.
    """

    canvas: int = CANVAS
    crops: tuple[tuple[int, int], ...] = tuple(crop for crop, _ in PART_NETS.values())
    blur_frame: int = BLUR_FRAME
    blur_sigma: float = BLUR_SIGMA
    blur_taps: int = BLUR_TAPS

    @property
    def low_res(self) -> int:
        return self.canvas // 8

    @property
    def depth_gain(self) -> float:
        """How much the networks' depth is stretched about the subject centre (D = 2): the
        records' D = d / 512 spans 8x less on a 256² canvas than at 2048² (d scales with
        the focal length), so smaller canvases train on the official range (`network_depth`)."""
        return CANVAS / self.canvas

    @property
    def part_crop(self) -> tuple[tuple[int, int], ...]:
        """The (h, w) crop of each of the 12 parts."""
        return tuple(
            crop
            for crop, (_, parts) in zip(self.crops, PART_NETS.values(), strict=True)
            for _ in parts
        )

    def net_crops(self) -> dict[str, tuple[tuple[int, int], tuple[int, ...]]]:
        """`PART_NETS` with this geometry's crops."""
        return {
            name: (crop, parts)
            for crop, (name, (_, parts)) in zip(self.crops, PART_NETS.items(), strict=True)
        }


OFFICIAL = Geometry()
DEPTH_CENTRE = 2.0  # D of the subject centre (ray distance = camera distance)


def network_depth(depth, geom: Geometry):
    """Depth of the canvas's own camera (D = d / 512, background 0) -> the networks' units:
    stretched by `Geometry.depth_gain` about `DEPTH_CENTRE` (identity at 2048²)."""
    if geom.depth_gain == 1:
        return depth
    return jnp.where(depth > 0, (depth - DEPTH_CENTRE) * geom.depth_gain + DEPTH_CENTRE, 0.0)


def native_depth(depth, geom: Geometry):
    """Inverse of `network_depth` (on the subject's pixels; callers mask the rest)."""
    if geom.depth_gain == 1:
        return depth
    return (depth - DEPTH_CENTRE) / geom.depth_gain + DEPTH_CENTRE


def check_config(cfg) -> None:
    """Raises `HdjaxError` for a canvas the part crops cannot scale to."""
    geometry(cfg.model.canvas)


def geometry(canvas: int) -> Geometry:
    """The official geometry scaled to a ``canvas``² image (a multiple of 128, for the
    low-resolution net's four poolings): crops rounded to multiples of 8 (the part nets'
    three poolings), the blur's frame, sigma and reach scaled alike. 2048: `OFFICIAL`."""
    if canvas == CANVAS:
        return OFFICIAL
    if canvas < 128 or canvas % 128:
        raise HdjaxError(f"2K2K canvas must be a multiple of 128, got {canvas}")
    s = canvas / CANVAS

    def side(n: int) -> int:
        return max(16, 8 * round(n * s / 8))

    return Geometry(
        canvas=canvas,
        crops=tuple((side(h), side(w)) for (h, w) in OFFICIAL.crops),
        blur_frame=max(1, round(BLUR_FRAME * s)),
        blur_sigma=BLUR_SIGMA * s,
        blur_taps=2 * max(1, round((BLUR_TAPS - 1) / 2 * s)) + 1,
    )


# ------------------------------------------------------------------------------------------
# Building blocks


def _torch_conv_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


class Conv1x1(nn.Module):
    """A 1x1 convolution as a matmul over channels (XLA:CPU runs it up to 10x faster than
    its convolution, most for the 1-channel attention gates). Parameters as `nn.Conv`:
    `kernel` (1, 1, Cin, features), `bias` (features,).  (..., Cin) -> (..., features)."""

    features: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.normal(math.sqrt(2.0 / self.features)),
            (1, 1, cin, self.features),
        )
        bias = self.param("bias", _torch_conv_bias_init(cin), (self.features,))
        return jnp.dot(x, kernel[0, 0], precision=self.precision) + bias


def _conv(features: int, k: int, cin: int, name: str, precision: str) -> nn.Module:
    """Conv k x k, stride 1, 'same' zero padding, bias; the official `weight_init_basic`
    (N(0, sqrt(2 / (k k C_out)))) and PyTorch's default bias init."""
    if k == 1:
        return Conv1x1(features, precision, name=name)
    return nn.Conv(
        features,
        (k, k),
        padding="SAME",
        kernel_init=nn.initializers.normal(math.sqrt(2.0 / (k * k * features))),
        bias_init=_torch_conv_bias_init(cin * k * k),
        precision=precision,
        name=name,
    )


def _bn(train: bool, name: str) -> nn.BatchNorm:
    """`nn.BatchNorm2d` (eps 1e-5, momentum 0.1 == flax 0.9); running stats unless train."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ConvBlock(nn.Module):
    """[Conv3x3 -> BN -> ReLU] x 2.  (B, H, W, Cin) -> (B, H, W, features)."""

    features: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for i in range(2):
            x = _conv(self.features, 3, x.shape[-1], f"conv{i}", self.precision)(x)
            x = nn.relu(_bn(train, f"bn{i}")(x))
        return x


class SingleConv(nn.Module):
    """Conv3x3 -> BN -> ReLU.  (B, H, W, Cin) -> (B, H, W, features)."""

    features: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = _conv(self.features, 3, x.shape[-1], "conv", self.precision)(x)
        return nn.relu(_bn(train, "bn")(x))


def upsample_nearest2x(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, 2H, 2W, C), `nn.Upsample(scale_factor=2)` (nearest)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


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
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cin, k = x.shape[-1], 3
        kernel = self.param(
            "kernel",
            nn.initializers.normal(math.sqrt(2.0 / (k * k * self.features))),
            (k, k, cin, self.features),
        )
        bias = self.param("bias", _torch_conv_bias_init(cin * k * k), (self.features,))
        rows = []
        for p in (0, 1):
            kp = jnp.stack([sum(kernel[i] for i in taps) for taps in _PHASE_TAPS[p]])
            cols = []
            for q in (0, 1):
                kpq = jnp.stack([sum(kp[:, j] for j in taps) for taps in _PHASE_TAPS[q]], 1)
                y = jax.lax.conv_general_dilated(
                    x,
                    kpq,
                    (1, 1),
                    (_PHASE_PAD[p], _PHASE_PAD[q]),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    precision=self.precision,
                )
                cols.append(y)
            rows.append(jnp.stack(cols, 3))  # (B, H, W, 2, F)
        y = jnp.stack(rows, 2)  # (B, H, 2, W, 2, F)
        b, h, _, w = y.shape[:4]
        return y.reshape(b, 2 * h, 2 * w, self.features) + bias


class UpConv(nn.Module):
    """Nearest x2 -> Conv3x3 -> BN -> ReLU.  (B, H, W, Cin) -> (B, 2H, 2W, features)."""

    features: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = UpsampleConv3x3(self.features, self.precision, name="conv")(x)
        return nn.relu(_bn(train, "bn")(x))


class AttentionBlock(nn.Module):
    """Additive attention gate: x * sigmoid(BN(conv(relu(BN(conv g) + BN(conv x))))).

    g (B, H, W, Cg), x (B, H, W, Cx) -> (B, H, W, Cx); the gate has one channel and its own
    1-channel BatchNorm before the sigmoid.
    """

    inter: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, g: jnp.ndarray, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        g1 = _bn(train, "g_bn")(_conv(self.inter, 1, g.shape[-1], "g_conv", self.precision)(g))
        x1 = _bn(train, "x_bn")(_conv(self.inter, 1, x.shape[-1], "x_conv", self.precision)(x))
        psi = _conv(1, 1, self.inter, "psi_conv", self.precision)(nn.relu(g1 + x1))
        return x * nn.sigmoid(_bn(train, "psi_bn")(psi))


class ConvBlock1x1(nn.Module):
    """Conv1x1 -> ReLU (no BN).  (B, H, W, Cin) -> (B, H, W, features)."""

    features: int
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.relu(_conv(self.features, 1, x.shape[-1], "conv", self.precision)(x))


def max_pool2x(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


# ------------------------------------------------------------------------------------------
# Networks


class ATUNetSmall(nn.Module):
    """Attention U-Net, 3 poolings (`ATUNet_small`).

    (B, H, W, Cin) -> (B, H, W, out_ch), H and W divisible by 8. The head is 1x1 + ReLU, so
    the normals (front ch 0-2, back 3-5, encoded (n + 1) / 2) are >= 0. Level widths
    ``width`` x (1, 2, 4, 8) (official 64).
    """

    out_ch: int = 6
    precision: str = "highest"
    width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        p, w = self.precision, self.width
        x1 = ConvBlock(w, p, name="Conv1")(x, train)
        x2 = ConvBlock(2 * w, p, name="Conv2")(max_pool2x(x1), train)
        x3 = ConvBlock(4 * w, p, name="Conv3")(max_pool2x(x2), train)
        d = ConvBlock(8 * w, p, name="Conv4")(max_pool2x(x3), train)
        for level, skip, width in ((4, x3, 4 * w), (3, x2, 2 * w), (2, x1, w)):
            d = UpConv(width, p, name=f"Up{level}")(d, train)
            gated = AttentionBlock(width // 2, p, name=f"Att{level}")(d, skip, train)
            d = ConvBlock(width, p, name=f"Up_conv{level}")(jnp.concatenate([gated, d], -1), train)
        return ConvBlock1x1(self.out_ch, p, name="Conv_1x1")(d)


class ATUNetME(nn.Module):
    """Dual-encoder attention U-Net (`ATUNetME`, the low-resolution depth net).

    x (B, H, W, 3) image, y (B, H, W, 6) normals, H and W divisible by 16 ->
    (B, H, W, out_ch) raw (no activation): front depth, back depth, mask logit. Encoder
    widths ``width`` x (1/2, 1, 2, 4, 8) (official 64).
    """

    out_ch: int = 3
    precision: str = "highest"
    width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, y: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        p, w = self.precision, self.width
        skips = []
        for branch, z in ((1, x), (2, y)):
            feats = []
            for level, width in enumerate((w // 2, w, 2 * w, 4 * w, 8 * w), start=1):
                if level > 1:
                    z = max_pool2x(z)
                z = ConvBlock(width, p, name=f"Conv{level}_{branch}")(z, train)
                feats.append(z)
            skips.append(feats)
        d = jnp.concatenate([skips[0][4], skips[1][4]], -1)
        for level, width in ((5, 8 * w), (4, 4 * w), (3, 2 * w), (2, w)):
            d = UpConv(width, p, name=f"Up{level}")(d, train)
            skip = jnp.concatenate([skips[0][level - 2], skips[1][level - 2]], -1)
            gated = AttentionBlock(width // 2, p, name=f"Att{level}")(d, skip, train)
            d = ConvBlock(width, p, name=f"Up_conv{level}")(jnp.concatenate([gated, d], -1), train)
        return _conv(self.out_ch, 1, w, "Conv_1x1", p)(d)


class Refine2048(nn.Module):
    """The high-resolution depth net (`Refine_2048`) without its warp-back (done by
    `blend_part_normals`): three blocks, each up_conv(depth) ++ single_conv(normal) ->
    conv_block -> 1x1 (+ReLU, but plain in the last block).

    `__call__(d, n1, n2, n)`: d (B, S, S, 2) low-res depth; n1 (B, 2S, 2S, 6),
    n2 (B, 4S, 4S, 6), n (B, 8S, 8S, 6) merged normals -> (B, 8S, 8S, 3) raw.
    `stage(k, d_prev, n_k)` runs block k alone (what the strip-wise forward uses). Widths
    ``width`` / 2 per branch, ``width`` merged (official 64).
    """

    precision: str = "highest"
    width: int = 64

    def setup(self):
        p, w = self.precision, self.width
        for k in (1, 2, 3):
            setattr(self, f"depth{k}", UpConv(w // 2, p))
            setattr(self, f"normal{k}", SingleConv(w // 2, p))
            setattr(self, f"merge{k}_1", ConvBlock(w, p))
        self.merge1_2 = ConvBlock1x1(w, p)
        self.merge2_2 = ConvBlock1x1(w, p)
        self.merge3_2 = _conv(3, 1, w, None, p)

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


class TwoK2K(nn.Module):
    """All phase-2 networks under their official names (no computation of its own but the
    `init` pass; `twok2k_forward` runs the model).

    `__call__(crops, img256, d_fb, n1, n2, n)` touches every network once (for `init`):
    crops maps net name -> (N, h, w, 6); img256 (B, 256, 256, 3); d_fb (B, S, S, 2); n1, n2, n
    the merged normals at 2S, 4S, 8S. ``width``: the networks' base width (official 64;
    smaller for CPU-sized training runs).
    """

    precision: str = "highest"
    width: int = 64

    def setup(self):
        p, w = self.precision, self.width
        for name in PART_NETS:
            setattr(self, f"img2normal_{name}", ATUNetSmall(6, p, w))
        self.img2normal_down = ATUNetSmall(6, p, w)
        self.ImgNorm_to_Dep = ATUNetME(3, p, w)
        self.refine = Refine2048(p, w)

    def low_res(self, img256: jnp.ndarray, train: bool = False):
        """(B, S, S, 3) -> down normals (B, S, S, 6), raw depth (B, S, S, 3); S = canvas / 8
        (256 official)."""
        d_n = self.img2normal_down(img256, train)
        return d_n, self.ImgNorm_to_Dep(img256, d_n, train)

    def part(self, name: str, crops: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Part net `name`: (N, h, w, 6) [RGB crop, low-res front normal crop] -> (N, h, w, 6)."""
        return getattr(self, f"img2normal_{name}")(crops, train)

    def refine_stage(self, k: int, d_prev, n_k, train: bool = False) -> jnp.ndarray:
        return self.refine.stage(k, d_prev, n_k, train)

    def refine_all(self, d, n1, n2, n, train: bool = False) -> jnp.ndarray:
        """The three refiner blocks at once (training): see `Refine2048`."""
        return self.refine(d, n1, n2, n, train)

    def __call__(self, crops, img256, d_fb, n1, n2, n, train: bool = False):
        out = {name: self.part(name, crops[name], train) for name in PART_NETS}
        out["low_res"] = self.low_res(img256, train)
        out["refine"] = self.refine(d_fb, n1, n2, n, train)
        return out


def init_variables(key: jax.Array, precision: str = "highest", width: int = 64) -> dict:
    """Freshly initialised {'params', 'batch_stats'} of `TwoK2K` (the official init)."""
    crops = {name: jnp.zeros((1, 16, 16, 6)) for name in PART_NETS}
    z = jnp.zeros
    return TwoK2K(precision, width).init(
        key,
        crops,
        z((1, 16, 16, 3)),
        z((1, 2, 2, 2)),
        z((1, 4, 4, 6)),
        z((1, 8, 8, 6)),
        z((1, 16, 16, 6)),
    )


# ------------------------------------------------------------------------------------------
# PyTorch-exact sampling


@functools.lru_cache(maxsize=8)
def base_grid(n: int) -> np.ndarray:
    """`affine_grid`'s base coordinates for n pixels (align_corners=False), bit-exact.

    torch.linspace(-1, 1, n) (start + i step below the middle, end - (n-1-i) step above,
    each rounded once) scaled by (n - 1) / n in two float32 roundings.  -> (n,) float32.
    """
    step = np.float32(2.0) / np.float32(n - 1)
    i = np.arange(n, dtype=np.float64)
    lin = np.where(i < n // 2, -1.0 + np.float64(step) * i, 1.0 - np.float64(step) * (n - 1 - i))
    lin = lin.astype(np.float32)
    return (lin * np.float32(n - 1)) / np.float32(n)


def _rounded(p: jnp.ndarray) -> jnp.ndarray:
    """p itself, but no longer a product that the compiler may fuse into an FMA."""
    return jnp.where(jnp.isnan(p), jnp.zeros_like(p), p)


def _affine_coords(theta: jnp.ndarray, rows: np.ndarray, cols: np.ndarray, size: int):
    """Pixel coordinates that `grid_sample(affine_grid(theta))` reads for output pixels
    (rows x cols) of a size^2 frame, in a size^2 source.

    theta (2, 3); rows (R,), cols (C,) int arrays (may be traced) -> ix, iy (R, C) float32.
    """
    g = jnp.asarray(base_grid(size))
    x = g[cols][None, :]
    y = g[rows][:, None]
    # Sequential float32 products and sums, as the bmm in affine_grid computes them. XLA:CPU
    # would contract a product and the following sum into one FMA (one rounding less, up to
    # 2e-4 pixel away from PyTorch's positions); a select between them prevents that.
    gx = _rounded(x * theta[0, 0]) + _rounded(y * theta[0, 1]) + theta[0, 2]
    gy = _rounded(x * theta[1, 0]) + _rounded(y * theta[1, 1]) + theta[1, 2]
    half = np.float32(size / 2)
    return (gx + 1) * half - np.float32(0.5), (gy + 1) * half - np.float32(0.5)


def _bilinear_taps(ix: jnp.ndarray, iy: jnp.ndarray, h: int, w: int):
    """The four taps of bilinear `grid_sample` (zeros padding) at pixel coords (ix, iy):
    [(row index, col index, weight, in_bounds)], in grid_sample's nw, ne, sw, se order."""
    x0 = jnp.floor(ix)
    y0 = jnp.floor(iy)
    wx = ix - x0
    wy = iy - y0
    ex = 1 - wx
    sy = 1 - wy
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    taps = []
    for dy, dx, wt in ((0, 0, sy * ex), (0, 1, sy * wx), (1, 0, wy * ex), (1, 1, wy * wx)):
        r, c = y0 + dy, x0 + dx
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        taps.append((jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1), wt, inside))
    return taps


def _bilinear_sample(src: jnp.ndarray, ix: jnp.ndarray, iy: jnp.ndarray) -> jnp.ndarray:
    """src (H, W, C) at (ix, iy) (R, Cols) -> (R, Cols, C), zeros outside."""
    out = None
    for r, c, wt, inside in _bilinear_taps(ix, iy, src.shape[0], src.shape[1]):
        term = jnp.where(inside[..., None], src[r, c], 0.0) * wt[..., None]
        out = term if out is None else out + term
    return out


def _ones_sample(ix: jnp.ndarray, iy: jnp.ndarray, h: int, w: int) -> jnp.ndarray:
    """`grid_sample` of an all-ones h x w map at (ix, iy): the in-bounds tap weight sum."""
    out = None
    for _, _, wt, inside in _bilinear_taps(ix, iy, h, w):
        term = jnp.where(inside, 1.0, 0.0) * wt
        out = term if out is None else out + term
    return out


def invert_affine(theta: jnp.ndarray) -> jnp.ndarray:
    """(..., 2, 3) -> (..., 2, 3): [R^-1, -R^-1 T] (the official `inv_aff`), bit-exact.

    `torch.linalg.inv` solves R X = I by LU with partial pivoting: l = c / a, u = d - l b,
    then substitutions that multiply by the reciprocals of the pivots. Rounding like it
    matters: a last-bit change of the inverse moves warp-back positions by 1e-4 pixel, which
    at a window's edge decides whether a pixel gets a (tiny) weight or none, hence a normal
    or zero.
    """
    r = theta[..., :2]
    a, b, c, d = r[..., 0, 0], r[..., 0, 1], r[..., 1, 0], r[..., 1, 1]
    swap = jnp.abs(c) > jnp.abs(a)
    a, b, c, d = (jnp.where(swap, q, p) for p, q in ((a, c), (b, d), (c, a), (d, b)))
    l = c / a
    u = d - _rounded(l * b)
    ra = 1 / a
    ru = 1 / u
    cols = []
    for e0, e1 in ((1.0, 0.0), (0.0, 1.0)):
        y1 = jnp.where(swap, e1, e0)
        y2 = jnp.where(swap, e0, e1) - _rounded(l * y1)
        x2 = _rounded(y2 * ru)
        x1 = (y1 - _rounded(b * x2)) * ra
        cols.append(jnp.stack([x1, x2], -1))
    inv = jnp.stack(cols, -1)  # (..., 2, 2)
    t = theta[..., 2]
    inv_t = -(_rounded(inv[..., 0] * t[..., :1]) + _rounded(inv[..., 1] * t[..., 1:]))
    return jnp.concatenate([inv, inv_t[..., None]], -1)


def downsample8_bilinear(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, H/8, W/8, C): `F.interpolate(bilinear, align_corners=False)`
    without antialiasing — each output is the mean of input pixels 8i+3 and 8i+4 per axis,
    summed in PyTorch's order (columns, then rows)."""
    s = x[:, :, 3::8] + x[:, :, 4::8]
    return (s[:, 3::8] + s[:, 4::8]) * np.float32(0.25)


@functools.lru_cache(maxsize=8)
def _upsample_taps(n_in: int, n_out: int):
    """Indices and weights of bilinear align_corners=False upsampling along one axis."""
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0).astype(np.float32)
    i0 = np.floor(src).astype(np.int32)
    lam = (src - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1).astype(np.int32)
    return i0, i1, (1 - lam).astype(np.float32), lam


def upsample_bilinear(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """(B, h, w, C) -> (B, size, size, C), `F.interpolate(bilinear, align_corners=False)`."""
    c0, c1, cw0, cw1 = _upsample_taps(x.shape[2], size)
    r0, r1, rw0, rw1 = _upsample_taps(x.shape[1], size)
    a = x[:, :, c0] * cw0[:, None] + x[:, :, c1] * cw1[:, None]
    return a[:, r0] * rw0[:, None, None] + a[:, r1] * rw1[:, None, None]


@functools.lru_cache(maxsize=2)
def gaussian_taps(taps: int = BLUR_TAPS, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """torchvision's normalised 1-D Gaussian kernel (taps at -(k-1)/2 .. (k-1)/2)."""
    x = np.linspace(-(taps - 1) / 2, (taps - 1) / 2, taps, dtype=np.float32)
    pdf = np.exp(-0.5 * (x / np.float32(sigma)) ** 2)
    return (pdf / pdf.sum()).astype(np.float32)


def blur(x: jnp.ndarray, taps: int = BLUR_TAPS, sigma: float = BLUR_SIGMA) -> jnp.ndarray:
    """Separable Gaussian (official: 15x15, sigma 5) with zero padding. (N, h, w) -> (N, h, w).

    The official blur reflect-pads its 2048^2 frame; callers only blur maps whose 8-pixel
    border is zero, inside which reflection and zeros agree.
    """
    k = jnp.asarray(gaussian_taps(taps, sigma))
    r = (taps - 1) // 2
    xp = jnp.pad(x, ((0, 0), (r, r), (0, 0)))
    x = sum(xp[:, i : i + x.shape[1]] * k[i] for i in range(taps))
    xp = jnp.pad(x, ((0, 0), (0, 0), (r, r)))
    return sum(xp[:, :, i : i + x.shape[2]] * k[i] for i in range(taps))


def _window(h: int, w: int, canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the centre (h, w) crop of the canonical frame."""
    return np.arange(canvas // 2 - h // 2, canvas // 2 + h // 2), np.arange(
        canvas // 2 - w // 2, canvas // 2 + w // 2
    )


def sample_part_window(
    src: jnp.ndarray, theta: jnp.ndarray, crop: tuple[int, int]
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The centre crop of `grid_sample(src, affine_grid(theta))`, computed on the crop only.

    src (S, S, C) (S = 2048 official); theta (2, 3) canonical -> image ->
    (crop (h, w, C), ones map (h, w)).
    """
    canvas = src.shape[0]
    rows, cols = _window(*crop, canvas)
    ix, iy = _affine_coords(theta, rows, cols, canvas)
    return _bilinear_sample(src, ix, iy), _ones_sample(ix, iy, canvas, canvas)


def blend_weight(ones: jnp.ndarray, geom: Geometry = OFFICIAL) -> jnp.ndarray:
    """Unnormalised blending weight of one part on its crop window: the in-image map with
    its frame (8 pixels official) zeroed, blurred. (N, h, w) -> (N, h, w)."""
    f = geom.blur_frame
    framed = jnp.zeros_like(ones).at[:, f:-f, f:-f].set(ones[:, f:-f, f:-f])
    return blur(framed, geom.blur_taps, geom.blur_sigma)


# ------------------------------------------------------------------------------------------
# Warp back: only the image pixels each part's window reaches


class WarpBoxes(NamedTuple):
    """Per part, the image box that holds every pixel its window can reach.

    sizes: 12 static (h, w); offsets: (B, 12, 2) int32 top-left corners (row, col).
    """

    sizes: tuple[tuple[int, int], ...]
    offsets: np.ndarray


def warp_boxes(
    theta: np.ndarray, quantum: int = BOX_QUANTUM, geom: Geometry = OFFICIAL
) -> WarpBoxes:
    """Image boxes of the 12 part windows mapped by theta (host-side, numpy).

    theta (B, 12, 2, 3) concrete. A box is the bounding box of the window's corners in the
    image plus a 2-pixel margin, its size rounded up to `quantum` (shared by the batch) and
    clipped to the image; sizes are static shapes of the compiled forward.
    """
    theta = np.asarray(theta, np.float64)
    if theta.ndim != 4 or theta.shape[1:] != (N_PARTS, 2, 3):
        raise HdjaxError(f"theta must be (B, {N_PARTS}, 2, 3), got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise HdjaxError("theta holds non-finite values (a part transform failed)")
    sizes, offsets = [], []
    n = geom.canvas
    for i, (h, w) in enumerate(geom.part_crop):
        rows, cols = _window(h, w, n)
        cy = (2 * np.array([rows[0], rows[-1]], np.float64) + 1) / n - 1
        cx = (2 * np.array([cols[0], cols[-1]], np.float64) + 1) / n - 1
        u, v = np.meshgrid(cx, cy)
        pts = np.stack([u.ravel(), v.ravel(), np.ones(4)])  # (3, 4)
        img = theta[:, i] @ pts  # (B, 2, 4), normalised image coords
        pix = ((img + 1) * n - 1) / 2
        lo = np.floor(pix.min(-1)) - BOX_MARGIN  # (B, 2) (x, y)
        hi = np.ceil(pix.max(-1)) + BOX_MARGIN
        size = np.max(hi - lo + 1, axis=0)
        size = np.minimum(np.ceil(size / quantum) * quantum, n).astype(int)
        off = np.clip(lo, 0, n - size).astype(np.int32)
        sizes.append((int(size[1]), int(size[0])))
        offsets.append(off[:, ::-1])
    return WarpBoxes(tuple(sizes), np.stack(offsets, 1).astype(np.int32))


def full_frame_boxes(batch: int, canvas: int = CANVAS) -> WarpBoxes:
    """Boxes covering the whole image (for a traced theta: no host-side bounds)."""
    return WarpBoxes(((canvas, canvas),) * N_PARTS, np.zeros((batch, N_PARTS, 2), np.int32))


def _warp_back_part(acc, part_map, inv_theta, offset, size):
    """Adds one part's weighted normals and weight into the image accumulator.

    acc (S, S, 7) [sum w n (6), sum w]; part_map (h, w, 7) [normal (6), weight] on the
    part's crop window; inv_theta (2, 3) image -> canonical; offset (2,) box corner.
    """
    h, w = part_map.shape[:2]
    n = acc.shape[0]
    rows = offset[0] + jnp.arange(size[0])
    cols = offset[1] + jnp.arange(size[1])
    ix, iy = _affine_coords(inv_theta, rows, cols, n)
    # Outside the window the official padded map is zero: one zero pixel around the window
    # and clipped indices give the same taps.
    padded = jnp.pad(part_map, ((1, 1), (1, 1), (0, 0)))
    ix = ix - np.float32(n // 2 - w // 2 - 1)
    iy = iy - np.float32(n // 2 - h // 2 - 1)
    s = _bilinear_sample(padded, jnp.clip(ix, -2, w + 2), jnp.clip(iy, -2, h + 2))
    contrib = jnp.concatenate([s[..., :6] * s[..., 6:], s[..., 6:]], -1)
    box = jax.lax.dynamic_slice(acc, (offset[0], offset[1], 0), (size[0], size[1], 7))
    return jax.lax.dynamic_update_slice(acc, box + contrib, (offset[0], offset[1], 0))


def blend_part_normals(
    part_normals, weights, inv_theta, boxes: WarpBoxes, canvas: int = CANVAS
) -> tuple:
    """Warps the 12 part normals back into the image and blends them.

    part_normals: list of 12 arrays (B, h_i, w_i, 6); weights: list of 12 (B, h_i, w_i)
    unnormalised blending weights; inv_theta (B, 12, 2, 3).
    Returns (merged normals (B, S, S, 6), weight sum (B, S, S)), S = canvas.
    """

    def one(pn, wt, inv, off):
        acc = jnp.zeros((canvas, canvas, 7), jnp.float32)
        for i in range(N_PARTS):
            pmap = jnp.concatenate([pn[i], wt[i][..., None]], -1)
            acc = _warp_back_part(acc, pmap, inv[i], off[i], boxes.sizes[i])
        total = acc[..., 6]
        return acc[..., :6] / jnp.where(total == 0, 1.0, total)[..., None], total

    return jax.vmap(one)(part_normals, weights, inv_theta, jnp.asarray(boxes.offsets))


# ------------------------------------------------------------------------------------------
# Strip-wise refiner blocks


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


# ------------------------------------------------------------------------------------------
# The phase-2 forward


def part_inputs(image6: jnp.ndarray, theta: jnp.ndarray, geom: Geometry = OFFICIAL):
    """Per network: crops (B * n, h, w, C) and ones maps (B, n, h, w) of its n parts.

    image6 (B, S, S, C) (the official: RGB and the upsampled low-res front normal, C = 6);
    theta (B, 12, 2, 3). Crops are batch-major (sample 0's parts first).
    """
    crops, ones = {}, {}
    for name, (crop, parts) in geom.net_crops().items():
        c, o = jax.vmap(
            lambda img, th, crop=crop: jax.vmap(lambda t: sample_part_window(img, t, crop))(th)
        )(image6, theta[:, list(parts)])
        crops[name] = c.reshape(-1, *c.shape[2:])
        ones[name] = o
    return crops, ones


def part_net_input(image: jnp.ndarray, down_normal: jnp.ndarray) -> jnp.ndarray:
    """What the part nets are cropped from: the image (B, S, S, 3) and the low-res front
    normal (B, S/8, S/8, 6 -> first 3) upsampled to S, as one 6-channel frame."""
    return jnp.concatenate([image, upsample_bilinear(down_normal[..., :3], image.shape[1])], -1)


def low_res_maps(raw: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """The low-res depth net's raw output (B, s, s, 3) -> ReLU6 depths and sigmoid mask
    (B, s, s, 1 each), and ``d_fb`` (B, s, s, 2): what the refiner sees (front 6 and back 0
    where the mask is <= 0.5, as the official masks them in place)."""
    front = jnp.clip(raw[..., 0:1], 0, 6)
    back = jnp.clip(raw[..., 1:2], 0, 6)
    mask = nn.sigmoid(raw[..., 2:3])
    inside = mask > 0.5
    d_fb = jnp.concatenate([jnp.where(inside, front, 6.0), back * inside], -1)
    return {"front": front, "back": back, "mask": mask, "d_fb": d_fb}


def merge_part_normals(part_out, ones, theta, boxes: WarpBoxes, geom: Geometry = OFFICIAL):
    """Part nets' outputs (net name -> (B * n, h, w, 6)) -> blended image normals
    (B, S, S, 6), the weight sum (B, S, S) and inv_theta (B, 12, 2, 3)."""
    b = theta.shape[0]
    part_normals, weights = [], []
    for name, (_, parts) in PART_NETS.items():
        out = part_out[name].reshape(b, len(parts), *part_out[name].shape[1:])
        wt = jax.vmap(lambda o: blend_weight(o, geom))(ones[name])
        part_normals += [out[:, j] for j in range(len(parts))]
        weights += [wt[:, j] for j in range(len(parts))]
    inv_theta = invert_affine(theta)
    normal, total = blend_part_normals(part_normals, weights, inv_theta, boxes, geom.canvas)
    return normal, total, inv_theta


def refine_strips(run, d_fb: jnp.ndarray, normal: jnp.ndarray, strip: int) -> jnp.ndarray:
    """The three refiner blocks (``run(TwoK2K.refine_stage, k, d_prev, n_k)``), the last
    two strip by strip: d_fb (B, S/8, S/8, 2), normal (B, S, S, 6) -> raw (B, S, S, 3)."""
    d1 = run(TwoK2K.refine_stage, 1, d_fb, normal[:, 1::4, 1::4])

    def stage(k):
        return lambda d_prev, n_k: run(TwoK2K.refine_stage, k, d_prev, n_k)

    return strip_apply2(stage(2), stage(3), d1, normal[:, 0::2, 0::2], normal, strip, STRIP_HALO)


def _forward_core(variables, image, theta, offsets, sizes, strip, precision, geom, width):
    """`twok2k_forward` with the warp-back boxes split into traced offsets and static sizes."""
    model = TwoK2K(precision, width)

    def run(method, *args):
        return model.apply(variables, *args, method=method)

    img_low = downsample8_bilinear(image)
    d_n, d_d = run(TwoK2K.low_res, img_low)
    # The part nets see the RGB crop and the front low-res normal upsampled to S and warped
    # by the same transform: sample both from one 6-channel frame.
    crops, ones = part_inputs(part_net_input(image, d_n), theta, geom)
    # One crop at a time: the nets' activations for a batch of 4 crops would dominate the
    # forward's memory (BatchNorm uses running statistics, so the result is the same).
    part_out = {
        name: jax.lax.map(lambda c, name=name: run(TwoK2K.part, name, c[None])[0], crops[name])
        for name in PART_NETS
    }
    normal, total, inv_theta = merge_part_normals(
        part_out, ones, theta, WarpBoxes(sizes, offsets), geom
    )
    low = low_res_maps(d_d)
    d3 = refine_strips(run, low["d_fb"], normal, strip)

    out = {
        f"{name}_normal_{side}": part_out[name][..., sl]
        for name in PART_NETS
        for side, sl in (("front", slice(0, 3)), ("back", slice(3, 6)))
    }
    out |= {
        "down_normal_front": d_n[..., :3],
        "down_normal_back": d_n[..., 3:],
        # The official returns the low-res depths after its in-place masking.
        "down_depth_front": low["d_fb"][..., 0],
        "down_depth_back": low["d_fb"][..., 1],
        "down_depth_mask": low["mask"][..., 0],
        "normal_front": normal[..., :3],
        "normal_back": normal[..., 3:],
        "depth_front": jnp.clip(d3[..., 0], 0, 6),
        "depth_back": jnp.clip(d3[..., 1], 0, 6),
        "depth_mask": nn.sigmoid(d3[..., 2]),
        "occupancy": (total > 0).astype(jnp.float32),
        "inv_theta": inv_theta,
    }
    return out


_forward_jit = jax.jit(
    _forward_core, static_argnames=("sizes", "strip", "precision", "geom", "width")
)


def twok2k_forward(
    variables: Mapping[str, Any],
    image: jnp.ndarray,
    theta: np.ndarray,
    *,
    boxes: WarpBoxes | None = None,
    strip: int = STRIP_ROWS,
    precision: str = "highest",
    width: int = 64,
) -> dict[str, jnp.ndarray]:
    """The official phase-2 forward (`Model_2K2K(phase=2)` in eval mode), jitted.

    Args:
      variables: {'params', 'batch_stats'} of `TwoK2K` (of base width ``width``).
      image: (B, S, S, 3) float32 in [-1, 1]: S = 2048 official, else `geometry(S)`.
      theta: (B, 12, 2, 3) canonical -> image transforms (the official `init_affine`).
      boxes: warp-back boxes; by default `warp_boxes(theta)` (theta must then be concrete;
        with a traced theta pass `full_frame_boxes(B)`: same numbers, twelve full warps).
      strip: output rows per strip of the fused 1024^2 + 2048^2 refiner blocks (a multiple
        of 4 dividing 2048; fewer rows, less memory).
      precision: conv / matmul precision ("highest" keeps float32 on GPU/TPU).
    Returns (NHWC, float32; shapes for S = 2048):
      `{face,upper,arm,leg,shoe}_normal_{front,back}`: part normals (B * n, h, w, 3) for
        the crops of `PART_NETS` (n = parts served, batch-major), in [0, inf) ~ (n + 1) / 2;
      `down_normal_{front,back}` (B, 256, 256, 3);
      `down_depth_{front,back}` (B, 256, 256) in [0, 6], masked as the refiner sees them
        (front 6 and back 0 where `down_depth_mask` (B, 256, 256) <= 0.5);
      `normal_{front,back}` (B, 2048, 2048, 3): the blended part normals;
      `depth_{front,back}` (B, 2048, 2048) in [0, 6], `depth_mask` (B, 2048, 2048) in (0, 1);
      `occupancy` (B, 2048, 2048): 1 where some part covers the pixel;
      `inv_theta` (B, 12, 2, 3).
    """
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 4 or image.shape[1] != image.shape[2] or image.shape[3] != 3:
        raise HdjaxError(f"image must be (B, S, S, 3), got {image.shape}")
    geom = geometry(image.shape[1])
    if boxes is None:
        boxes = warp_boxes(np.asarray(theta), geom=geom)
    theta = jnp.asarray(theta, jnp.float32)
    if theta.shape != (image.shape[0], N_PARTS, 2, 3):
        raise HdjaxError(f"theta must be ({image.shape[0]}, {N_PARTS}, 2, 3), got {theta.shape}")
    return _forward_jit(
        variables,
        image,
        theta,
        jnp.asarray(boxes.offsets),
        sizes=boxes.sizes,
        strip=strip,
        precision=precision,
        geom=geom,
        width=width,
    )

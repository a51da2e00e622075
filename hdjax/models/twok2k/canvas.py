"""2K2K's sizes: the official canvas and part crops, `Geometry` (those sizes scaled to
another canvas) and the depth units of the networks.

Other canvases (a multiple of 128, e.g. 256² for CPU-sized training) scale the part crops,
the blur and the low-resolution branch (`geometry`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from hdjax.errors import HdjaxError

CANVAS = 2048
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

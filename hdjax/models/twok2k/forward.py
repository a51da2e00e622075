"""The 2K2K phase-2 forward (`twok2k_forward`), NHWC: the official phase-2 numbers without
its twelve full 2048^2 frames.

  * part crops and blending weights on each part's centre-crop window only (`sampling`);
  * warp back only over the image pixels each part's window can reach (`warp`);
  * the 1024^2 and 2048^2 refiner blocks in row strips with a halo (`strips`).

Shapes: image (B, 2048, 2048, 3) in [-1, 1]; theta (B, 12, 2, 3) canonical -> image in
normalised coordinates (the official `init_affine`, i.e. what `affine_grid` receives).
Other canvases (a multiple of 128) scale the part crops, the blur and the low-resolution
branch (`canvas.geometry`); the networks take a base width and `Numerics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hdjax.errors import HdjaxError
from hdjax.models.layers import Numerics
from hdjax.models.twok2k.canvas import N_PARTS, OFFICIAL, PART_NETS, Geometry, geometry
from hdjax.models.twok2k.networks import TwoK2K
from hdjax.models.twok2k.sampling import (
    blend_weight,
    downsample8_bilinear,
    invert_affine,
    sample_part_window,
    upsample_bilinear,
)
from hdjax.models.twok2k.strips import STRIP_HALO, STRIP_ROWS, strip_apply2
from hdjax.models.twok2k.warp import WarpBoxes, blend_part_normals, warp_boxes


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


def _forward_core(variables, image, theta, offsets, sizes, strip, numerics, geom, width):
    """`twok2k_forward` with the warp-back boxes split into traced offsets and static sizes."""
    model = TwoK2K(numerics, width)

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
    _forward_core, static_argnames=("sizes", "strip", "numerics", "geom", "width")
)


def twok2k_forward(
    variables: Mapping[str, Any],
    image: jnp.ndarray,
    theta: np.ndarray,
    *,
    boxes: WarpBoxes | None = None,
    strip: int = STRIP_ROWS,
    numerics: Numerics | None = None,
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
      numerics: the networks' computation dtype and conv / matmul precision (None: float32,
        "highest", which keeps float32 on GPU/TPU); sampling, blending and the outputs stay
        float32.
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
        numerics=numerics or Numerics(),
        geom=geom,
        width=width,
    )

"""2K2K (Han et al., CVPR 2023): the networks and the phase-2 forward, NHWC.

One module per concept, in dependency order:
  `canvas`   the official sizes, `Geometry` (scaled to other canvases), depth units;
  `blocks`   the building blocks (convs, attention gates, x2 up-convolutions);
  `networks` `ATUNetSmall`, `ATUNetME`, `Refine2048`, gathered in `TwoK2K`;
  `sampling` PyTorch-exact `affine_grid` + `grid_sample`, resizes, blur, part windows;
  `warp`     the warp back of the part normals over the boxes their windows reach;
  `strips`   the refiner's 1024^2 and 2048^2 blocks in row strips;
  `forward`  `twok2k_forward`, the official phase-2 forward, jitted.

The networks take `layers.Numerics` (dtype, precision: the config's `model.numerics`,
`numerics_from_config`). The names below are re-exported so that
`from hdjax.models import twok2k as K; K.twok2k_forward(...)` reads the whole API.
"""

from __future__ import annotations

from hdjax.models.layers import Numerics
from hdjax.models.twok2k.blocks import (
    AttentionBlock,
    ConvBlock,
    ConvBlock1x1,
    SingleConv,
    UpConv,
    UpsampleConv3x3,
)
from hdjax.models.twok2k.canvas import (
    BLUR_FRAME,
    BLUR_SIGMA,
    BLUR_TAPS,
    CANVAS,
    DEPTH_CENTRE,
    N_PARTS,
    OFFICIAL,
    PART_CROP,
    PART_NETS,
    Geometry,
    geometry,
    native_depth,
    network_depth,
)
from hdjax.models.twok2k.forward import (
    low_res_maps,
    merge_part_normals,
    part_inputs,
    part_net_input,
    refine_strips,
    twok2k_forward,
)
from hdjax.models.twok2k.networks import (
    ATUNetME,
    ATUNetSmall,
    Refine2048,
    TwoK2K,
    init_variables,
    numerics_from_config,
)
from hdjax.models.twok2k.sampling import (
    base_grid,
    blend_weight,
    blur,
    downsample8_bilinear,
    gaussian_taps,
    invert_affine,
    sample_part_window,
    upsample_bilinear,
)
from hdjax.models.twok2k.strips import STRIP_HALO, STRIP_ROWS, strip_apply, strip_apply2
from hdjax.models.twok2k.warp import (
    BOX_MARGIN,
    BOX_QUANTUM,
    WarpBoxes,
    blend_part_normals,
    full_frame_boxes,
    warp_back_part,
    warp_boxes,
)

__all__ = [
    "BLUR_FRAME",
    "BLUR_SIGMA",
    "BLUR_TAPS",
    "BOX_MARGIN",
    "BOX_QUANTUM",
    "CANVAS",
    "DEPTH_CENTRE",
    "N_PARTS",
    "OFFICIAL",
    "PART_CROP",
    "PART_NETS",
    "STRIP_HALO",
    "STRIP_ROWS",
    "ATUNetME",
    "ATUNetSmall",
    "AttentionBlock",
    "ConvBlock",
    "ConvBlock1x1",
    "Geometry",
    "Numerics",
    "Refine2048",
    "SingleConv",
    "TwoK2K",
    "UpConv",
    "UpsampleConv3x3",
    "WarpBoxes",
    "base_grid",
    "blend_part_normals",
    "blend_weight",
    "blur",
    "downsample8_bilinear",
    "full_frame_boxes",
    "gaussian_taps",
    "geometry",
    "init_variables",
    "invert_affine",
    "low_res_maps",
    "merge_part_normals",
    "native_depth",
    "network_depth",
    "numerics_from_config",
    "part_inputs",
    "part_net_input",
    "refine_strips",
    "sample_part_window",
    "strip_apply",
    "strip_apply2",
    "twok2k_forward",
    "upsample_bilinear",
    "warp_back_part",
    "warp_boxes",
]

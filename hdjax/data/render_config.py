"""`RenderConfig`: what a dataset renders (camera, size, yaws, points, jitter), and its two
presets, `pifuhd_config` and `twok2k_config`. Records (`hdjax.data.records`) render by it and
subjects (`hdjax.data.subjects`) are checked against its mesh limits; the fields and the
camera jitter are described in `hdjax.data.records`."""

from __future__ import annotations

import dataclasses
from typing import Any

from hdjax.geometry import camera as cam


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """What one builder config renders.

    Attributes:
      camera: "ortho" (PIFuHD, `OrthoCamera` + PIFu normalisation) or "persp" (2K2K).
      size: image side in pixels.
      yaws: view angles in degrees (rotation of the subject about +y).
      num_points: stored training points per σ level and view (≥ 10× a step's 8,000).
      sigma_coarse_cm, sigma_fine_cm: surface perturbation in cm (module docstring).
      scan_unit_cm: the length of one scan unit in cm (100 for scans in metres such as
        THuman2.0, 1 for RenderPeople); None = unknown (σ then assumes a 180 cm body).
      max_faces: scans with more faces are skipped as absurdly large.
      max_extent: scans whose bounding box is longer than this (scan units) are skipped.
      pitch_deg, scale_jitter, shift_jitter: camera jitter per view (module docstring);
        0 turns each off.
      center: the normalisation's centre of orthographic renders (`camera.pifu_normalization`):
        "area_median", the median of the surface, or "vertex_median", PIFu's median of the
        vertices (to score the official weights on scans normalised as they were trained).
      point_pool: size of the labelled surface-candidate pool that a subject's views
        share, per σ level, in multiples of ``num_points`` (`point_sampling`); 0: every
        view draws and labels its own.
    """

    camera: str = "ortho"
    size: int = 1024
    yaws: tuple[float, ...] = tuple(float(a) for a in range(0, 360, 30))
    num_points: int = 100_000
    sigma_coarse_cm: float = 5.0
    sigma_fine_cm: float = 3.0
    max_faces: int = 3_000_000
    max_extent: float = 1.0e4
    scan_unit_cm: float | None = None
    pitch_deg: float = 4.0
    scale_jitter: float = 0.05
    shift_jitter: float = 0.03
    point_pool: float = 3.0
    center: str = "area_median"


def pifuhd_config(**overrides: Any) -> RenderConfig:
    """PIFuHD: orthographic 1024² (the pipeline derives the 512² coarse input), 12 yaws."""
    return dataclasses.replace(RenderConfig(), **overrides)


def twok2k_config(**overrides: Any) -> RenderConfig:
    """2K2K: perspective 2048², yaw −30..30 step 10 (`camera.TWOK2K_YAWS`)."""
    base = RenderConfig(camera="persp", size=cam.TWOK2K_SIZE, yaws=cam.TWOK2K_YAWS)
    return dataclasses.replace(base, **overrides)

"""Run configs shipped with the package: `--config=pifuhd[:variant]` from any directory."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

# Generated bodies the full-size configs train on (`hdjax.datasets.synthetic_humans.bodies`;
# the tiny variants keep the eight embedded ones, which build in seconds).
NUM_BODIES = 2000


def render(
    camera: str, size, yaws: tuple[float, ...], num_points: int
) -> ml_collections.ConfigDict:
    """``render``: `hdjax.data.render_config.RenderConfig`, field for field (the builds a run makes
    on first use). ``size`` may be a field reference (the model's input side)."""
    r = ml_collections.ConfigDict()
    r.camera = camera  # ortho (PIFuHD) | persp (2K2K)
    r.size = size
    r.yaws = yaws
    r.num_points = num_points
    r.sigma_coarse_cm = 5.0
    r.sigma_fine_cm = 3.0
    r.max_faces = 3_000_000
    r.max_extent = 1.0e4
    # cm per scan unit (100: metres, 1: centimetres); unset: σ assumes a 180 cm body.
    r.scan_unit_cm = config_dict.placeholder(float)
    # Camera jitter per view (RenderConfig docstring): max pitch, size and shift.
    r.pitch_deg = 4.0
    r.scale_jitter = 0.05
    r.shift_jitter = 0.03
    # Labelled surface candidates a subject's views share, × num_points (0: per view).
    r.point_pool = 3.0
    return r


def dataset(config: str, num_bodies: int | None) -> ml_collections.ConfigDict:
    """``input.dataset``: which built dataset a run reads, or which variant of the synthetic
    humans it builds on first use."""
    d = ml_collections.ConfigDict()
    # A built dataset folder; empty: the synthetic humans, built on first use as the
    # `synthetic_humans` builder config `config` (with the `render` section) in `root`:
    # the embedded eight bodies, or with `num_bodies`, that many bodies generated from
    # `seed` (dataset `<config>_n<N>_s<seed>`; needs the `bodies` extra).
    d.data_dir = ""
    d.split = "train"
    d.config = config
    d.root = "~/tensorflow_datasets"
    d.num_bodies = config_dict.placeholder(int)
    d.num_bodies = num_bodies
    d.seed = 0
    d.num_workers = 0  # processes rendering the build (0: one per core)
    d.body_cache_dir = config_dict.placeholder(str)  # Anny's parsed assets (default cache)
    d.clothed = True  # generated bodies wear garments and hair
    return d

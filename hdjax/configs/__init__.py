"""Run configs shipped with the package: `--config=pifuhd[:variant]` from any directory."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from hdjax import configlib
from hdjax.data.render_config import RenderConfig

# Generated bodies the full-size configs train on (`hdjax.datasets.synthetic_humans.bodies`;
# the tiny variants keep the eight embedded ones, which build in seconds).
NUM_BODIES = 2000


def render(
    camera: str, size, yaws: tuple[float, ...], num_points: int
) -> ml_collections.ConfigDict:
    """``render``: `hdjax.data.render_config.RenderConfig` at its defaults (see its docstring
    for every field) with a model's camera, image side, yaws and points: the builds a run
    makes on first use. ``size`` may be a field reference (the model's input side)."""
    return configlib.defaults(
        RenderConfig, camera=camera, size=size, yaws=yaws, num_points=num_points
    )


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

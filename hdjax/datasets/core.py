"""Where a run's records come from: a built dataset, or the embedded one built on first use.

``input.dataset.data_dir`` names a built TFDS folder (``.../synthetic_humans/pifuhd/1.5.0``
or any `scan_renders` build). Left empty, the run uses the embedded synthetic humans: the
`synthetic_humans` builder config ``input.dataset.config`` with the ``render`` section of
the config, built once under ``input.dataset.root`` (default ``~/tensorflow_datasets``)
with progress, then reused by every later run (training's split and the eval job's).
"""

from __future__ import annotations

import logging
import os

import ml_collections

from hdjax import configlib


def dataset_source(cfg: ml_collections.ConfigDict, split: str = "train"):
    """The random-access records of ``split`` (building the embedded dataset if needed)."""
    from hdjax.data import pipeline  # grain: only where records are read

    data_dir = cfg.input.dataset.data_dir or build_embedded(cfg)
    return pipeline.open_source(data_dir, split)


def build_embedded(cfg: ml_collections.ConfigDict) -> str:
    """Builds (once) the embedded synthetic humans with the config's ``render`` section."""
    from hdjax.data.render_config import RenderConfig
    from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder as builder_lib

    d = cfg.input.dataset
    render = configlib.build(RenderConfig, cfg.render, "render")
    config = builder_lib.variant(
        "pifuhd" if render.camera == "ortho" else "twok2k",
        name=d.config,
        num_bodies=d.num_bodies,
        seed=d.seed if d.num_bodies is not None else None,
        body_cache_dir=d.body_cache_dir,
        clothed=d.clothed,
        render=render,
        num_workers=d.num_workers,
    )
    root = os.path.expanduser(d.root or "~/tensorflow_datasets")
    builder = builder_lib.Builder(config=config, data_dir=root)
    if not os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json")):
        logging.info("building synthetic_humans/%s in %s (first use)", config.name, root)
    builder.download_and_prepare()
    return builder.data_dir

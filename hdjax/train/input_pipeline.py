"""Where training data comes from: a built dataset, or the embedded one built on first use.

``input.dataset.data_dir`` names a built TFDS folder (``.../synthetic_humans/pifuhd/1.3.0``
or any `scan_renders` build). Left empty, the run uses the embedded synthetic humans: the
`synthetic_humans` builder config ``input.dataset.config`` with the ``render`` section of
the config, built once under ``input.dataset.root`` (default ``~/tensorflow_datasets``)
with progress, then reused by every later run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections

from hdjax import configlib
from hdjax.data import pipeline
from hdjax.errors import HdjaxError


def pipeline_config(cfg: ml_collections.ConfigDict, mode: str) -> pipeline.PipelineConfig:
    """``input.pipeline`` as a `PipelineConfig` for one stage's ``mode``."""
    fields = dict(cfg.input.pipeline.to_dict(), mode=mode)
    return configlib.build(pipeline.PipelineConfig, fields, "input.pipeline")


def train_source(cfg: ml_collections.ConfigDict, split: str = "train"):
    """The random-access records of ``split`` (building the embedded dataset if needed)."""
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


def check_sizes(cfg: ml_collections.ConfigDict, arch: Any, source) -> None:
    """The records must be rendered at the fine level's input size."""
    size = source[0]["image"].shape[0]
    if size != arch.fine_size:
        raise HdjaxError(
            f"config model.arch.fine_size={arch.fine_size} but the dataset's images are "
            f"{size}² (render.size): rebuild with render.size={arch.fine_size} or change the model"
        )
    if cfg.input.pipeline.coarse_size != arch.coarse_size:
        raise HdjaxError(
            f"config input.pipeline.coarse_size={cfg.input.pipeline.coarse_size} != "
            f"model.arch.coarse_size={arch.coarse_size}"
        )


def vgg_features(cfg: ml_collections.ConfigDict):
    """pix2pixHD's VGG19 feature function from ``train.vgg19`` (a torchvision ``.pth``), or
    None: the normal nets then train on L1 + (1 − SSIM), which the log says."""
    path = cfg.train.vgg19
    if not path:
        logging.warning(
            "no train.vgg19 weights file: normal nets use L1 + (1 - SSIM) instead of the "
            "paper's VGG perceptual loss"
        )
        return None
    from hdjax.models.vgg import VGG19Features, load_vgg19

    params = load_vgg19(path)
    net = VGG19Features()
    return lambda x: net.apply(params, x)

"""The config's ``input`` section as the grain pipeline takes it, and the checks that the
records fit the model (the records themselves: `hdjax.datasets.core.dataset_source`)."""

from __future__ import annotations

from typing import Any

import ml_collections

from hdjax import configlib
from hdjax.data import pipeline
from hdjax.errors import HdjaxError


def pipeline_config(cfg: ml_collections.ConfigDict, mode: str) -> pipeline.PipelineConfig:
    """``input.pipeline`` as a `PipelineConfig` for one stage's ``mode``."""
    fields = dict(cfg.input.pipeline.to_dict(), mode=mode)
    return configlib.build(pipeline.PipelineConfig, fields, "input.pipeline")


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

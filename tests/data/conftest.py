"""Shared data fixture: a tiny built `synthetic_humans` dataset (pipeline and contact-sheet
tests)."""

import pytest

from hdjax.data import pipeline, render_config
from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder as synthetic_humans


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """4 records: 64² ortho renders of one body from 4 yaws, 2,000 points each."""
    config = synthetic_humans.Config(
        name="pipe",
        render=render_config.pifuhd_config(
            size=64, yaws=(0.0, 90.0, 180.0, 270.0), num_points=2000
        ),
        bodies=("body_02",),
    )
    builder = synthetic_humans.Builder(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return pipeline.open_source(builder.data_dir, "train")

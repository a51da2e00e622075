"""Shared data fixtures: a tiny built `synthetic_humans` dataset (pipeline and contact-sheet
tests) and the generated-body model (bodies and garments tests)."""

import pytest

from datasets.synthetic_humans import synthetic_humans_dataset_builder as synthetic_humans
from hdjax.data import bodies, pipeline, records
from hdjax.errors import HdjaxError


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """4 records: 64² ortho renders of one body from 4 yaws, 2,000 points each."""
    config = synthetic_humans.Config(
        name="pipe",
        render=records.pifuhd_config(size=64, yaws=(0.0, 90.0, 180.0, 270.0), num_points=2000),
        bodies=("body_02",),
    )
    builder = synthetic_humans.Builder(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return pipeline.open_source(builder.data_dir, "train")


@pytest.fixture(scope="module")
def model():
    """The generated-body model, or a skip when the `bodies` extra is missing."""
    pytest.importorskip("body_models")
    try:
        bodies.check_installed()
    except HdjaxError as e:
        pytest.skip(str(e))
    return bodies.load_body_model()

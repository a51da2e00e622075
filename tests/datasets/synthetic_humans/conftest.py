"""Shared fixture of the bodies and garments tests: the generated-body model."""

import pytest

from hdjax.datasets.synthetic_humans import bodies
from hdjax.errors import HdjaxError


@pytest.fixture(scope="module")
def model():
    """The generated-body model, or a skip when the `bodies` extra is missing."""
    pytest.importorskip("body_models")
    try:
        bodies.check_installed()
    except HdjaxError as e:
        pytest.skip(str(e))
    return bodies.load_body_model()

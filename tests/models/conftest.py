"""Fast compiles, as the Flax tests do: the programs here run once, on tiny inputs."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    # Only for these tests: the flag joins jit cache keys, so restoring it is safe.
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)

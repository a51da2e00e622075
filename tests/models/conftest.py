"""Fast compiles for tests, as the Flax tests do: the programs here run once on tiny inputs."""

import jax

jax.config.update("jax_disable_most_optimizations", True)

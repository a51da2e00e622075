"""ImplicitMLP: skip inputs, phi, phi_only."""

import jax
import numpy as np

from hdjax.models.implicit_mlp import ImplicitMLP

KEY = jax.random.PRNGKey(0)


def test_mlp_phi_and_skips():
    mlp = ImplicitMLP((5, 16, 8, 6, 1), res_layers=(1, 2), merge_layer=2)
    x = jax.random.normal(KEY, (7, 5))
    params = mlp.init(KEY, x)["params"]
    assert params["filters_1"]["kernel"].shape == (16 + 5, 8)
    assert params["filters_3"]["kernel"].shape == (6, 1)
    # Official init draws are small; scale them up so the activations are informative.
    params = jax.tree_util.tree_map(lambda p: p * 50 + 0.01, params)
    logit, phi = mlp.apply({"params": params}, x)
    assert logit.shape == (7, 1) and phi.shape == (7, 6)
    none, phi_only = mlp.apply({"params": params}, x, phi_only=True)
    assert none is None
    np.testing.assert_array_equal(phi, phi_only)
    # phi is the activated output of the merge layer: leaky ReLU leaves negatives at 1 %.
    assert float(phi.min()) < 0 and float(phi.min()) > 0.01 * -float(abs(phi).max()) - 1e-6

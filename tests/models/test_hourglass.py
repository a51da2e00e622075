"""HGFilter: shapes, every stack returned, official init, refused down types."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.models.hourglass import HGFilter

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("down,scale", [("ave_pool", 4), ("no_down", 2)])
def test_hgfilter_returns_every_stack(down, scale):
    f = HGFilter(num_stack=3, depth=2, last_ch=8, down_type=down, width=32, groups=4)
    x = jax.random.normal(KEY, (2, 32, 32, 9))
    params = jax.jit(f.init)(KEY, x)
    outs, normx = jax.jit(f.apply)(params, x)
    assert len(outs) == 3
    assert all(o.shape == (2, 32 // scale, 32 // scale, 8) for o in outs)
    assert normx.shape == (2, 32 // scale, 32 // scale, 16)
    # Later stacks refine the earlier ones: they differ.
    assert float(jnp.abs(outs[0] - outs[2]).max()) > 0


def test_hgfilter_official_init():
    f = HGFilter(num_stack=1, depth=1, last_ch=4, width=32, groups=4)
    p = jax.jit(f.init)(KEY, jnp.ones((1, 8, 8, 3)))["params"]
    np.testing.assert_array_equal(p["bn1"]["scale"], 1)
    np.testing.assert_array_equal(p["bn1"]["bias"], 0)
    np.testing.assert_array_equal(p["conv1"]["bias"], 0)
    kernels = np.concatenate(
        [np.ravel(v) for k, v in jax.tree_util.tree_leaves_with_path(p) if k[-1].key == "kernel"]
    )
    assert abs(kernels.std() - 0.02) < 0.001


def test_hgfilter_rejects_unknown_down_type():
    with pytest.raises(ValueError, match="down_type"):
        jax.eval_shape(
            HGFilter(1, 1, 4, down_type="conv64", width=32, groups=4).init,
            KEY,
            jnp.ones((1, 8, 8, 3)),
        )

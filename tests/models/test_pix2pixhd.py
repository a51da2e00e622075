"""pix2pixHD generator: shape and range, transposed conv vs torch, conv implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.models.layers import Numerics
from hdjax.models.pifuhd_official import _to_flax_layout
from hdjax.models.pix2pixhd import ConvTranspose3x3, GlobalGenerator

KEY = jax.random.PRNGKey(0)


def test_generator_shape_range_and_conv_impls_agree():
    x = jax.random.normal(KEY, (1, 16, 16, 3))
    g_xla = GlobalGenerator(ngf=4, n_down=2, n_blocks=1, numerics=Numerics(conv_impl="xla"))
    g_cpu = GlobalGenerator(ngf=4, n_down=2, n_blocks=1, numerics=Numerics(conv_impl="cpu"))
    params = jax.jit(g_xla.init)(KEY, x)
    params = jax.tree_util.tree_map(lambda p: p * 20, params)  # beyond init scale: contrast
    y = jax.jit(g_xla.apply)(params, x)
    assert y.shape == (1, 16, 16, 3)
    assert float(jnp.abs(y).max()) <= 1.0 and float(y.std()) > 0.01
    np.testing.assert_allclose(np.asarray(jax.jit(g_cpu.apply)(params, x)), y, atol=1e-5)


def test_conv_transpose_matches_torch():
    torch = pytest.importorskip("torch")
    conv = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
    x = np.random.default_rng(0).normal(size=(1, 6, 5, 7)).astype(np.float32)
    with torch.no_grad():
        ref = conv(torch.from_numpy(x)).numpy()
    params = {
        "conv": {
            "kernel": _to_flax_layout(conv.weight.detach().numpy(), "conv_transpose"),
            "bias": conv.bias.detach().numpy(),
        }
    }
    got = ConvTranspose3x3(4).apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref, atol=1e-5)

"""Shapes, stack outputs and per-module agreement with the official layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.geometry.grid_sample import grid_sample_align_corners
from hdjax.models.hourglass import HGFilter
from hdjax.models.implicit_mlp import ImplicitMLP
from hdjax.models.pix2pixhd import ConvTranspose3x3, GlobalGenerator

KEY = jax.random.PRNGKey(0)


def _init(module, *args):
    """Params from shapes + numpy draws: compiling flax's RNG init is slow on CPU."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(module.init, KEY, *args)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape).astype(np.float32)), shapes
    )


def _run(module, *args):
    return jax.jit(module.apply)(_init(module, *args), *args)


@pytest.mark.parametrize("down,scale", [("ave_pool", 4), ("no_down", 2)])
def test_hgfilter_returns_every_stack(down, scale):
    f = HGFilter(num_stack=3, depth=2, last_ch=8, down_type=down, width=32, groups=4)
    x = jnp.ones((2, 32, 32, 9))
    outs, normx = _run(f, x)
    assert len(outs) == 3
    assert all(o.shape == (2, 32 // scale, 32 // scale, 8) for o in outs)
    assert normx.shape == (2, 32 // scale, 32 // scale, 16)


def test_hgfilter_rejects_unknown_down_type():
    with pytest.raises(ValueError, match="down_type"):
        jax.eval_shape(
            HGFilter(1, 1, 4, down_type="conv64", width=32, groups=4).init,
            KEY,
            jnp.ones((1, 8, 8, 3)),
        )


def test_generator_shape_and_range():
    g = GlobalGenerator(ngf=4, n_down=2, n_blocks=1)
    y = _run(g, jax.random.normal(KEY, (1, 16, 16, 3)))
    assert y.shape == (1, 16, 16, 3)
    assert float(jnp.abs(y).max()) <= 1.0


def test_conv_transpose_matches_torch():
    torch = pytest.importorskip("torch")
    from hdjax.checkpoint.pifuhd import _to_flax_layout

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


def test_mlp_phi_and_skips():
    mlp = ImplicitMLP((5, 16, 8, 6, 1), res_layers=(1, 2), merge_layer=2)
    x = jax.random.normal(KEY, (7, 5))
    params = _init(mlp, x)["params"]
    assert params["filters_1"]["kernel"].shape == (16 + 5, 8)
    assert params["filters_3"]["kernel"].shape == (6, 1)
    logit, phi = mlp.apply({"params": params}, x)
    assert logit.shape == (7, 1) and phi.shape == (7, 6)
    none, phi_only = mlp.apply({"params": params}, x, phi_only=True)
    assert none is None
    np.testing.assert_array_equal(phi, phi_only)
    # phi is the activated output of the merge layer: leaky ReLU leaves negatives at 1 %.
    assert float(phi.min()) < 0 and float(phi.min()) > -0.5


def test_grid_sample_matches_torch_including_outside():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    feat = rng.normal(size=(2, 6, 9, 4)).astype(np.float32)
    uv = rng.uniform(-1.3, 1.3, size=(2, 50, 2)).astype(np.float32)
    uv[0, :4] = [[-1, -1], [1, 1], [-1, 1], [1, -1]]
    ref = torch.nn.functional.grid_sample(
        torch.from_numpy(feat.transpose(0, 3, 1, 2)),
        torch.from_numpy(uv[:, :, None]),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[..., 0].numpy()
    got = np.asarray(grid_sample_align_corners(jnp.asarray(feat), jnp.asarray(uv)))
    np.testing.assert_allclose(got.transpose(0, 2, 1), ref, atol=1e-5)


def test_grid_sample_corners_are_pixel_centres():
    feat = jnp.arange(12.0).reshape(1, 3, 4, 1)
    uv = jnp.array([[[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [2.0, 0.0]]])
    got = np.asarray(grid_sample_align_corners(feat, uv))[0, :, 0]
    np.testing.assert_allclose(got, [0, 3, 8, 11, 0])


@pytest.mark.parametrize("cls,cin,cout,k", [("ThinConv", 8, 3, 7), ("Im2colConv", 6, 10, 3)])
def test_matmul_convs_equal_xla_conv(cls, cin, cout, k):
    import flax.linen as nn

    from hdjax.models import layers

    x = jax.random.normal(KEY, (2, 12, 11, cin))
    ref = nn.Conv(cout, (k, k), padding="VALID")
    params = _init(ref, x)
    got = getattr(layers, cls)(cout, k).apply(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref.apply(params, x)), atol=1e-4)


def test_pifuhd_query_all_stacks_and_explicit_fine_calib():
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    from configs.pifuhd import get_config
    from hdjax.models.pifuhd import PIFuHD, PIFuHDArch

    arch = PIFuHDArch.from_config(get_config("tiny").model)
    model = PIFuHD(arch)
    img_c, img_f = jnp.ones((1, 64, 64, 3)), jnp.ones((1, 128, 128, 3))
    pts = jax.random.uniform(KEY, (1, 20, 3), minval=-1.2, maxval=1.2)
    calib = jnp.diag(jnp.array([1.0, -1.0, 1.0, 1.0]))[None]
    params = _init(model, img_c, img_f, pts, calib)
    out = jax.jit(model.apply)(params, img_c, img_f, pts, calib)
    assert out["coarse_logits"].shape == (arch.coarse.num_stack, 1, 20)
    assert out["fine_logits"].shape == (arch.fine.num_stack, 1, 20)
    assert out["phi"].shape == (1, 20, arch.coarse.mlp_dim[arch.coarse.merge_layer + 1])
    outside = np.asarray(jnp.any(jnp.abs(pts[..., :2]) > 1, -1))
    assert np.all(np.asarray(out["occ"])[outside] == 0)
    explicit = jax.jit(
        lambda p, c, f: model.apply(p, c, f, pts, calib, calib, method=PIFuHD.query)
    )(
        params,
        model.apply(
            params,
            img_c,
            model.apply(params, img_c, method=PIFuHD.normals),
            method=PIFuHD.coarse_features,
        ),
        model.apply(
            params,
            img_f,
            model.apply(params, img_c, method=PIFuHD.normals),
            method=PIFuHD.fine_features,
        ),
    )
    np.testing.assert_allclose(np.asarray(explicit["occ"]), np.asarray(out["occ"]), atol=1e-6)

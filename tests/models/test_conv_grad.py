"""`Numerics(conv_grad="matmul" | "split")`: nn.Conv's parameters and forward; matmul
gradients for 1x1 convs; with "split", the kernel gradients of stride-1 k x k convs summed
over pieces; lax's own conv (and gradients) for every other conv."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.pifuhd import get_config
from hdjax.models import layers
from hdjax.models.layers import Numerics, PointwiseMatmulGrad, SplitGrad
from hdjax.models.pifuhd import PIFuHD, PIFuHDArch, init_params, numerics_from_config

KEY = jax.random.PRNGKey(0)


def _value_and_grads(layer, params, x):
    """The layer's output and the gradients of a random projection of it w.r.t. (params, x)."""
    y = layer.apply(params, x)
    proj = jax.random.normal(jax.random.PRNGKey(1), y.shape)
    grads = jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) * proj), argnums=(0, 1))(params, x)
    return y, grads


def _random_params(layer, x):
    params = layer.init(KEY, x)
    keys = iter(jax.random.split(KEY, 8))
    return jax.tree_util.tree_map(lambda p: jax.random.normal(next(keys), p.shape), params)


def _assert_grads_close(got, ref, rtol):
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=rtol * scale)


@pytest.mark.parametrize(
    "cin,cout,use_bias,padding",
    [(256, 256, True, "SAME"), (64, 128, False, "SAME"), (32, 16, True, 0), (8, 3, True, "VALID")],
)
def test_pointwise_conv_equals_nn_conv(cin, cout, use_bias, padding):
    """Same parameters, the same forward bit for bit; gradients w.r.t. input, kernel and
    bias within float noise (measured max |diff| / max |grad| <= 5.1e-7)."""
    x = jax.random.normal(KEY, (2, 9, 7, cin))
    ref = Numerics().conv(cout, 1, "c", use_bias=use_bias, padding=padding)
    new = Numerics(conv_grad="matmul").conv(cout, 1, "c", use_bias=use_bias, padding=padding)
    assert new.conv_general_dilated_cls is PointwiseMatmulGrad
    params = _random_params(ref, x)
    assert jax.tree_util.tree_structure(new.init(KEY, x)) == jax.tree_util.tree_structure(params)
    y_ref, g_ref = jax.jit(lambda p, x: _value_and_grads(ref, p, x))(params, x)
    y_new, g_new = jax.jit(lambda p, x: _value_and_grads(new, p, x))(params, x)
    np.testing.assert_array_equal(np.asarray(y_new), np.asarray(y_ref))
    assert set(g_new[0]["params"]) == ({"kernel", "bias"} if use_bias else {"kernel"})
    _assert_grads_close(g_new, g_ref, rtol=3e-6)


@pytest.mark.parametrize(
    "grad,k,kw",
    [
        ("matmul", 3, dict(padding=1)),
        ("matmul", 7, dict(strides=2, padding=3)),
        ("matmul", 3, dict(padding=((1, 2), (1, 2)), input_dilation=2)),
        ("matmul", 1, dict(strides=2)),
        ("matmul", 1, dict(padding=1)),
        ("matmul", 1, dict(feature_group_count=2)),
        ("split", 7, dict(strides=2, padding=3)),
        ("split", 3, dict(padding=1, kernel_dilation=2)),
        ("split", 3, dict(padding=((1, 2), (1, 2)), input_dilation=2)),
        ("split", 3, dict(padding=1, feature_group_count=2)),
    ],
)
def test_other_convs_keep_xla_gradients(grad, k, kw):
    """Every conv the mode does not rewrite is lax's own: value and gradients bit for bit.
    ("matmul": all but plain 1x1 convs; "split": strided, dilated and grouped ones.)"""
    x = jax.random.normal(KEY, (1, 12, 10, 4))
    ref = Numerics().conv(6, k, "c", **kw)
    new = Numerics(conv_grad=grad).conv(6, k, "c", **kw)
    params = _random_params(ref, x)
    y_ref, g_ref = jax.jit(lambda p, x: _value_and_grads(ref, p, x))(params, x)
    y_new, g_new = jax.jit(lambda p, x: _value_and_grads(new, p, x))(params, x)
    np.testing.assert_array_equal(np.asarray(y_new), np.asarray(y_ref))
    for a, b in zip(
        jax.tree_util.tree_leaves(g_new), jax.tree_util.tree_leaves(g_ref), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _conv_and_grads(x, kernel, pads, proj):
    conv = lambda x, k: layers._conv_nhwc(x, k, pads, "highest")  # noqa: E731
    y, vjp = jax.vjp(conv, x, kernel)
    return y, vjp(proj)


@pytest.mark.parametrize(
    "shape,k,pads,pixels",
    [
        ((3, 11, 9, 5), 3, ((1, 1), (1, 1)), 40),  # 4 rows a piece, 3 pieces a sample (4+4+3)
        ((2, 13, 6, 4), 5, ((2, 0), (1, 3)), 6),  # one row a piece, uneven padding
        ((2, 8, 8, 3), 3, ((0, 0), (0, 0)), 1000),  # under the threshold: XLA's own
        ((1, 20, 7, 2), 3, ((1, 1), (1, 1)), 1),  # fewer pixels than a row: one row a piece
    ],
)
def test_kernel_grad_in_pieces_equals_xla(shape, k, pads, pixels):
    """The pieces cover every output pixel once: the sum is the kernel gradient of the whole
    conv within float noise (measured max |diff| / max |grad| <= 5.8e-7), and exactly XLA's
    when no split happens."""
    x = jax.random.normal(KEY, shape)
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, shape[-1], 6))
    y = layers._conv_nhwc(x, kernel, pads, "highest")
    g = jax.random.normal(jax.random.PRNGKey(2), y.shape)
    _, (_, ref) = _conv_and_grads(x, kernel, pads, g)
    got = jax.jit(layers.kernel_grad_in_pieces, static_argnums=(3, 4, 5))(
        x, g, kernel, pads, "highest", pixels
    )
    assert got.shape == ref.shape
    if np.prod(g.shape[:3]) <= pixels:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    else:
        _assert_grads_close(got, ref, rtol=5e-6)


@pytest.mark.parametrize("padding", [1, "SAME", "VALID", ((2, 0), (1, 3))])
def test_split_conv_equals_nn_conv(padding, monkeypatch):
    """A k x k conv under "split", with pieces of 24 pixels: the forward bit for bit, the
    gradients within float noise (measured max |diff| / max |grad| <= 4.1e-7)."""
    monkeypatch.setattr(layers, "PIECE_PIXELS", 24)
    x = jax.random.normal(KEY, (2, 10, 8, 5))
    ref = Numerics().conv(7, 3, "c", padding=padding)
    new = Numerics(conv_grad="split").conv(7, 3, "c", padding=padding)
    assert new.conv_general_dilated_cls is SplitGrad
    params = _random_params(ref, x)
    y_ref, g_ref = jax.jit(lambda p, x: _value_and_grads(ref, p, x))(params, x)
    y_new, g_new = jax.jit(lambda p, x: _value_and_grads(new, p, x))(params, x)
    np.testing.assert_array_equal(np.asarray(y_new), np.asarray(y_ref))
    _assert_grads_close(g_new, g_ref, rtol=5e-6)


def test_bfloat16_gradients_stay_bfloat16_then_float32_params():
    x = jnp.ones((1, 4, 4, 8))
    layer = Numerics(conv_grad="matmul", dtype="bfloat16").conv(16, 1, "c")
    params = layer.init(KEY, x)
    y, (g_params, g_x) = _value_and_grads(layer, params, x)
    assert y.dtype == jnp.bfloat16 and g_x.dtype == jnp.float32
    assert g_params["params"]["kernel"].dtype == jnp.float32
    assert float(jnp.max(jnp.abs(g_params["params"]["kernel"]))) > 0


def test_unknown_conv_grad_is_refused():
    with pytest.raises(ValueError, match="conv_grad='fast': expected one of"):
        Numerics(conv_grad="fast")


def test_auto_takes_split_gradients_for_training_on_cpu_only():
    cfg = get_config("tiny").model.numerics
    train_nx = numerics_from_config(cfg, training=True)
    infer_nx = numerics_from_config(cfg, training=False)
    cpu = jax.default_backend() == "cpu"
    assert train_nx.conv_grad == ("split" if cpu else "xla")
    assert (train_nx.conv_impl, infer_nx.conv_grad) == ("xla", "xla")
    cfg.conv_impl = "xla"
    assert numerics_from_config(cfg, training=True).conv_grad == "xla"


def _record_gradients() -> optax.GradientTransformation:
    """Passes updates through and keeps them (the step's gradients) as its state."""
    return optax.GradientTransformation(
        lambda params: jax.tree_util.tree_map(jnp.zeros_like, params),
        lambda updates, state, params=None: (updates, updates),
    )


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_a_train_step_equals_the_xla_gradient_step(stage, monkeypatch):
    """One step of the tiny model under "split" (1x1 matmul gradients, and k x k kernel
    gradients in pieces of 64 pixels, so that every map is split): the same loss, gradients
    within float noise of XLA's (measured max |diff| / max |grad| per parameter <= 8.3e-7),
    so the same parameters after an SGD step up to rounding. (Plain SGD: RMSprop turns the
    float noise of gradients that are zero in exact arithmetic, biases before a GroupNorm,
    into full steps.)"""
    from hdjax.train import loop, pifuhd

    monkeypatch.setattr(layers, "PIECE_PIXELS", 64)
    cfg = get_config("tiny")
    cfg.model.arch.update(coarse_size=32, fine_size=64)
    cfg.input.pipeline.update(crop_size=32, num_points=256)
    arch = PIFuHDArch.from_config(cfg.model.arch)
    params = init_params(arch, 0)
    tx = optax.chain(_record_gradients(), optax.sgd(1e-3))
    batch = pifuhd.random_batch(cfg, stage, np.random.default_rng(0), 2)
    out = {}
    for grad in ("xla", "split"):
        model = PIFuHD(arch, Numerics(conv_grad=grad))
        state = loop.TrainState(jnp.asarray(0), params, tx.init(params))
        new, metrics = jax.jit(pifuhd.make_train_step(model, stage, tx, cfg))(state, batch)
        out[grad] = (float(metrics["loss"]), new.opt_state[0], new.params)
    # Equal here (the forward is the same conv call); other CPUs may fuse the two programs
    # differently, so float noise is allowed.
    assert out["split"][0] == pytest.approx(out["xla"][0], rel=1e-6, abs=0)
    (_, g_new, p_new), (_, g_ref, p_ref) = out["split"], out["xla"]
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(g_ref)) > 0
    _assert_grads_close(g_new, g_ref, rtol=5e-6)
    for a, b in zip(*map(jax.tree_util.tree_leaves, (p_new, p_ref)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)

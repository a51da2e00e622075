"""Layers against PyTorch (when present), analytic facts, and the two conv implementations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.models.layers import (
    Im2colConv,
    Numerics,
    ThinConv,
    avg_pool2x,
    reflect_pad,
    resize_align_corners,
    upsample2x_bicubic,
)

KEY = jax.random.PRNGKey(0)


def test_align_corners_keeps_corner_pixels_and_linear_ramps():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    for kind in ("bilinear", "bicubic"):
        y = np.asarray(resize_align_corners(jnp.asarray(x), (9, 13), kind))
        np.testing.assert_allclose(
            y[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], atol=1e-6
        )
    ramp = np.arange(6, dtype=np.float32)[None, :, None, None] * np.ones((1, 6, 4, 1), np.float32)
    up = np.asarray(resize_align_corners(jnp.asarray(ramp), (11, 4), "bilinear"))
    np.testing.assert_allclose(up[0, :, 0, 0], np.arange(11) / 2, atol=1e-6)


def test_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, 8, 6, 5)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    ref = torch.nn.functional.interpolate(xt, scale_factor=2, mode="bicubic", align_corners=True)
    got = np.asarray(upsample2x_bicubic(jnp.asarray(x))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)
    ref = torch.nn.functional.interpolate(xt, size=(17, 9), mode="bilinear", align_corners=True)
    got = np.asarray(resize_align_corners(jnp.asarray(x), (17, 9), "bilinear"))
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(reflect_pad(jnp.asarray(x), 2)).transpose(0, 3, 1, 2),
        torch.nn.ReflectionPad2d(2)(xt).numpy(),
    )
    norm = Numerics().instance_norm("n")
    np.testing.assert_allclose(
        np.asarray(norm.apply({}, jnp.asarray(x))).transpose(0, 3, 1, 2),
        torch.nn.InstanceNorm2d(5)(xt).numpy(),
        atol=1e-5,
    )
    odd = np.random.default_rng(2).normal(size=(2, 7, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(avg_pool2x(jnp.asarray(odd))).transpose(0, 3, 1, 2),
        torch.nn.functional.avg_pool2d(torch.from_numpy(odd.transpose(0, 3, 1, 2)), 2, 2).numpy(),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("size", "kind"), [((16, 12), "bicubic"), ((17, 9), "bilinear"), ((5, 30), "bicubic")]
)
def test_resize_gradient_matches_torch(size, kind):
    """The hand-written gradient (the taps gathered from the input side) equals torch's
    autograd of the same interpolation, down- and upsampling."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 8, 6, 4)).astype(np.float32)
    w = rng.normal(size=(2, *size, 4)).astype(np.float32)
    got = jax.grad(lambda x: jnp.sum(resize_align_corners(x, size, kind) ** 2 * w))(x)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    out = torch.nn.functional.interpolate(xt, size=size, mode=kind, align_corners=True)
    (out**2 * torch.from_numpy(w.transpose(0, 3, 1, 2))).sum().backward()
    want = xt.grad.numpy().transpose(0, 2, 3, 1)
    err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
    assert err <= 1e-5  # measured <= 7.3e-7 (float32 sums in another order)


def test_instance_norm_has_no_parameters_and_large_offsets_stay_exact():
    # The two-pass variance: a large mean must not swamp the variance (fast variance would).
    x = 1e4 + jax.random.normal(KEY, (1, 8, 8, 2))
    norm = Numerics().instance_norm("n")
    assert norm.init(KEY, x) == {}
    y = np.asarray(norm.apply({}, x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-2)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-2)


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="unknown interpolation"):
        resize_align_corners(jnp.zeros((1, 4, 4, 1)), (8, 8), "nearest")


@pytest.mark.parametrize("cls,cin,cout,k", [(ThinConv, 8, 3, 7), (Im2colConv, 6, 10, 3)])
def test_matmul_convs_equal_xla_conv(cls, cin, cout, k):
    x = jax.random.normal(KEY, (2, 12, 11, cin))
    ref = Numerics().conv(cout, k, "c", padding="VALID")
    params = ref.init(KEY, x)
    params = jax.tree_util.tree_map(lambda p: p + jax.random.normal(KEY, p.shape), params)
    got = cls(cout, k).apply(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref.apply(params, x)), atol=1e-4)


@pytest.mark.parametrize("cpu_kernel", ["thin", "im2col"])
def test_valid_conv_implementations_share_parameters(cpu_kernel):
    x = jax.random.normal(KEY, (1, 9, 9, 4))
    xla = Numerics(conv_impl="xla").valid_conv(3, 3, "c", cpu_kernel)
    cpu = Numerics(conv_impl="cpu").valid_conv(3, 3, "c", cpu_kernel)
    assert isinstance(xla, nn.Conv) and not isinstance(cpu, nn.Conv)
    p_xla, p_cpu = xla.init(KEY, x), cpu.init(KEY, x)
    assert jax.tree_util.tree_structure(p_xla) == jax.tree_util.tree_structure(p_cpu)
    np.testing.assert_allclose(
        np.asarray(cpu.apply(p_xla, x)), np.asarray(xla.apply(p_xla, x)), atol=1e-5
    )


def test_official_init():
    """Kernels N(0, 0.02), biases 0 (the official `init_net`), in every conv kind."""
    x = jnp.ones((1, 16, 16, 64))
    for layer in (
        Numerics().conv(128, 3, "c"),
        Numerics(conv_impl="cpu").valid_conv(128, 3, "c", "im2col"),
        Numerics().dense(128, "d"),
    ):
        p = layer.init(KEY, x)["params"]
        assert abs(float(p["kernel"].std()) - 0.02) < 0.002
        assert abs(float(p["kernel"].mean())) < 0.002
        np.testing.assert_array_equal(p["bias"], 0)


@pytest.mark.parametrize(
    "field,value", [("conv_impl", "gpu"), ("dtype", "float64"), ("precision", "max")]
)
def test_numerics_refuses_unknown_choices(field, value):
    with pytest.raises(ValueError, match=f"{field}='{value}': expected one of"):
        Numerics(**{field: value})


def test_bfloat16_computes_in_bfloat16_with_float32_params():
    x = jnp.ones((1, 8, 8, 4))
    for nx in (Numerics(dtype="bfloat16"), Numerics(conv_impl="cpu", dtype="bfloat16")):
        layer = nx.valid_conv(8, 3, "c", "im2col")
        p = layer.init(KEY, x)
        assert p["params"]["kernel"].dtype == jnp.float32
        assert layer.apply(p, x).dtype == jnp.bfloat16

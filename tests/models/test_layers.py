"""Resampling and normalisation layers against PyTorch (when present) and analytic facts."""

import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.models.layers import (
    avg_pool2x,
    instance_norm,
    reflect_pad,
    resize_align_corners,
    upsample2x_bicubic,
)


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
    np.testing.assert_allclose(
        np.asarray(instance_norm(jnp.asarray(x))).transpose(0, 3, 1, 2),
        torch.nn.InstanceNorm2d(5)(xt).numpy(),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(avg_pool2x(jnp.asarray(x))).transpose(0, 3, 1, 2),
        torch.nn.functional.avg_pool2d(xt, 2, 2).numpy(),
        atol=1e-6,
    )


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="unknown interpolation"):
        resize_align_corners(jnp.zeros((1, 4, 4, 1)), (8, 8), "nearest")

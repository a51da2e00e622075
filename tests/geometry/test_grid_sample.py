"""Bilinear grid_sample (align_corners=True, zero padding) against PyTorch and by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.geometry.grid_sample import grid_sample_align_corners


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

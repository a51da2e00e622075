"""2K2K building blocks: PyTorch-exact sampling, windowed warps, strip-wise refiner blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from twok2k_fixtures import upsample_nearest2x

from hdjax.errors import HdjaxError
from hdjax.models import twok2k as K


def _similarities(rng, n, border=False):
    """n random canonical -> image similarities (B=1), some reaching past the image edge."""
    ang = rng.uniform(-np.pi, np.pi, n)
    s = rng.uniform(0.7, 2.0, n)
    t = rng.uniform(-1.1, 1.1, (n, 2)) if border else rng.uniform(-0.5, 0.5, (n, 2))
    th = np.stack(
        [
            np.stack([s * np.cos(ang), -s * np.sin(ang), t[:, 0]], -1),
            np.stack([s * np.sin(ang), s * np.cos(ang), t[:, 1]], -1),
        ],
        1,
    )
    return th.astype(np.float32)[None]


def test_sampling_matches_torch_bit_for_bit():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    img = rng.standard_normal((1, 2, 2048, 2048)).astype(np.float32)
    th = _similarities(rng, 2, border=True)[0]
    for theta in th:
        grid = F.affine_grid(torch.from_numpy(theta)[None], [1, 2, 2048, 2048], align_corners=False)
        ref = F.grid_sample(torch.from_numpy(img), grid, align_corners=False)[0].numpy()
        ones = F.grid_sample(torch.ones(1, 1, 2048, 2048), grid, align_corners=False)[0, 0]
        h, w = 352, 224
        r, c = 1024 - h // 2, 1024 - w // 2
        crop, o = jax.jit(K.sample_part_window, static_argnums=2)(
            jnp.asarray(img[0].transpose(1, 2, 0)), jnp.asarray(theta), (h, w)
        )
        # White noise amplifies any sample-position difference (a last-bit change of a
        # position costs ~2e-4 here); what is left is the rounding of the sums.
        np.testing.assert_allclose(
            crop, ref[:, r : r + h, c : c + w].transpose(1, 2, 0), atol=2e-6, rtol=0
        )
        np.testing.assert_array_equal(o, ones.numpy()[r : r + h, c : c + w])
    # The inverse transform as torch.linalg.inv computes it (last bits included).
    many = rng.uniform(-2, 2, (2000, 2, 3)).astype(np.float32)
    t = torch.from_numpy(many)
    inv = torch.linalg.inv(t[:, :, :2])
    ref = torch.cat([inv, -inv @ t[:, :, 2:]], 2).numpy()
    np.testing.assert_array_equal(jax.jit(K.invert_affine)(many), ref)
    # Non-antialiased bilinear resizes, 2048 -> 256 and 256 -> 2048.
    x = torch.from_numpy(img[:, :, :, :])
    down = F.interpolate(x, [256, 256], mode="bilinear", align_corners=False)[0].numpy()
    ours = jax.jit(K.downsample8_bilinear)(jnp.asarray(img.transpose(0, 2, 3, 1)))[0]
    np.testing.assert_array_equal(ours, down.transpose(1, 2, 0))
    up = F.interpolate(torch.from_numpy(down[None]), [2048, 2048], mode="bilinear")[0].numpy()
    ours = jax.jit(K.upsample_bilinear, static_argnums=1)(
        jnp.asarray(down.transpose(1, 2, 0)[None]), 2048
    )
    np.testing.assert_allclose(ours[0], up.transpose(1, 2, 0), atol=1e-6, rtol=0)


def test_windowed_warp_back_equals_full_frame():
    """Boxes from warp_boxes lose nothing: the same sums as warping every image pixel."""
    rng = np.random.default_rng(1)
    theta = _similarities(rng, K.N_PARTS, border=True)
    inv = K.invert_affine(jnp.asarray(theta))[0]
    boxes = K.warp_boxes(theta)
    assert sum(h * w for h, w in boxes.sizes) < 0.6 * K.N_PARTS * K.CANVAS**2
    warp = jax.jit(K.warp_back_part, static_argnums=4)
    for i in (0, 3, 11):  # a large, a thin and a small window
        hw = K.PART_CROP[i]
        weight = K.blend_weight(jnp.ones((1, *hw)))[0]
        pmap = jnp.concatenate(
            [jnp.asarray(rng.uniform(0, 1, (*hw, 6)), jnp.float32), weight[..., None]], -1
        )
        acc = jnp.zeros((K.CANVAS, K.CANVAS, 7))
        box = warp(acc, pmap, inv[i], jnp.asarray(boxes.offsets[0, i]), boxes.sizes[i])
        full = warp(acc, pmap, inv[i], jnp.zeros(2, jnp.int32), (K.CANVAS, K.CANVAS))
        np.testing.assert_array_equal(box, full)
        assert float(full[..., 6].max()) > 0.5  # the part does land in the image


def test_blend_weight_is_the_blurred_inner_window():
    ones = jnp.ones((1, 64, 48))
    w = np.asarray(K.blend_weight(ones))[0]
    # The 8-pixel frame is cut, the blur reaches 7 pixels back into it: zero outer ring only.
    assert np.all(w[0] == 0) and np.all(w[:, 0] == 0) and np.all(w[1, 1:-1] > 0)
    np.testing.assert_allclose(w[32, 24], 1.0, atol=1e-6)
    np.testing.assert_allclose(K.gaussian_taps().sum(), 1.0, atol=1e-6)


def test_strip_wise_refiner_block_equals_whole():
    model = K.Refine2048()
    rng = np.random.default_rng(2)
    shapes = [(1, 8, 8, 2), (1, 16, 16, 6), (1, 32, 32, 6), (1, 64, 64, 6)]
    d, n1, n2, n = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes)
    variables = model.init(jax.random.PRNGKey(0), d, n1, n2, n)
    d2 = model.apply(
        variables,
        2,
        model.apply(variables, 1, d, n1, method=K.Refine2048.stage),
        n2,
        method=K.Refine2048.stage,
    )

    def stage3(dp, nk):
        return model.apply(variables, 3, dp, nk, method=K.Refine2048.stage)

    whole = stage3(d2, n)
    strips = K.strip_apply(stage3, d2, n, strip=16, halo=4)
    np.testing.assert_allclose(strips, whole, atol=1e-5, rtol=0)
    assert float(jnp.abs(whole).max()) > 0.1


def test_bad_inputs_are_refused():
    with pytest.raises(HdjaxError, match=r"image must be \(B, S, S, 3\)"):
        K.twok2k_forward({}, np.zeros((1, 1024, 512, 3), np.float32), np.zeros((1, 12, 2, 3)))
    with pytest.raises(HdjaxError, match="multiple of 128"):
        K.twok2k_forward({}, np.zeros((1, 1000, 1000, 3), np.float32), np.zeros((1, 12, 2, 3)))
    theta = _similarities(np.random.default_rng(3), K.N_PARTS)
    theta[0, 3, 0, 0] = np.nan
    with pytest.raises(HdjaxError, match="non-finite"):
        K.warp_boxes(theta)


def test_upsample_conv_equals_conv_of_upsampled():
    import flax.linen as nn

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 12, 10, 5)), jnp.float32)
    up = K.UpsampleConv3x3(7)
    variables = up.init(jax.random.PRNGKey(0), x)
    plain = nn.Conv(7, (3, 3), padding="SAME", precision="highest")
    ref = plain.apply(variables, upsample_nearest2x(x))
    np.testing.assert_allclose(up.apply(variables, x), ref, atol=2e-5, rtol=0)


def test_fused_strip_wise_blocks_equal_whole():
    model = K.Refine2048()
    rng = np.random.default_rng(5)
    shapes = [(1, 8, 8, 2), (1, 16, 16, 6), (1, 32, 32, 6), (1, 64, 64, 6)]
    d, n1, n2, n = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes)
    variables = model.init(jax.random.PRNGKey(1), d, n1, n2, n)

    def stage(k):
        return lambda dp, nk: model.apply(variables, k, dp, nk, method=K.Refine2048.stage)

    d1 = stage(1)(d, n1)
    whole = stage(3)(stage(2)(d1, n2), n)
    fused = K.strip_apply2(stage(2), stage(3), d1, n2, n, strip=8, halo=4)
    np.testing.assert_allclose(fused, whole, atol=1e-5, rtol=0)


def test_geometry_scales_the_official_sizes():
    assert K.geometry(2048) is K.OFFICIAL
    assert K.OFFICIAL.part_crop == K.PART_CROP
    g = K.geometry(256)
    assert g.low_res == 32 and len(g.part_crop) == K.N_PARTS
    # Official crops / 8, rounded to the part nets' multiple of 8 (face 368x320 -> 48x40).
    assert g.crops[0] == (48, 40) and all(h % 8 == 0 and w % 8 == 0 for h, w in g.crops)
    assert (g.blur_frame, g.blur_taps) == (1, 3) and g.blur_sigma == pytest.approx(0.625)
    with pytest.raises(HdjaxError, match="multiple of 128"):
        K.geometry(200)


def test_numerics_from_config_and_bfloat16_nets():
    from hdjax.configs.twok2k import get_config
    from hdjax.models.layers import Numerics

    cfg = get_config()
    assert K.numerics_from_config(cfg.model.numerics) == Numerics()  # float32, "highest"
    cfg.model.numerics.dtype = "float64"
    with pytest.raises(HdjaxError, match=r"model\.numerics\.dtype='float64'"):
        K.numerics_from_config(cfg.model.numerics)
    # bfloat16 computation: same parameters (float32), float32 outputs near float32's.
    crops = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (1, 16, 16, 6)), jnp.float32)
    variables = K.init_variables(jax.random.PRNGKey(2), width=4)
    out = {}
    for dtype in ("float32", "bfloat16"):
        model = K.TwoK2K(Numerics(dtype=dtype), width=4)
        out[dtype] = model.apply(variables, "arm", crops, method=K.TwoK2K.part)
        assert out[dtype].dtype == jnp.float32
    scale = float(jnp.abs(out["float32"]).max())
    assert scale > 0.01
    assert float(jnp.abs(out["bfloat16"] - out["float32"]).max()) < 0.05 * scale

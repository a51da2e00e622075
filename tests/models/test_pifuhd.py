"""PIFuHD on the tiny config: stacks, the two calibrations, the fine-level crop, the init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.pifuhd import get_config
from hdjax.models.layers import Numerics
from hdjax.models.pifuhd import PIFuHD, PIFuHDArch, init_params, param_shapes

KEY = jax.random.PRNGKey(0)
EVAL = jnp.diag(jnp.array([1.0, -1.0, 1.0, 1.0]))[None]
# Zooms x and y by 2 about the centre: the calibration of the crop [-0.5, 0.5]² of the image.
ZOOM = jnp.diag(jnp.array([2.0, -2.0, 1.0, 1.0]))[None]


@pytest.fixture(scope="module")
def tiny():
    arch = PIFuHDArch.from_config(get_config("tiny").model.arch)
    # Official init is nearly constant; larger weights give the field contrast.
    params = jax.tree_util.tree_map(lambda p: p * 25 + 0.01, init_params(arch, 0))
    rng = np.random.default_rng(0)
    img_c = jnp.asarray(rng.uniform(-1, 1, (1, 64, 64, 3)), jnp.float32)
    img_f = jnp.asarray(rng.uniform(-1, 1, (1, 128, 128, 3)), jnp.float32)
    pts = jax.random.uniform(KEY, (1, 40, 3), minval=-1.2, maxval=1.2)
    return arch, {"params": params}, img_c, img_f, pts


def _apply(model, params, *args, method, **kw):
    return jax.jit(lambda p, *a: model.apply(p, *a, method=method, **kw))(params, *args)


def _features(model, v, img_c, img_f, crop_offset=None):
    normals = _apply(model, v, img_c, method=PIFuHD.normals)
    coarse = _apply(model, v, img_c, normals, method=PIFuHD.coarse_features)
    fine = _apply(model, v, img_f, normals, crop_offset, method=PIFuHD.fine_features)
    return normals, coarse, fine


def test_forward_returns_every_stack_and_masks_outside(tiny):
    arch, v, img_c, img_f, pts = tiny
    model = PIFuHD(arch)
    out = jax.jit(lambda v: model.apply(v, img_c, img_f, pts, calib_global=EVAL, calib_local=EVAL))(
        v
    )
    assert out["coarse_logits"].shape == (arch.coarse.num_stack, 1, 40)
    assert out["fine_logits"].shape == (arch.fine.num_stack, 1, 40)
    assert out["phi"].shape == (1, 40, arch.coarse.mlp_dim[arch.coarse.merge_layer + 1])
    outside = np.asarray(jnp.any(jnp.abs(pts[..., :2]) > 1, -1))
    assert np.all(np.asarray(out["occ"])[outside] == 0)
    assert np.asarray(out["occ"])[~outside].std() > 0.01
    # The stage methods compose to the same result.
    _, coarse, fine = _features(model, v, img_c, img_f)
    staged = _apply(
        model, v, coarse, fine, pts, method=PIFuHD.query, calib_global=EVAL, calib_local=EVAL
    )
    np.testing.assert_allclose(staged["occ"], out["occ"], atol=1e-6)
    occ = _apply(
        model,
        v,
        coarse[-1],
        fine[-1],
        pts,
        method=PIFuHD.occupancy,
        calib_global=EVAL,
        calib_local=EVAL,
    )
    np.testing.assert_allclose(occ, out["occ"], atol=1e-6)


def test_calib_global_drives_the_coarse_level_and_calib_local_the_fine(tiny):
    """Swapping the two calibrations must change what each level sees."""
    arch, v, img_c, img_f, pts = tiny
    model = PIFuHD(arch)
    _, coarse, fine = _features(model, v, img_c, img_f)

    def query(g, l):
        return _apply(
            model, v, coarse, fine, pts, method=PIFuHD.query, calib_global=g, calib_local=l
        )

    base, local_zoom, global_zoom = query(EVAL, EVAL), query(EVAL, ZOOM), query(ZOOM, EVAL)
    # calib_local: only the fine level moves; its box is the crop.
    np.testing.assert_array_equal(local_zoom["coarse_logits"], base["coarse_logits"])
    np.testing.assert_array_equal(local_zoom["phi"], base["phi"])
    assert float(jnp.abs(local_zoom["fine_logits"] - base["fine_logits"]).max()) > 1e-3
    in_crop = np.all(np.abs(np.asarray(pts[0, :, :2])) <= 0.5, -1)
    np.testing.assert_array_equal(np.asarray(local_zoom["in_bb_fine"][0]), in_crop)
    assert not np.array_equal(np.asarray(base["in_bb_fine"][0]), in_crop)
    # calib_global: the coarse level (and phi, hence the fine logits) moves, not the fine box.
    assert float(jnp.abs(global_zoom["coarse_logits"] - base["coarse_logits"]).max()) > 1e-3
    assert float(jnp.abs(global_zoom["fine_logits"] - base["fine_logits"]).max()) > 1e-3
    np.testing.assert_array_equal(global_zoom["in_bb_fine"], base["in_bb_fine"])
    # Keyword-only: a batch cannot feed them in the wrong order by position.
    with pytest.raises(TypeError):
        model.apply(v, coarse, fine, pts, EVAL, EVAL, method=PIFuHD.query)


def test_fine_level_crops_the_upsampled_normals(tiny):
    """As the official `filter_local(images, rect)`: normals upsampled to fine_size, then the
    crop's window; the whole fine image (no offset) keeps the resize to its own size."""
    arch, v, img_c, img_f, _ = tiny
    model = PIFuHD(arch)
    normals, _, whole = _features(model, v, img_c, img_f)
    _, _, at_origin = _features(model, v, img_c, img_f, jnp.zeros((1, 2), jnp.int32))
    np.testing.assert_allclose(at_origin[-1], whole[-1], atol=1e-6)

    half = arch.fine_size // 2
    offsets = jnp.array([[32, 48], [0, 64]], jnp.int32)
    crops = jnp.stack([img_f[0, 32 : 32 + half, 48 : 48 + half], img_f[0, :half, 64:]])
    two = [jnp.concatenate([n, n]) for n in normals]
    x = _apply(model, v, crops, two, offsets, method=PIFuHD.fine_input)
    from hdjax.models.layers import resize_align_corners

    big = resize_align_corners(jnp.concatenate(two, -1), (arch.fine_size,) * 2, "bilinear")
    np.testing.assert_array_equal(x[..., :3], crops)
    np.testing.assert_allclose(x[0, ..., 3:], big[0, 32 : 32 + half, 48 : 48 + half], atol=1e-6)
    np.testing.assert_allclose(x[1, ..., 3:], big[1, :half, 64:], atol=1e-6)
    feats = _apply(model, v, crops, two, offsets, method=PIFuHD.fine_features)
    assert feats[-1].shape == (2, half // 2, half // 2, arch.fine.hg_dim)


def test_conv_implementations_give_the_same_model(tiny):
    arch, v, img_c, img_f, _ = tiny
    outs = []
    for impl in ("xla", "cpu"):
        model = PIFuHD(arch, Numerics(conv_impl=impl))
        normals, coarse, fine = _features(model, v, img_c, img_f)
        outs.append((normals, coarse[-1], fine[-1]))
    leaves = [jax.tree_util.tree_leaves(o) for o in outs]
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(a).max()))


def test_model_init_is_the_official_init(tiny):
    arch = tiny[0]
    model = PIFuHD(arch)
    args = (jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 1, 3)))
    params = jax.jit(lambda k: model.init(k, *args, calib_global=EVAL, calib_local=EVAL))(KEY)
    params = params["params"]
    drawn = init_params(arch, 0)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(drawn)
    for tree in (params, drawn):
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        kernels = np.concatenate([np.ravel(x) for p, x in leaves if p[-1].key == "kernel"])
        assert abs(kernels.std() - 0.02) < 0.001 and abs(kernels.mean()) < 0.001
        for p, x in leaves:
            if p[-1].key != "kernel":
                np.testing.assert_array_equal(x, 1.0 if p[-1].key == "scale" else 0.0)


def test_init_params_subtree_equals_the_full_tree():
    arch = PIFuHDArch.from_config(get_config("tiny").model.arch)
    full = init_params(arch, 3)
    for names in [("netG", "netF"), ("image_filter",), ("netG", "mlp")]:
        sub = init_params(arch, 3, names)
        want = full
        for k in names:
            want = want[k]
        jax.tree_util.tree_map(np.testing.assert_array_equal, sub, want)
    other = init_params(arch, 4, ("mlp",))
    assert not np.array_equal(other["filters_0"]["kernel"], full["mlp"]["filters_0"]["kernel"])
    shapes = jax.tree_util.tree_map(lambda s: s.shape, param_shapes(arch))
    assert shapes == jax.tree_util.tree_map(lambda x: x.shape, full)


def test_bfloat16_model_tracks_float32(tiny):
    """bfloat16 computation, float32 params and occupancy; logits follow float32's (measured:
    correlation 0.997, max error 9 % of the range, with these sharp random weights)."""
    arch, v, img_c, img_f, pts = tiny
    outs = []
    for dtype in ("float32", "bfloat16"):
        model = PIFuHD(arch, Numerics(dtype=dtype))
        outs.append(
            jax.jit(
                lambda v, m=model: m.apply(
                    v, img_c, img_f, pts, calib_global=EVAL, calib_local=EVAL
                )
            )(v)
        )
    assert outs[1]["fine_logits"].dtype == jnp.bfloat16 and outs[1]["occ"].dtype == jnp.float32
    for key in ("coarse_logits", "fine_logits"):
        a, b = (np.asarray(o[key], np.float32).ravel() for o in outs)
        assert np.corrcoef(a, b)[0, 1] > 0.95


def test_depth_feature_far_from_the_official_scale_warns(caplog):
    from hdjax.configs.pifuhd import get_config
    from hdjax.models.pifuhd import check_config

    cfg = get_config("tiny")
    with caplog.at_level("WARNING"):
        check_config(cfg)  # z_size 25 at coarse_size 64: the official z * 1.28
    assert "depth feature" not in caplog.text
    cfg.model.arch.z_size = 200.0  # the old tiny config: z * 0.16, depth never learned
    with caplog.at_level("WARNING"):
        check_config(cfg)
    assert "depth feature z * 0.16" in caplog.text and "z_size=25 keeps" in caplog.text

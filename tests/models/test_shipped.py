"""Shipped weights files: round trip, and every bad file as one line naming it."""

import os

import jax
import numpy as np
import pytest

from hdjax import configlib
from hdjax.configs.pifuhd import get_config
from hdjax.errors import HdjaxError
from hdjax.models import shipped
from hdjax.models.pifuhd import PIFuHDArch, init_params, param_shapes


@pytest.fixture(scope="module")
def tiny():
    arch = PIFuHDArch.from_config(get_config("tiny").model.arch)
    return arch, configlib.to_dict(arch), init_params(arch, 0)


def test_round_trip_in_float16(tmp_path, tiny):
    arch, arch_dict, params = tiny
    path = tmp_path / "w.npz"
    shipped.save(path, "pifuhd", arch_dict, params, about={"steps": 3})
    assert shipped.read_meta(path)["about"] == {"steps": 3}
    back = shipped.load(path, "pifuhd", arch_dict, param_shapes(arch))
    leaves = jax.tree_util.tree_leaves
    for want, got in zip(leaves(params), leaves(back), strict=True):
        assert got.dtype == np.float32
        # float16 keeps 11 significant bits: relative error <= 2**-11 (+ subnormals near 0).
        np.testing.assert_allclose(got, want, rtol=2**-11, atol=6e-8)


def test_float32_storage_is_exact(tmp_path, tiny):
    arch, arch_dict, params = tiny
    shipped.save(tmp_path / "w.npz", "pifuhd", arch_dict, params, dtype="float32")
    back = shipped.load(tmp_path / "w.npz", "pifuhd", arch_dict, param_shapes(arch))
    leaves = jax.tree_util.tree_leaves
    for want, got in zip(leaves(params), leaves(back), strict=True):
        np.testing.assert_array_equal(got, want)


def test_bad_files_are_one_line_naming_the_file(tmp_path, tiny):
    arch, arch_dict, params = tiny
    want = param_shapes(arch)
    good = tmp_path / "w.npz"
    shipped.save(good, "pifuhd", arch_dict, params)

    def fails(path, pattern, model="pifuhd", arch_asked=arch_dict):
        with pytest.raises(HdjaxError, match=pattern) as e:
            shipped.load(path, model, arch_asked, want)
        assert str(path) in str(e.value) and "\n" not in str(e.value)

    fails(tmp_path / "gone.npz", "weights file is missing")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fails(cut, "truncated or not hdjax's")
    fails(good, r"weights are 'pifuhd''s, the config is twok2k", model="twok2k")
    other = dict(arch_dict, coarse_size=128)
    fails(
        good, r"another architecture \(arch\.coarse_size: file 64, config 128\)", arch_asked=other
    )
    # A file whose arch says tiny but whose tensors are not (a hand-edited or mixed file).
    params["mlp"]["filters_0"]["kernel"] = np.zeros((3, 3), np.float32)
    shipped.save(tmp_path / "odd.npz", "pifuhd", arch_dict, params)
    fails(
        tmp_path / "odd.npz", r"parameter \['mlp'\]\['filters_0'\]\['kernel'\] has shape \(3, 3\)"
    )


def test_no_weights_is_an_error_not_random():
    with pytest.raises(HdjaxError, match=r"ships none.*--config\.checkpoint=random"):
        shipped.resolve_checkpoint("", "", "pifuhd")
    assert shipped.resolve_checkpoint("random", "x", "pifuhd") == "random"
    assert shipped.resolve_checkpoint("", "pifuhd_x", "pifuhd") == shipped.path_of("pifuhd_x")


def test_the_small_model_ships_and_is_the_default_of_reconstruct(tmp_path):
    """`pifuhd:small` reconstructs with its shipped weights when no checkpoint is given, and
    what it makes of the embedded example photo is a body, not the silhouette extruded
    through the cube (the failure of untrained depth, issue #21)."""
    import trimesh

    from hdjax.reconstruction import pifuhd as recon

    cfg = get_config("small")
    assert cfg.checkpoint == "" and cfg.weights
    path = shipped.path_of(cfg.weights)
    assert os.path.getsize(path) <= 15 * 2**20  # travels to a device machine with the tree
    meta = shipped.read_meta(path)
    assert meta["model"] == "pifuhd" and meta["arch"] == configlib.to_dict(
        PIFuHDArch.from_config(cfg.model.arch)
    )
    assert set(meta["about"]["held_out"]) >= {"p2s_cm", "chamfer_cm", "iou"}
    cfg.reconstruct.resolution, cfg.reconstruct.init_resolution = 64, 16
    recon.reconstruct(cfg, str(tmp_path))
    mesh = trimesh.load(tmp_path / "reconstruct" / "synthetic_body.obj", process=False)
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert len(mesh.faces) > 1000
    # A standing body is far less deep than tall (measured on the example: 0.26 of its height
    # at R = 256); an extruded silhouette spans the whole cube (depth ≥ height).
    assert extent[2] < 0.5 * extent[1], extent

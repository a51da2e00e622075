"""The official 2K2K phase-2 checkpoint: key mapping, container loading, clear refusals."""

import jax
import numpy as np
import pytest
from twok2k_fixtures import variables_to_state_dict

from hdjax.errors import HdjaxError
from hdjax.models.twok2k_official import (
    convert_state_dict,
    load,
    load_converted,
    official_key,
    official_shapes,
    save_converted,
    validate_state_dict,
)


@pytest.fixture(scope="module")
def shapes():
    return official_shapes()


def _lazy_state_dict(shapes):
    """Every tensor a zero-stride view of one value (its index), so no memory is spent."""
    sd = {k: np.broadcast_to(np.float32(i), s) for i, (k, s) in enumerate(sorted(shapes.items()))}
    sd |= {
        k.replace("running_mean", "num_batches_tracked"): np.zeros((), np.int64)
        for k in shapes
        if k.endswith("running_mean")
    }
    return sd


def test_key_names_match_the_official_layout(shapes):
    # 1504 official entries = 1292 read tensors + 212 num_batches_tracked buffers.
    assert len(shapes) == 1292
    assert sum(np.prod(s) for k, s in shapes.items() if "running" not in k) == 77655212
    assert official_key("params", ("img2normal_arm", "Att3", "psi_bn", "scale")) == (
        "img2normal_arm.Att3.psi.1.weight",
        "vector",
    )
    assert official_key("params", ("refine", "depth2", "conv", "kernel")) == (
        "refine.depth2.up.1.weight",
        "conv",
    )
    assert official_key("params", ("img2normal_face", "Up4", "bn", "bias"))[0] == (
        "img2normal_face.Up4.up.2.bias"
    )
    assert official_key("batch_stats", ("refine", "normal3", "bn", "var"))[0] == (
        "refine.normal3.conv.1.running_var"
    )
    assert official_key("params", ("img2normal_down", "Conv_1x1", "conv", "bias"))[0] == (
        "img2normal_down.Conv_1x1.conv.0.bias"
    )
    assert official_key("params", ("ImgNorm_to_Dep", "Conv_1x1", "kernel")) == (
        "ImgNorm_to_Dep.Conv_1x1.weight",
        "conv",
    )
    assert shapes["ImgNorm_to_Dep.Up_conv5.conv.0.weight"] == (512, 1024, 3, 3)
    assert shapes["img2normal_down.Conv1.conv.0.weight"] == (64, 3, 3, 3)
    assert shapes["img2normal_face.Conv1.conv.0.weight"] == (64, 6, 3, 3)


def test_round_trip_through_the_official_layout(shapes):
    rng = np.random.default_rng(0)
    sd = _lazy_state_dict(shapes)
    # Real, distinct values where the layout matters (a conv kernel, BN statistics).
    for k in (
        "refine.merge2_1.conv.3.weight",
        "refine.merge2_1.conv.4.running_var",
        "img2normal_leg.Att2.W_x.1.running_mean",
    ):
        sd[k] = rng.standard_normal(shapes[k]).astype(np.float32)
    variables = convert_state_dict({f"module.{k}": v for k, v in sd.items()})
    kernel = np.asarray(variables["params"]["refine"]["merge2_1"]["conv1"]["kernel"])
    np.testing.assert_array_equal(kernel, sd["refine.merge2_1.conv.3.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        variables["batch_stats"]["refine"]["merge2_1"]["bn1"]["var"],
        sd["refine.merge2_1.conv.4.running_var"],
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["img2normal_leg"]["Att2"]["x_bn"]["mean"],
        sd["img2normal_leg.Att2.W_x.1.running_mean"],
    )
    back = variables_to_state_dict(variables)
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_refusals_name_the_file_and_key(shapes):
    sd = _lazy_state_dict(shapes)
    missing = dict(sd)
    del missing["img2normal_shoe.Att2.psi.1.running_var"]
    with pytest.raises(
        HdjaxError, match=r"^c\.pth: tensor img2normal_shoe\.Att2\.psi\.1\.running_var is missing"
    ):
        validate_state_dict(missing, "c.pth")
    bad = dict(sd, **{"refine.depth1.up.1.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(
        HdjaxError,
        match=r"depth1\.up\.1\.weight has shape \(32, 3, 3, 3\), 2K2K expects \(32, 2, 3, 3\)",
    ):
        validate_state_dict(bad, "c.pth")
    extra = dict(sd, **{"refine.merge4_1.conv.0.weight": np.zeros(1, np.float32)})
    with pytest.raises(HdjaxError, match=r"unexpected tensors refine\.merge4_1\.conv\.0\.weight"):
        validate_state_dict(extra, "c.pth")
    phase1 = {k: v for k, v in sd.items() if not k.startswith("refine.")}
    with pytest.raises(HdjaxError, match="phase-1 checkpoint"):
        validate_state_dict(phase1, "c.pth")
    pifuhd = {"netG.image_filter.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    with pytest.raises(HdjaxError, match=r"^pifuhd\.pt: not a 2K2K checkpoint"):
        validate_state_dict(pifuhd, "pifuhd.pt")


def test_loads_a_torch_saved_checkpoint_with_optimiser_state(tmp_path, shapes):
    torch = pytest.importorskip("torch")
    sd = {}
    rng = np.random.default_rng(1)
    for i, (k, s) in enumerate(sorted(shapes.items())):
        if k.startswith("refine."):
            sd[k] = torch.from_numpy(rng.standard_normal(s).astype(np.float32))
        else:  # a one-element storage viewed with zero strides keeps the file small
            sd[k] = torch.full((), float(i)).expand(s)
        if k.endswith("running_mean"):
            sd[k.replace("running_mean", "num_batches_tracked")] = torch.tensor(7)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=1e-4)
    w.sum().backward()
    opt.step()
    ckpt = {
        "epoch": 12,
        "model": "Model_2K2K",
        "best_loss": 0.25,
        "model_state_dict": {f"module.{k}": v for k, v in sd.items()},
        "optimizer_state_dict": opt.state_dict(),
    }
    path = tmp_path / "ckpt_bg_mask.pth.tar"
    torch.save(ckpt, path)
    assert path.stat().st_size < 8 << 20
    variables = load(path)
    np.testing.assert_array_equal(
        variables["params"]["refine"]["merge3_2"]["kernel"],
        sd["refine.merge3_2.weight"].numpy().transpose(2, 3, 1, 0),
    )
    key = "img2normal_arm.Up_conv3.conv.4.running_mean"
    np.testing.assert_array_equal(
        variables["batch_stats"]["img2normal_arm"]["Up_conv3"]["bn1"]["mean"], sd[key].numpy()
    )
    # A PIFuHD checkpoint handed to 2K2K: one line naming the file.
    other = tmp_path / "pifuhd.pt"
    torch.save({"model_state_dict": {"netG.image_filter.conv1.weight": torch.zeros(2)}}, other)
    with pytest.raises(HdjaxError, match=r"pifuhd\.pt: not a 2K2K checkpoint"):
        load(other)


def test_save_converted_round_trip(tmp_path, shapes):
    variables = convert_state_dict(_lazy_state_dict(shapes))
    save_converted(tmp_path / "conv", variables)
    again = load_converted(tmp_path / "conv")
    for a, b in zip(
        jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(again), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(HdjaxError, match="refusing to overwrite"):
        save_converted(tmp_path / "conv", variables)

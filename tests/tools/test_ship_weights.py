"""A run's kept best becomes the shipped weights file, with its held-out metrics inside."""

import json

import jax
import numpy as np
import pytest

from hdjax import configlib
from hdjax.configs.pifuhd import get_config
from hdjax.errors import HdjaxError
from hdjax.models import pifuhd_official, shipped
from hdjax.models.pifuhd import PIFuHDArch, init_params, param_shapes
from hdjax.tools import ship_weights


def test_ship_the_kept_best(tmp_path):
    cfg = get_config("tiny")
    arch = PIFuHDArch.from_config(cfg.model.arch)
    params = init_params(arch, 3)
    with pytest.raises(HdjaxError, match="no kept best checkpoint"):
        ship_weights.ship(cfg, str(tmp_path))
    pifuhd_official.save_converted(tmp_path / "best", params, arch)
    (tmp_path / "best" / "best.json").write_text(json.dumps({"step": 7, "metric": "chamfer_cm"}))
    (tmp_path / "eval" / "step_7").mkdir(parents=True)
    summary = {"chamfer_cm": 1.5, "iou": 0.8, "subjects": [{"subject": "a"}]}
    (tmp_path / "eval" / "step_7" / "metrics.json").write_text(json.dumps(summary))
    out = ship_weights.ship(cfg, str(tmp_path), str(tmp_path / "w.npz"), "float32")
    meta = shipped.read_meta(out)
    assert meta["about"] == {
        "step": 7,
        "best_metric": "chamfer_cm",
        "held_out": {"chamfer_cm": 1.5, "iou": 0.8},
    }
    back = shipped.load(out, "pifuhd", configlib.to_dict(arch), param_shapes(arch))
    leaves = jax.tree_util.tree_leaves
    for want, got in zip(leaves(params), leaves(back), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))


def test_ship_a_twok2k_run_and_reconstruct_from_it(tmp_path):
    from hdjax.configs.twok2k import get_config as twok2k_config
    from hdjax.models import twok2k_official
    from hdjax.models.twok2k.networks import init_variables
    from hdjax.reconstruction import twok2k as reconstruct_twok2k

    cfg = twok2k_config("tiny")
    variables = init_variables(jax.random.PRNGKey(3), width=cfg.model.width)
    twok2k_official.save_converted(tmp_path / "best", variables)
    (tmp_path / "best" / "best.json").write_text(json.dumps({"step": 9, "metric": "chamfer_cm"}))
    (tmp_path / "eval" / "step_9").mkdir(parents=True)
    (tmp_path / "eval" / "step_9" / "metrics.json").write_text(json.dumps({"chamfer_cm": 2.0}))
    out = ship_weights.ship(cfg, str(tmp_path), str(tmp_path / "w.npz"), "float32")
    assert shipped.read_meta(out)["arch"] == {"width": cfg.model.width}
    # What reconstruction loads: the file named by the checkpoint (or by config.weights).
    cfg.checkpoint = out
    back, source = reconstruct_twok2k.load_variables(cfg)
    assert source == out
    leaves = jax.tree_util.tree_leaves
    for want, got in zip(leaves(variables), leaves(back), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))
    cfg.model.width = 16  # another architecture: one line naming the file
    with pytest.raises(HdjaxError, match=r"another architecture.*width") as e:
        reconstruct_twok2k.load_variables(cfg)
    assert str(tmp_path / "w.npz") in str(e.value)

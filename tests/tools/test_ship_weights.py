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

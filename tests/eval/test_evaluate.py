"""The evaluation job: a checkpoint's meshes scored on rendered subjects."""

import json
import math

import jax
import numpy as np
import pytest
import trimesh

from configs.pifuhd import get_config
from hdjax.data import subjects
from hdjax.errors import HdjaxError
from hdjax.eval import job
from hdjax.eval import pifuhd as pifuhd_eval
from hdjax.models import shipped
from hdjax.models.pifuhd import PIFuHDArch, init_params, param_shapes


def _cfg():
    cfg = get_config("tiny")
    cfg.render.size = 64  # a small render: the network input is resized anyway
    cfg.eval.update(resolution=32, normal_size=32, iou_resolution=24, num_samples=500)
    return cfg


def test_views_hold_the_ground_truth_in_the_view_frame():
    cfg = _cfg()
    cfg.eval.yaws = (0.0, 90.0)
    body = subjects.load_embedded_body("body_07")
    front, side = job.render_views(cfg, body)
    assert front.image.shape == (64, 64, 3) and front.image.dtype == np.uint8
    assert front.name == "body_07_yaw+000" and side.name == "body_07_yaw+090"
    # Turning by 90° about +y swaps the extents of x and z.
    ext0, ext90 = np.ptp(front.gt.vertices, 0), np.ptp(side.gt.vertices, 0)
    np.testing.assert_allclose(ext0[[0, 2]], ext90[[2, 0]], rtol=1e-6)
    # Metres are known: true centimetres of this body, not PIFu's 180 cm convention.
    assert front.units_per_cm != pytest.approx(1 / 102.4)
    # The background is the 0.5 grey an RGBA photo is composited on.
    assert tuple(front.image[0, 0]) == (128, 128, 128)


def test_scores_and_files_for_a_checkpoint(tmp_path):
    cfg = _cfg()
    arch = PIFuHDArch.from_config(cfg.model.arch)
    params = init_params(arch, 0)
    views = job.render_views(cfg, subjects.load_embedded_body("body_07"))
    summary = pifuhd_eval.evaluate_params(cfg, params, str(tmp_path), views)
    row = summary["subjects"][0]
    assert set(row) >= {"subject", "p2s_cm", "chamfer_cm", "normal_l2", "iou"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_subjects"] == 1 and set(saved) >= {"p2s_cm", "chamfer_cm", "iou"}
    assert "| " in (tmp_path / "metrics.md").read_text()
    png = tmp_path / f"{views[0].name}.png"
    assert png.stat().st_size > 100
    if math.isfinite(row["p2s_cm"]):  # a random net may or may not cut the 0.5 level
        mesh = trimesh.load(tmp_path / f"{views[0].name}.obj", process=False)
        assert np.all(np.abs(mesh.vertices) <= 1 + 1e-6)
    else:
        assert saved["failed"] == 1 and saved["subjects"][0]["p2s_cm"] is None


def test_checkpoint_of_another_architecture_is_one_clear_error():
    cfg = _cfg()
    arch = PIFuHDArch.from_config(cfg.model.arch)
    params = init_params(arch, 0)
    params["mlp"]["filters_0"]["kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(HdjaxError, match=r"ck/7: parameter \['mlp'\]\['filters_0'\]"):
        shipped.check_shapes(param_shapes(arch), params, "ck/7")


def test_scans_folder_of_meshes(tmp_path):
    cfg = _cfg()
    body = subjects.load_embedded_body("body_01")
    body.mesh.export(tmp_path / "person.ply")
    (tmp_path / "notes.txt").write_text("not a mesh")
    cfg.eval.scans = str(tmp_path)
    cfg.render.scan_unit_cm = 100.0
    (found,) = job.eval_subjects(cfg, str(tmp_path))
    assert found.name == "person" and found.unit_cm == 100.0
    assert len(found.mesh.faces) == len(body.mesh.faces)
    cfg.eval.scans = str(tmp_path / "missing")
    with pytest.raises(HdjaxError, match=r"missing: eval\.scans is not a folder"):
        job.eval_subjects(cfg, str(tmp_path))


def test_the_best_checkpoint_is_kept_apart(tmp_path):
    """`W/best` follows the best `eval.best_metric` seen, loads as converted weights, and a
    checkpoint that failed on a subject never becomes the best."""
    from hdjax.models.pifuhd_official import load_converted, save_converted

    cfg = _cfg()
    arch = PIFuHDArch.from_config(cfg.model.arch)
    first, second = init_params(arch, 0), init_params(arch, 1)
    workdir = str(tmp_path)

    def keep(step, params, failed=0, **values):
        summary = {"chamfer_cm": 5.0, "iou": 0.3, "failed": failed, **values}
        return job.keep_best(cfg, workdir, step, summary, lambda d: save_converted(d, params, arch))

    assert keep(10, first, chamfer_cm=5.0)
    assert not keep(20, second, chamfer_cm=6.0)
    assert not keep(25, second, chamfer_cm=1.0, failed=1)
    assert not keep(26, second, chamfer_cm=float("nan"))
    assert not keep(27, second, chamfer_cm=1.0, level="coarse")  # not the model's output
    assert keep(30, second, chamfer_cm=4.0)
    assert json.loads((tmp_path / "best" / "best.json").read_text()) == {
        "step": 30,
        "metric": "chamfer_cm",
        "value": 4.0,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    _, loaded = load_converted(tmp_path / "best")
    for a, b in zip(
        jax.tree_util.tree_leaves(second), jax.tree_util.tree_leaves(loaded), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    cfg.eval.best_metric = "iou"  # higher is better; a kept best of another metric is replaced
    assert keep(40, first, iou=0.2)
    assert not keep(50, second, iou=0.1)
    assert keep(60, second, iou=0.5)
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 60


def _history(tmp_path, values, metric="chamfer_cm"):
    for step, v in values.items():
        d = tmp_path / "eval" / f"step_{step}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({metric: v, "iou": 0.5, "failed": 0}))
    (tmp_path / "eval" / "step_99").mkdir()  # interrupted: no metrics.json
    return job.eval_history(str(tmp_path))


def test_eval_curve_and_worsening_warning(tmp_path, caplog):
    history = _history(tmp_path, {300: 9.0, 100: 10.0, 200: 8.0, 400: 9.5, 500: 12.0})
    assert list(history) == [100, 200, 300, 400, 500]
    assert job.plot_eval_curve(history, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with caplog.at_level("WARNING"):
        assert job.warn_if_worsening(history, "chamfer_cm", 3)  # 8 -> 9 -> 9.5 -> 12
    assert "chamfer_cm got worse at each of the last 3 evaluations" in caplog.text
    assert not job.warn_if_worsening(history, "chamfer_cm", 4)  # 10 -> 8 improved
    assert not job.warn_if_worsening(history, "iou", 2)  # flat is not worse
    assert not job.warn_if_worsening(history, "chamfer_cm", 0)
    # IoU: lower is worse.
    falling = {s: {"iou": v} for s, v in zip((1, 2, 3), (0.6, 0.5, 0.4), strict=True)}
    assert job.warn_if_worsening(falling, "iou", 2)


def test_checkpoints_before_the_fine_stage_are_scored_on_their_coarse_level():
    cfg = _cfg()
    cfg.train.stages, cfg.train.steps = ("normals", "coarse", "fine"), (10, 20, 30)
    # A checkpoint at step S has run steps [0, S): the fine stage starts after step 30.
    assert [pifuhd_eval.scored_level(cfg, s) for s in (5, 10, 30, 31, 60)] == [
        "coarse", "coarse", "coarse", "fine", "fine"
    ]  # fmt: skip
    cfg.train.init_weights = "pifuhd_small"  # fine-tuned: its fine level is trained
    assert pifuhd_eval.scored_level(cfg, 5) == "fine"
    cfg.train.init_weights, cfg.train.stages, cfg.train.steps = "", ("coarse",), (10,)
    assert pifuhd_eval.scored_level(cfg, 10) == "fine"  # no fine stage: nothing better


def test_coarse_level_occupancy_is_the_coarse_mlp_alone():
    import jax.numpy as jnp

    from hdjax.geometry.projection import EVAL_CALIB
    from hdjax.models.pifuhd import PIFuHD
    from hdjax.reconstruction import pifuhd as recon
    from hdjax.reconstruction.weights import open_weights

    cfg = _cfg()
    arch = PIFuHDArch.from_config(cfg.model.arch)
    weights = open_weights(shipped.RANDOM, arch, seed=2)
    rng = np.random.default_rng(0)
    fine = rng.uniform(-1, 1, (arch.fine_size, arch.fine_size, 3)).astype(np.float32)
    coarse = rng.uniform(-1, 1, (arch.coarse_size, arch.coarse_size, 3)).astype(np.float32)
    feats, _ = recon.image_features(weights, fine, coarse)
    points = rng.uniform(-1, 1, (50, 3)).astype(np.float32)
    got = recon.occupancy_fn(weights, feats, 64, level="coarse")(points)
    logits, _, _ = PIFuHD(arch).apply(
        {"params": weights.get(())},
        [feats.coarse],
        jnp.asarray(points)[None],
        calib_global=jnp.asarray(EVAL_CALIB)[None],
        method=PIFuHD.coarse_query,
    )
    want = np.asarray(jax.nn.sigmoid(logits[-1][0]))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # measured 0 (same XLA program)
    assert not np.allclose(got, recon.occupancy_fn(weights, feats, 64)(points), atol=1e-3)

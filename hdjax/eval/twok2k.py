"""2K2K evaluation job: `python -m hdjax.main --config=twok2k --workdir=W --mode=eval`.

The same job as PIFuHD's (`hdjax.eval.job`: checkpoints, ``eval.step``, ``eval.watch``,
``eval.scans``, the kept best in ``W/best``), with 2K2K's reconstruction: each test subject
is rendered as training renders it (perspective, at ``model.canvas``), its background set to
black as the demo's masked input, its part transforms taken from its projected keypoints
(the training rule), and the phase-2 forward's depth maps, cut by the predicted mask, become
a mesh by the watertight stitch (`depth_mesh.stitch_mesh`, on the demo's cleaned maps).

Alignment: none. The depth maps decode to points in the view frame of the normalised scan
(divisor 1, not the demo's 1.0367), where the ground truth is the normalised mesh turned by
the view's yaw. Both are scaled by `METRIC_SCALE` into the box the mesh metrics work in
(`hdjax.eval.metrics`: normal renders and IoU grid span [−1, 1]³; distances stay in cm).

Scores per view: the mesh metrics (``p2s_cm``, ``chamfer_cm``, ``normal_l2``, ``iou``) and
the depth-map metrics: ``depth_l1_cm`` (mean |ray distance error| in cm over the pixels
both masks hold, front and back together) and ``mask_iou`` (predicted vs rendered mask).
Outputs in ``W/eval/step_<S>/`` as PIFuHD's, plus the metrics' extra columns.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import ml_collections
import numpy as np
import trimesh

from hdjax.data import codecs
from hdjax.data.pipeline import twok2k_theta
from hdjax.errors import HdjaxError
from hdjax.eval import job, metrics
from hdjax.geometry import camera as cam
from hdjax.geometry import depth_mesh
from hdjax.geometry import mesh as mesh_lib
from hdjax.io.files import write_png
from hdjax.models import shipped

log = logging.getLogger(__name__)

# The 2K2K normalisation fits a body in about ±0.36: ×2.5 fills the metrics' [−1, 1] box.
METRIC_SCALE = 2.5
DEPTH_KEYS = ("depth_l1_cm", "mask_iou")
COLUMNS = (*metrics.COLUMNS, ("depth_l1_cm", "depth L1 (cm) ↓"), ("mask_iou", "mask IoU ↑"))


def view_input(view: job.View, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rendered view -> network image (S, S, 3) in [−1, 1] (black background), theta
    (12, 2, 3), rendered mask (S, S) bool."""
    rec = view.record
    rgb = codecs.decode_png(rec["image"]).astype(np.float32)
    mask = codecs.decode_png(rec["mask"]).reshape(rgb.shape[:2]) > 127
    if rgb.shape[0] != size:
        raise HdjaxError(
            f"eval renders are {rgb.shape[0]}² (render.size) but model.canvas is {size}"
        )
    x = np.where(mask[..., None], rgb / 127.5 - 1.0, -1.0).astype(np.float32)
    return x, twok2k_theta(np.asarray(rec["keypoints"]), size, view.name), mask


def depth_metrics(
    pred: dict[str, np.ndarray], view: job.View, mask: np.ndarray
) -> dict[str, float]:
    """``depth_l1_cm`` and ``mask_iou`` of predicted maps ((S, S), D in the canvas's own
    units, `models.twok2k.canvas.native_depth`) against the view's rendered depth."""
    rec = view.record
    camera = cam.PerspCamera(size=mask.shape[0])
    keep = pred["mask"] > 0.5
    union = np.logical_or(keep, mask).sum()
    errors = []
    for side in ("front", "back"):
        d_gt = codecs.decode_png(rec[f"depth_{side}"]).reshape(mask.shape) / codecs.TWOK2K_PNG_SCALE
        both = keep & mask & (d_gt > 0)
        r_gt = cam.decode_ray_depth(d_gt[both], camera)
        r_pred = cam.decode_ray_depth(pred[side][both] * cam.TWOK2K_NETWORK_SCALE, camera)
        errors.append(np.abs(r_pred - r_gt))
    err = np.concatenate(errors)
    return {
        "depth_l1_cm": float(err.mean() / view.units_per_cm) if err.size else math.inf,
        "mask_iou": float(np.logical_and(keep, mask).sum() / union) if union else 0.0,
    }


def reconstruct_view(variables, view: job.View, cfg: ml_collections.ConfigDict):
    """The forward's maps of one view and their mesh (view frame; None without surface)."""
    from hdjax.models.twok2k.canvas import geometry, native_depth
    from hdjax.models.twok2k.forward import twok2k_forward
    from hdjax.models.twok2k.networks import numerics_from_config
    from hdjax.models.twok2k_official import width_of

    x, theta, mask = view_input(view, cfg.model.canvas)
    out = twok2k_forward(
        variables,
        x[None],
        theta[None],
        numerics=numerics_from_config(cfg.model.numerics),
        width=width_of(variables),
    )
    geom = geometry(cfg.model.canvas)
    pred = {
        "front": native_depth(np.asarray(out["depth_front"][0], np.float32), geom),
        "back": native_depth(np.asarray(out["depth_back"][0], np.float32), geom),
        "mask": np.asarray(out["depth_mask"][0], np.float32),
    }
    keep = pred["mask"] > 0.5
    front, back = depth_mesh.demo_depth_cleanup(
        np.where(keep, pred["front"], 0.0), np.where(keep, pred["back"], 0.0)
    )
    mesh = depth_mesh.stitch_mesh(front, back, divisor=1.0)
    return pred, mask, (mesh if len(mesh.faces) else None)


def _scaled(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices * METRIC_SCALE, mesh.faces, process=False)


def evaluate_variables(
    cfg: ml_collections.ConfigDict, variables: Any, out_dir: str, views: list[job.View]
) -> dict[str, Any]:
    """Scores ``variables`` on ``views``; writes metrics.json, metrics.md, meshes and PNGs."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    rows, size = [], cfg.eval.normal_size
    for i, view in enumerate(views):
        t = time.perf_counter()
        pred, mask, mesh = reconstruct_view(variables, view, cfg)
        gt = _scaled(view.gt)
        scaled_view = job.View(view.name, view.image, gt, view.units_per_cm * METRIC_SCALE)
        if mesh is None:
            scored = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
        else:
            scored = _scaled(mesh)
            mesh_lib.save_obj(os.path.join(out_dir, f"{view.name}.obj"), mesh.vertices, mesh.faces)
        row = metrics.evaluate_mesh(
            scored,
            gt,
            scaled_view.units_per_cm,
            rng,
            n=cfg.eval.num_samples,
            normal_size=size,
            iou_resolution=cfg.eval.iou_resolution,
        )
        row |= depth_metrics(pred, view, mask)
        png = job.normal_png(scaled_view, None if mesh is None else scored, size)
        write_png(os.path.join(out_dir, f"{view.name}.png"), png)
        rows.append({"subject": view.name, **row})
        log.info(
            "eval %d/%d %s: p2s %.2f cm, chamfer %.2f cm, normal %.4f, IoU %.3f, depth %.2f cm, "
            "mask IoU %.3f (%.1f s)",
            i + 1,
            len(views),
            view.name,
            *(row[k] for k, _ in COLUMNS),
            time.perf_counter() - t,
        )
    summary = metrics.summarize(rows, metrics.METRIC_KEYS + DEPTH_KEYS)
    summary["failed"] = sum(not math.isfinite(r["p2s_cm"]) for r in rows)
    job.write_summary(out_dir, summary, COLUMNS)
    return summary


def evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, Any]]:
    """``--mode=eval`` of 2K2K (`job.score_checkpoints`). Returns the summaries by step."""
    from hdjax.models.twok2k_official import save_converted, variable_shapes

    views = [v for s in job.eval_subjects(cfg, workdir) for v in job.render_views(cfg, s)]

    def score(variables, out_dir, step):
        del step
        summary = evaluate_variables(cfg, variables, out_dir, views)
        log.info("eval:\n%s", metrics.markdown_table(summary, COLUMNS))
        return summary

    return job.score_checkpoints(
        cfg,
        workdir,
        lambda v, where: shipped.check_shapes(variable_shapes(cfg.model.width), v, where),
        score,
        lambda v, d: save_converted(d, v),
    )

"""PIFuHD's evaluation: reconstruct each held-out view with a checkpoint's parameters
(`reconstruct_view`) and score the meshes (`evaluate_params`); the job around it
(subjects, views, the watch loop, the kept best) is `hdjax.eval.job`.
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

from hdjax.eval import job, metrics
from hdjax.geometry import mesh as mesh_lib
from hdjax.io.files import write_png
from hdjax.models import shipped
from hdjax.models.pifuhd import PIFuHD, PIFuHDArch, numerics_from_config, param_shapes
from hdjax.reconstruction import pifuhd as recon
from hdjax.reconstruction import preprocess
from hdjax.reconstruction.weights import Weights
from hdjax.train import loop


def reconstruct_view(
    weights: Weights, view: job.View, cfg: ml_collections.ConfigDict, level: str = "fine"
):
    """The network's mesh of one view, in its query (= view) frame; None without surface.
    ``level``: "coarse" meshes the coarse level alone (`recon.occupancy_fn`)."""
    arch = weights.arch
    h, w = view.image.shape[:2]
    fine, coarse = preprocess.prepare_pifuhd_inputs(
        view.image, preprocess.whole_image_rect(h, w), arch.fine_size, arch.coarse_size
    )
    feats, _ = recon.image_features(weights, fine, coarse)
    evaluate = recon.occupancy_fn(weights, feats, cfg.reconstruct.chunk, level=level)
    r = cfg.eval.resolution
    init = min(cfg.reconstruct.init_resolution, r // 4)
    grid, _ = recon.occupancy_grid(evaluate, r, "fast", init, cfg.reconstruct.threshold)
    try:
        verts, faces = mesh_lib.extract_mesh(grid, cfg.eval.resolution)
    except ValueError:
        return None
    return trimesh.Trimesh(verts.astype(np.float64), faces, process=False)


def evaluate_params(
    cfg: ml_collections.ConfigDict,
    params: Any,
    out_dir: str,
    views: list[job.View],
    level: str = "fine",
) -> dict[str, Any]:
    """Scores ``params`` on ``views``; writes metrics.json, metrics.md, meshes and PNGs.
    ``level``: the level whose meshes are scored (`scored_level`)."""
    arch = PIFuHDArch.from_config(cfg.model.arch)
    model = PIFuHD(arch, numerics_from_config(cfg.model.numerics))

    def subtree(names):
        p = params
        for k in names:
            p = p[k]
        return p

    weights = Weights(model, subtree, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    rows, size = [], cfg.eval.normal_size
    for i, view in enumerate(views):
        t = time.perf_counter()
        pred = reconstruct_view(weights, view, cfg, level)
        if pred is None:
            scored = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
        else:
            scored = pred
            mesh_lib.save_obj(os.path.join(out_dir, f"{view.name}.obj"), pred.vertices, pred.faces)
        row = metrics.evaluate_mesh(
            scored,
            view.gt,
            view.units_per_cm,
            rng,
            n=cfg.eval.num_samples,
            normal_size=size,
            iou_resolution=cfg.eval.iou_resolution,
        )
        write_png(os.path.join(out_dir, f"{view.name}.png"), job.normal_png(view, pred, size))
        rows.append({"subject": view.name, **row})
        logging.info(
            "eval %d/%d %s: p2s %.2f cm, chamfer %.2f cm, normal %.4f, IoU %.3f (%.1f s)",
            i + 1,
            len(views),
            view.name,
            row["p2s_cm"],
            row["chamfer_cm"],
            row["normal_l2"],
            row["iou"],
            time.perf_counter() - t,
        )
    summary = metrics.summarize(rows)
    summary["failed"] = sum(not math.isfinite(r["p2s_cm"]) for r in rows)
    summary["level"] = level
    job.write_summary(out_dir, summary)
    return summary


def scored_level(cfg: ml_collections.ConfigDict, step: int) -> str:
    """ "fine" once the schedule of ``cfg`` has trained the fine level by ``step`` (or it
    starts from trained weights, ``train.init_weights``), else "coarse": the untrained fine
    level of a checkpoint from the normals or coarse stage fills the cube, and its held-out
    curve would say nothing until the fine stage."""
    if cfg.train.get("init_weights"):
        return "fine"
    started = [s.start for s in loop.schedule(cfg, tuple(cfg.train.stages)) if s.name == "fine"]
    return "fine" if any(start < step for start in started) or not started else "coarse"


def evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[int, dict[str, Any]]:
    """``--mode=eval`` of PIFuHD (`score_checkpoints`). Returns the summaries by step."""
    from hdjax.models.pifuhd_official import save_converted

    arch = PIFuHDArch.from_config(cfg.model.arch)
    views = [v for s in job.eval_subjects(cfg, workdir) for v in job.render_views(cfg, s)]

    def score(params, out_dir, step):
        level = scored_level(cfg, step)
        if level == "coarse":
            logging.info("step %d: the fine level is not trained yet; scoring the coarse", step)
        summary = evaluate_params(cfg, params, out_dir, views, level)
        logging.info("eval:\n%s", metrics.markdown_table(summary))
        return summary

    return job.score_checkpoints(
        cfg,
        workdir,
        lambda params, where: shipped.check_shapes(param_shapes(arch), params, where),
        score,
        lambda params, d: save_converted(d, params, arch),
    )

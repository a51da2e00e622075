"""The evaluation job every model shares: reconstructs held-out subjects with a training
checkpoint and scores them (`score_checkpoints`); the models' scoring is in
`hdjax.eval.pifuhd` and `hdjax.eval.twok2k`.

    python -m hdjax.main --config=C --workdir=W --mode=eval                  # latest checkpoint
    python -m hdjax.main ... --mode=eval --config.eval.step=S               # one checkpoint
    python -m hdjax.main ... --mode=eval --config.eval.watch=True           # beside training
    python -m hdjax.main ... --mode=eval --config.eval.scans=DIR            # your own meshes

Subjects: the test split of the embedded synthetic humans (their meshes are at hand), or
``eval.scans``: a folder with one mesh file (OBJ/PLY/GLB/...) per subject or one sub-folder
per subject (as `scan_renders` reads them), in metres unless ``render.scan_unit_cm`` says
otherwise. Each subject is rendered on the fly by the data renderer at the config's render
settings, from ``eval.yaws``, so the input is exactly what training images look like.

Alignment: none is needed. The whole rendered image is the network input with the official
evaluation calib, so the reconstruction comes out in the view frame of the normalised scan,
where the ground truth is the normalised mesh turned by the view's yaw: both meshes are in
one frame, and `hdjax.eval.metrics` scores them there (no ICP, no rescaling). Distances are
true centimetres when the scan unit is known (the embedded bodies are in metres), else
PIFu's "cm of a 180 cm body".

Outputs, ``W/eval/step_<S>/``: ``metrics.json`` (``p2s_cm``, ``chamfer_cm``, ``normal_l2``,
``iou``: means over subjects, plus ``subjects``: the per-subject list; a subject without a
surface counts in ``failed`` and its distances are null), ``metrics.md`` (the table),
``<subject>.obj`` and ``<subject>.png`` (input | prediction | ground truth, normal-shaded).

The best checkpoint by ``eval.best_metric`` is kept apart from training's rolling window, in
``W/best/``: its parameters in the converted format (``--config.checkpoint=W/best`` for
reconstruction) and ``best.json`` (step, metric, value). A new best replaces it by renames, so
an interrupted update leaves the previous best (or the new one) whole.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import time
from typing import Any

import cv2
import ml_collections
import numpy as np
import trimesh

from hdjax import configlib
from hdjax.data import codecs, records, render_config, subjects
from hdjax.datasets import core
from hdjax.errors import HdjaxError
from hdjax.eval import metrics
from hdjax.geometry import camera as cam
from hdjax.io.files import atomic_write
from hdjax.train import checkpointing, loop


@dataclasses.dataclass
class View:
    """One evaluation input: the rendered image and its ground truth in the view frame."""

    name: str
    image: np.ndarray  # (S, S, 3) uint8 RGB, the subject over 0.5 grey (as an RGBA photo)
    gt: trimesh.Trimesh  # the normalised mesh turned into the view frame
    units_per_cm: float
    record: dict[str, Any] = dataclasses.field(default_factory=dict)  # the rendered record


def eval_subjects(cfg: ml_collections.ConfigDict, workdir: str) -> list[subjects.Subject]:
    """``eval.scans`` (one mesh file or sub-folder each), else the dataset's test subjects."""
    render = configlib.build(render_config.RenderConfig, cfg.render, "render")
    if cfg.eval.scans:
        root = os.path.expanduser(cfg.eval.scans)
        if not os.path.isdir(root):
            raise HdjaxError("eval.scans is not a folder", root)
        out, report = [], subjects.BuildReport()
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if os.path.isdir(path):
                out.extend(subjects.scan_subjects(root, render, report, names=[entry]))
            elif entry.lower().endswith(subjects.MESH_EXTS):
                out.append(_mesh_file_subject(path, render))
        for name, reason in report.skipped:
            logging.warning("eval: skipping %s: %s", name, reason)
        if not out:
            raise HdjaxError("no usable mesh in eval.scans", root)
        return out
    if cfg.input.dataset.data_dir:
        raise HdjaxError(
            "scoring needs the subjects' meshes: set --config.eval.scans=DIR (the dataset's "
            "test subjects are only at hand for the embedded synthetic humans)"
        )
    source = core.dataset_source(cfg, split="test")
    names = sorted({_text(source[i]["subject"]) for i in range(len(source))})
    if cfg.eval.num_subjects > 0:
        names = names[: cfg.eval.num_subjects]
    if cfg.input.dataset.num_bodies is None:
        return [subjects.load_embedded_body(n) for n in names]
    from hdjax.datasets.synthetic_humans import bodies  # needs the bodies extra

    d = cfg.input.dataset
    return [bodies.generated_subject(n, d.body_cache_dir, d.clothed) for n in names]


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _mesh_file_subject(path: str, render: render_config.RenderConfig) -> subjects.Subject:
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for corrupt files
        raise HdjaxError(f"cannot load mesh ({type(e).__name__}: {e})", path) from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise HdjaxError("not a triangle mesh", path)
    try:
        subjects.validate_mesh(mesh, render)
    except subjects.ScanError as e:
        raise HdjaxError(str(e), path) from None
    name = os.path.splitext(os.path.basename(path))[0]
    return subjects.Subject(name, mesh, unit_cm=render.scan_unit_cm)


def render_views(cfg: ml_collections.ConfigDict, subject: subjects.Subject) -> list[View]:
    """The subject rendered from every ``eval.yaws`` as training renders it."""
    render = configlib.build(render_config.RenderConfig, cfg.render, "render")
    # No camera jitter: the ground truth is the normalised mesh turned by the yaw alone.
    render = dataclasses.replace(
        render,
        yaws=tuple(cfg.eval.yaws),
        num_points=16,
        pitch_deg=0.0,
        scale_jitter=0.0,
        shift_jitter=0.0,
    )
    norm = records.normalization(subject, render)
    mesh = cam.normalize_mesh(subject.mesh, norm)
    per_cm = norm.scale / subject.unit_cm if subject.unit_cm else cam.PIFU_UNITS_PER_CM
    views = []
    for view, yaw in enumerate(render.yaws):
        rec = records.render_record(subject, render, view, seed=cfg.seed, norm=norm)
        rgb = codecs.decode_png(rec["image"]).astype(np.float32)
        mask = codecs.decode_png(rec["mask"]).reshape((*rgb.shape[:2], 1)) > 127
        image = np.where(mask, rgb, 127.5).round().astype(np.uint8)
        gt = mesh.copy()
        gt.vertices = cam.to_view(mesh.vertices, records.make_camera(render, yaw))
        views.append(View(f"{subject.name}_yaw{yaw:+04.0f}", image, gt, per_cm, rec))
    return views


def normal_png(view: View, pred: trimesh.Trimesh | None, size: int) -> np.ndarray:
    """input | prediction | ground truth, normal-shaded from the front, uint8 RGB."""
    gt = metrics.normal_images(view.gt, size=size, views=1)[0]
    if pred is None or metrics.is_empty(pred):
        ours = np.ones_like(gt)
    else:
        ours = metrics.normal_images(pred, size=size, views=1)[0]
    inp = cv2.resize(view.image, (size, size), interpolation=cv2.INTER_AREA)
    tiles = [inp, (ours * 255).round().astype(np.uint8), (gt * 255).round().astype(np.uint8)]
    return np.concatenate(tiles, axis=1)


def write_summary(out_dir: str, summary: dict[str, Any], columns=metrics.COLUMNS) -> None:
    """``metrics.json`` (non-finite values as null) and ``metrics.md`` (the table)."""
    text = json.dumps(json_safe(summary), indent=1)
    atomic_write(os.path.join(out_dir, "metrics.json"), lambda f: f.write(text), mode="w")
    table = metrics.markdown_table(summary, columns)
    atomic_write(os.path.join(out_dir, "metrics.md"), lambda f: f.write(table + "\n"), mode="w")


def json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


HIGHER_IS_BETTER = ("iou", "mask_iou")


def keep_best(
    cfg: ml_collections.ConfigDict,
    workdir: str,
    step: int,
    summary: dict[str, Any],
    save: Any,
) -> bool:
    """Makes the checkpoint of ``step`` the kept best in ``workdir/best`` if its
    ``eval.best_metric`` beats the kept one's (``save(directory)`` writes its converted
    weights); returns whether it did."""
    name = cfg.eval.best_metric
    value = summary.get(name)
    if value is None or not math.isfinite(value) or summary.get("failed"):
        return False  # a checkpoint that failed on a subject is never the best
    if summary.get("level", "fine") != "fine":
        return False  # scored on its coarse level alone: not what the model outputs
    best = os.path.join(workdir, "best")
    try:
        with open(os.path.join(best, "best.json")) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        kept = None
    if kept is not None and kept.get("metric") == name:
        better = value > kept["value"] if name in HIGHER_IS_BETTER else value < kept["value"]
        if not better:
            return False
    staging, old = f"{best}.new", f"{best}.old"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    save(staging)
    text = json.dumps({"step": step, "metric": name, "value": value}, indent=1)
    atomic_write(os.path.join(staging, "best.json"), lambda f: f.write(text), mode="w")
    if os.path.exists(best):
        os.replace(best, old)
    os.replace(staging, best)
    shutil.rmtree(old, ignore_errors=True)
    logging.info("best checkpoint so far (%s %.4g): step %d, kept in %s", name, value, step, best)
    return True


def eval_history(workdir: str) -> dict[int, dict[str, Any]]:
    """Every summary scored in ``workdir/eval/step_<S>/metrics.json`` so far, by step
    (earlier runs of the job included)."""
    root, out = os.path.join(workdir, "eval"), {}
    for entry in os.listdir(root) if os.path.isdir(root) else []:
        if entry.startswith("step_") and entry[5:].isdigit():
            try:
                with open(os.path.join(root, entry, "metrics.json")) as f:
                    out[int(entry[5:])] = json.load(f)
            except (OSError, ValueError):
                continue  # a step whose scoring was interrupted
    return dict(sorted(out.items()))


def warn_if_worsening(history: dict[int, dict[str, Any]], metric: str, patience: int) -> bool:
    """Logs a warning (and returns True) when ``metric`` got worse at each of the last
    ``patience`` evaluations: a run that diverges on held-out data says so."""
    values = [h.get(metric) for h in history.values()][-(patience + 1) :]
    if patience < 1 or len(values) <= patience or any(v is None for v in values):
        return False
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    if not all(sign * (b - a) > 0 for a, b in itertools.pairwise(values)):
        return False
    trail = " -> ".join(f"{v:.4g}" for v in values)
    logging.warning(
        "held-out %s got worse at each of the last %d evaluations (%s, steps %s): the run "
        "may be diverging or overfitting; WORKDIR/best keeps the best checkpoint",
        metric,
        patience,
        trail,
        ", ".join(str(s) for s in list(history)[-(patience + 1) :]),
    )
    return True


def plot_eval_curve(history: dict[int, dict[str, Any]], png_path: str) -> bool:
    """The held-out metrics against the step, one panel each (``WORKDIR/eval/curve.png``);
    False with fewer than one scored step."""
    keys = [
        k
        for k in dict.fromkeys(k for h in history.values() for k in h)
        if k != "failed" and any(isinstance(h.get(k), float) for h in history.values())
    ]
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(s, h[key]) for s, h in history.items() if isinstance(h.get(key), float)]
        ax.plot(*zip(*pts, strict=True), color="C0", zorder=1)
        for level, face in (("fine", "C0"), ("coarse", "white")):
            mine = [(s, v) for s, v in pts if history[s].get("level", "fine") == level]
            if mine:  # open markers: a checkpoint scored on its coarse level alone
                ax.scatter(*zip(*mine, strict=True), facecolors=face, edgecolors="C0",
                           label=f"{level} level", zorder=2)  # fmt: skip
        if any(h.get("level") == "coarse" for h in history.values()):
            ax.legend(fontsize=7)
        ax.set_title(f"{key} ({'higher' if key in HIGHER_IS_BETTER else 'lower'} is better)")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(png_path, lambda f: fig.savefig(f, format="png"), mode="wb")
    plt.close(fig)
    return True


def score_checkpoints(
    cfg: ml_collections.ConfigDict, workdir: str, check, score, save
) -> dict[int, dict[str, Any]]:
    """The eval job's loop, for any model: scores ``eval.step`` (or the latest, or with
    ``eval.watch`` each new one until training's last step) into ``WORKDIR/eval/step_<S>/`` and
    keeps the best; after each, ``WORKDIR/eval/curve.png`` is redrawn and a metric that keeps
    getting worse is logged (`warn_if_worsening`). ``check(params, where)`` validates a
    restored checkpoint's params, ``score(params, out_dir, step)`` returns its summary,
    ``save(params, directory)`` writes them as converted weights."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise HdjaxError("no checkpoints to evaluate (train first, or check --workdir)", directory)
    manager = checkpointing.Manager(directory, cfg.train)
    final_step = loop.total_steps(cfg)
    done: dict[int, dict[str, Any]] = {}
    while True:
        steps = manager.all_steps()
        if cfg.eval.step >= 0:
            if cfg.eval.step not in steps:
                raise HdjaxError(f"no checkpoint of step {cfg.eval.step} (have {steps})", directory)
            todo = [cfg.eval.step]
        else:
            todo = [s for s in steps if s not in done] if cfg.eval.watch else steps[-1:]
        for step in todo:
            params = manager.restore_params(step)
            check(params, os.path.join(directory, str(step)))
            done[step] = score(params, os.path.join(workdir, "eval", f"step_{step}"), step)
            keep_best(cfg, workdir, step, done[step], lambda d, p=params: save(p, d))
            history = eval_history(workdir)
            plot_eval_curve(history, os.path.join(workdir, "eval", "curve.png"))
            warn_if_worsening(history, cfg.eval.best_metric, cfg.eval.patience)
        if not cfg.eval.watch or cfg.eval.step >= 0 or final_step in done:
            manager.close()
            return done
        time.sleep(cfg.eval.poll_seconds)

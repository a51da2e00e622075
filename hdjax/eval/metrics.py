"""Scores for a reconstructed mesh against its ground truth (PIFu / PIFuHD protocol).

Frame, alignment and units
--------------------------
Both meshes must lie in the **same** frame: hdjax's normalised frame (`hdjax.geometry.camera`:
+y up, +z toward the front camera; the reconstruction cube is [−1, 1]³). The ground truth is
known there (it is the mesh the input image was rendered from, after `normalize_mesh`) and
the reconstruction is produced there, so nothing is aligned: no ICP, no rescaling, no
re-centring. A reconstruction that is off in scale or position is scored as wrong, which is
what the single-view benchmark asks for.

Distances are measured in normalised units and divided by ``units_per_cm`` to report
centimetres. PIFu's normalisation makes any body 180 "cm" tall, i.e. 1 cm =
`hdjax.geometry.camera.PIFU_UNITS_PER_CM` = 1/102.4 units (a 180 cm body = 1.7578 units); that
is the factor to use for PIFu-comparable numbers. For true centimetres of a subject whose
real height differs, pass ``Normalization.scale / unit_cm`` (normalised units per scan unit
divided by centimetres per scan unit), e.g. for a scan in metres ``norm.scale / 100``.

Metrics (the keys of `evaluate_mesh`, `METRIC_KEYS`)
---------------------------------------------------
* ``p2s_cm`` (`point_to_surface_cm`): n points sampled uniformly (area-weighted) on the
  predicted surface; mean distance to the ground-truth surface.
* ``chamfer_cm`` (`chamfer_cm`): the mean of the p2s of both directions (n fresh samples on
  each mesh). This is PIFu's "Chamfer": a mean of unsquared distances, halved.
* ``normal_l2`` (`normal_consistency`): both meshes rendered from yaw 0, 90, 180, 270 with
  the orthographic camera (512²), smooth (vertex) normals of the nearest surface mapped to
  colour ``n·0.5 + 0.5``, background colour 1 (white); per view the mean over **all**
  pixels of the squared Euclidean distance between the two RGB colours; then the mean over
  the views. PIFuHD's published tables multiply this number by 4 (`PIFUHD_NORMAL_FACTOR`),
  which turns colour differences back into normal-vector differences (Δc = Δn/2).
* ``iou`` (`volumetric_iou`): inside = generalised winding number > 0.5
  (`hdjax.data.point_sampling.label_points`) at the cell centres of a regular grid over the
  box; |pred ∩ gt| / |pred ∪ gt|.

Where the protocol comes from: PIFuHD's ``lib/evaluator.py`` (``MeshEvaluator``;
facebookresearch/pifuhd, read through the fork BillSchumacher/pifuhd) with its
``lib/render/gl`` normal renderer (shader colour ``(normalize(n) + 1)/2``, clear colour
white, 512², yaws 0/180/90/270) and its ``__main__`` (× 4 on the normal error).
shunsukesaito/PIFu ships no metric code (its ``apps/eval.py`` only reconstructs). Deviations,
all deliberate: closest points by point-cloud-utils (libigl AABB tree, exact, ~50 ms for 10k
points on a 27k-face body) instead of ``trimesh.proximity.closest_point``, which needs
``rtree`` (not installed here) and is far slower; normals rendered by hdjax's embree
renderer (`hdjax.data.render.render`) instead of OpenGL.

Degenerate inputs
-----------------
A ground truth without faces (or with zero area) raises `HdjaxError`: nothing can be
scored against it. An **empty prediction** (no faces, or zero total area: a network that
predicts nothing) is a valid, bad result: ``p2s_cm = chamfer_cm = inf``, ``iou = 0``, and
``normal_l2`` is the (finite) error of all-background images against the ground truth's.
`summarize` keeps those values, so one empty subject makes the distance means inf.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import point_cloud_utils as pcu
import trimesh

from hdjax.data.point_sampling import RECONSTRUCTION_CUBE, label_points
from hdjax.data.render import render
from hdjax.errors import HdjaxError
from hdjax.geometry.camera import OrthoCamera

METRIC_KEYS = ("p2s_cm", "chamfer_cm", "normal_l2", "iou")
PIFUHD_NORMAL_FACTOR = 4.0  # PIFuHD's evaluator reports 4 × the colour-space error
NORMAL_BACKGROUND = 1.0  # PIFuHD's normal renderer clears to white
_IOU_CHUNK = 1 << 20  # grid points per winding-number call: bounds memory at any resolution


def is_empty(mesh: trimesh.Trimesh) -> bool:
    """True if the mesh has no surface to sample or render (no faces, or zero area)."""
    return len(mesh.faces) == 0 or not float(mesh.area) > 0.0


def _check_gt(gt: trimesh.Trimesh) -> None:
    if is_empty(gt):
        raise HdjaxError("ground-truth mesh has no faces (or zero area): nothing to score against")
    if not np.all(np.isfinite(gt.vertices)):
        raise HdjaxError("ground-truth mesh has non-finite (NaN/inf) vertex coordinates")


def _check_units(units_per_cm: float) -> None:
    if not (math.isfinite(units_per_cm) and units_per_cm > 0):
        raise HdjaxError(f"units_per_cm must be a positive number, got {units_per_cm!r}")


def _surface_samples(mesh: trimesh.Trimesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) float64 points uniform on the surface (area-weighted), as PIFu samples."""
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=rng)
    return np.asarray(points, np.float64)


def _distance_to_surface(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """(N, 3) points -> (N,) float64 unsigned distance to the closest point of ``mesh``."""
    d, _, _ = pcu.closest_points_on_mesh(
        np.ascontiguousarray(points, np.float64),
        np.ascontiguousarray(mesh.vertices, np.float64),
        np.ascontiguousarray(mesh.faces, np.int64),
    )
    return np.asarray(d, np.float64)


def _mean_distance(src: trimesh.Trimesh, dst: trimesh.Trimesh, n: int, rng) -> float:
    """Mean distance (normalised units) from n samples on ``src`` to the surface of ``dst``."""
    return float(_distance_to_surface(_surface_samples(src, n, rng), dst).mean())


def point_to_surface_cm(
    pred: trimesh.Trimesh,
    gt: trimesh.Trimesh,
    units_per_cm: float,
    rng: np.random.Generator,
    n: int = 10000,
) -> float:
    """PIFu's point-to-surface distance: n samples on ``pred``, mean distance to ``gt``.

    Args:
      pred: reconstructed mesh, normalised frame (module docstring: no alignment).
      gt: ground-truth mesh, same frame.
      units_per_cm: normalised units per centimetre (`PIFU_UNITS_PER_CM` for PIFu's scale).
      rng: source of the surface samples.
      n: number of samples (PIFu: 10,000).

    Returns:
      the mean distance in cm; inf for an empty ``pred``.
    """
    _check_gt(gt)
    _check_units(units_per_cm)
    if is_empty(pred):
        return math.inf
    return _mean_distance(pred, gt, n, rng) / units_per_cm


def chamfer_cm(
    pred: trimesh.Trimesh,
    gt: trimesh.Trimesh,
    units_per_cm: float,
    rng: np.random.Generator,
    n: int = 10000,
) -> float:
    """PIFu's Chamfer distance: the mean of the p2s of both directions, n samples each.

    Args: as `point_to_surface_cm`.

    Returns:
      0.5 · (mean d(pred → gt) + mean d(gt → pred)) in cm; inf for an empty ``pred``.
    """
    _check_gt(gt)
    _check_units(units_per_cm)
    if is_empty(pred):
        return math.inf
    forward = _mean_distance(pred, gt, n, rng)
    backward = _mean_distance(gt, pred, n, rng)
    return 0.5 * (forward + backward) / units_per_cm


def view_yaws(views: int) -> tuple[float, ...]:
    """``views`` yaws evenly around +y starting at the front: 4 -> (0, 90, 180, 270)."""
    if views < 1:
        raise HdjaxError(f"views must be >= 1, got {views}")
    return tuple(360.0 * k / views for k in range(views))


def normal_images(mesh: trimesh.Trimesh, size: int = 512, views: int = 4) -> np.ndarray:
    """Normal-shaded renders of ``mesh`` as PIFuHD's evaluator draws them.

    Args:
      mesh: normalised-frame mesh; an empty mesh gives all-background images.
      size: image side (PIFuHD: 512).
      views: number of yaws (`view_yaws`).

    Returns:
      (views, size, size, 3) float32 colours ``n·0.5 + 0.5`` of the view-frame smooth
      normal of the nearest surface, `NORMAL_BACKGROUND` where no surface is hit. Also
      usable as PNG previews (× 255).
    """
    out = np.full((views, size, size, 3), NORMAL_BACKGROUND, np.float32)
    if is_empty(mesh):
        return out
    for i, yaw in enumerate(view_yaws(views)):
        # The lighting (rng, occlusion rays) only shades the RGB image, unused here.
        camera = OrthoCamera(size=size, yaw_deg=yaw)
        maps = render(mesh, camera, np.random.default_rng(0), ao_rays=0)
        mask = maps["mask"]
        out[i][mask] = maps["normal_front"][mask] * np.float32(0.5) + np.float32(0.5)
    return out


def normal_consistency(
    pred: trimesh.Trimesh, gt: trimesh.Trimesh, size: int = 512, views: int = 4
) -> float:
    """PIFu's normal error: mean squared colour distance of the normal renders, 4 views.

    Args:
      pred, gt: normalised-frame meshes (no alignment).
      size: render side (PIFuHD: 512).
      views: number of yaws (PIFuHD: 4, i.e. 0, 90, 180, 270).

    Returns:
      mean over views and over all size² pixels (background included) of
      ``|c_pred − c_gt|²`` with ``c = n·0.5 + 0.5`` (0 = identical; each pixel is at most
      3). Multiply by `PIFUHD_NORMAL_FACTOR` for the figure PIFuHD's tables print.
    """
    _check_gt(gt)
    a = normal_images(pred, size, views)
    b = normal_images(gt, size, views)
    return float(np.mean(np.sum(np.square(a - b, dtype=np.float64), axis=-1)))


def volumetric_iou(
    pred: trimesh.Trimesh,
    gt: trimesh.Trimesh,
    resolution: int = 128,
    box: np.ndarray = RECONSTRUCTION_CUBE,
) -> float:
    """Volumetric IoU of the insides (winding number > 0.5) on a regular grid.

    Args:
      pred, gt: normalised-frame meshes (no alignment).
      resolution: grid cells per axis; the samples are the cell centres.
      box: (2, 3) min and max corner (default the reconstruction cube [−1, 1]³). Volume
        outside the box is not counted.

    Returns:
      |pred ∩ gt| / |pred ∪ gt| in [0, 1]; 0 for an empty ``pred``; nan if neither mesh
      encloses any grid point.
    """
    _check_gt(gt)
    if resolution < 1:
        raise HdjaxError(f"IoU resolution must be >= 1, got {resolution}")
    box = np.asarray(box, np.float64)
    if box.shape != (2, 3) or not np.all(box[1] > box[0]):
        raise HdjaxError(f"IoU box must be (2, 3) [min, max] with max > min, got {box.tolist()}")
    if is_empty(pred):
        return 0.0
    axes = [
        box[0, k] + (np.arange(resolution) + 0.5) * (box[1, k] - box[0, k]) / resolution
        for k in range(3)
    ]
    yz = np.stack(np.meshgrid(axes[1], axes[2], indexing="ij"), axis=-1).reshape(-1, 1, 2)
    slabs = max(1, _IOU_CHUNK // len(yz))  # x slices per call
    inter = union = 0
    for start in range(0, resolution, slabs):
        x = axes[0][start : start + slabs]
        pts = np.concatenate(
            [
                np.broadcast_to(x[None, :, None], (len(yz), len(x), 1)),
                np.broadcast_to(yz, (len(yz), len(x), 2)),
            ],
            axis=-1,
        ).reshape(-1, 3)
        a, b = label_points(pred, pts), label_points(gt, pts)
        inter += int(np.count_nonzero(a & b))
        union += int(np.count_nonzero(a | b))
    return inter / union if union else math.nan


def evaluate_mesh(
    pred: trimesh.Trimesh,
    gt: trimesh.Trimesh,
    units_per_cm: float,
    rng: np.random.Generator,
    n: int = 10000,
    normal_size: int = 512,
    views: int = 4,
    iou_resolution: int = 128,
    box: np.ndarray = RECONSTRUCTION_CUBE,
) -> dict[str, float]:
    """All four scores of one subject.

    Args:
      pred, gt: normalised-frame meshes (no alignment; module docstring).
      units_per_cm: normalised units per centimetre.
      rng: source of the surface samples (p2s first, then Chamfer's two directions).
      n: surface samples per direction; normal_size, views: normal renders;
      iou_resolution, box: IoU grid.

    Returns:
      ``{"p2s_cm", "chamfer_cm", "normal_l2", "iou"}`` (`METRIC_KEYS`), Python floats.
    """
    return {
        "p2s_cm": point_to_surface_cm(pred, gt, units_per_cm, rng, n),
        "chamfer_cm": chamfer_cm(pred, gt, units_per_cm, rng, n),
        "normal_l2": normal_consistency(pred, gt, normal_size, views),
        "iou": volumetric_iou(pred, gt, iou_resolution, box),
    }


def summarize(
    results: Sequence[Mapping[str, Any]], keys: Sequence[str] = METRIC_KEYS
) -> dict[str, Any]:
    """Means over subjects plus the per-subject list.

    Args:
      results: one mapping per subject holding at least ``keys`` (default `METRIC_KEYS`,
        e.g. the output of `evaluate_mesh`), optionally with a ``"subject"`` name.

    Returns:
      ``{key: mean for key in keys, "num_subjects": N, "subjects": [...]}``; the
      means are plain means (an inf subject makes the mean inf), nan when N = 0.
    """
    subjects = [dict(r) for r in results]
    for i, r in enumerate(subjects):
        missing = [k for k in keys if k not in r]
        if missing:
            raise HdjaxError(f"result {i} lacks the metric(s) {', '.join(missing)}")
    out: dict[str, Any] = {}
    for key in keys:
        values = [float(r[key]) for r in subjects]
        out[key] = math.fsum(values) / len(values) if values else math.nan
    out["num_subjects"] = len(subjects)
    out["subjects"] = subjects
    return out


COLUMNS = (
    ("p2s_cm", "P2S (cm) ↓"),
    ("chamfer_cm", "Chamfer (cm) ↓"),
    ("normal_l2", "Normal L2 ↓"),
    ("iou", "IoU ↑"),
)


def _fmt(value: Any) -> str:
    return f"{float(value):.4f}"


def markdown_table(summary: Mapping[str, Any], columns: Sequence[tuple[str, str]] = COLUMNS) -> str:
    """A Markdown table of a `summarize` result: one row per subject, then the mean.

    Subjects are named by their ``"subject"`` entry when present, else by their index;
    ``columns``: (key, title) pairs.
    """
    header = "| subject | " + " | ".join(title for _, title in columns) + " |"
    lines = [header, "|---" + "|---:" * len(columns) + "|"]
    for i, r in enumerate(summary.get("subjects", [])):
        name = str(r.get("subject", i))
        lines.append(f"| {name} | " + " | ".join(_fmt(r[k]) for k, _ in columns) + " |")
    n = summary.get("num_subjects", len(summary.get("subjects", [])))
    mean = " | ".join(f"**{_fmt(summary[k])}**" for k, _ in columns)
    lines.append(f"| **mean ({n})** | {mean} |")
    return "\n".join(lines) + "\n"

"""Eval metrics on meshes with known answers (spheres, boxes, a mesh vs itself, empty)."""

import math

import numpy as np
import pytest
import trimesh

from hdjax.errors import HdjaxError
from hdjax.eval import metrics
from hdjax.geometry.camera import PIFU_UNITS_PER_CM

R, DELTA = 0.5, 0.05  # normalised units: 51.2 cm and 5.12 cm at PIFu's scale
N = 2000  # surface samples per direction (PIFu uses 10,000; the tessellation bias dominates)


def _sphere(radius: float, subdivisions: int = 3, center=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_translation(center)
    return mesh


def _box(extent: float = 1.0, center=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=(extent, extent, extent))
    mesh.apply_translation(center)
    return mesh


EMPTY = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))


def test_mesh_against_itself_scores_perfectly():
    mesh = _sphere(R)
    rng = np.random.default_rng(0)
    scores = metrics.evaluate_mesh(
        mesh, mesh, PIFU_UNITS_PER_CM, rng, n=N, normal_size=64, iou_resolution=24
    )
    assert set(scores) == set(metrics.METRIC_KEYS)
    # Measured: p2s and Chamfer 1.9e-15 cm (float64 round-off), normal error and 1 − IoU
    # exactly 0 (same rays, same triangles).
    assert scores["p2s_cm"] == pytest.approx(0.0, abs=1e-9)
    assert scores["chamfer_cm"] == pytest.approx(0.0, abs=1e-9)
    assert scores["normal_l2"] == pytest.approx(0.0, abs=1e-9)
    assert scores["iou"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("fn", [metrics.point_to_surface_cm, metrics.chamfer_cm])
def test_concentric_spheres_distance_is_the_radius_gap_in_cm(fn):
    # An icosphere's faces sit inside its sphere, so samples of the inner one are a little
    # closer to the outer one than DELTA. Measured relative bias at subdivision 3: −0.39 %
    # (p2s and Chamfer, seeds 0–2); tolerance 2 %.
    pred, gt = _sphere(R), _sphere(R + DELTA)
    got = fn(pred, gt, PIFU_UNITS_PER_CM, np.random.default_rng(1), n=N)
    assert got == pytest.approx(DELTA / PIFU_UNITS_PER_CM, rel=0.02)
    # A subject-specific scale converts the same normalised distance differently.
    other = fn(pred, gt, 2.0 * PIFU_UNITS_PER_CM, np.random.default_rng(1), n=N)
    assert other == pytest.approx(0.5 * got, rel=1e-12)


def test_p2s_goes_from_prediction_to_ground_truth():
    # Prediction = one of the two gt spheres: all its points lie on gt (p2s ≈ 0) while the
    # gt sphere it misses is 0.5 units from it, which only Chamfer's gt → pred half sees.
    pred = _sphere(0.25, center=(-0.5, 0.0, 0.0))
    gt = trimesh.util.concatenate([pred, _sphere(0.25, center=(0.5, 0.0, 0.0))])
    rng = np.random.default_rng(2)
    assert metrics.point_to_surface_cm(pred, gt, 1.0, rng, n=N) == pytest.approx(0.0, abs=1e-9)
    assert metrics.chamfer_cm(pred, gt, 1.0, rng, n=N) > 0.1


def test_concentric_spheres_iou_is_the_volume_ratio():
    # The meshes are scaled copies, so their volume ratio is exactly (r / (r + δ))³ = 0.7513;
    # what remains is the grid error. Measured on [−0.6, 0.6]³: 0.0013 at resolution 32
    # (0.0003 – 0.014 over resolutions 24 – 48 and two boxes); tolerance 0.01.
    box = np.array([[-0.6] * 3, [0.6] * 3])
    iou = metrics.volumetric_iou(_sphere(R), _sphere(R + DELTA), resolution=32, box=box)
    assert iou == pytest.approx((R / (R + DELTA)) ** 3, abs=0.01)


def test_shifted_boxes_iou():
    # Unit cubes shifted by (0.25, 0, 0): 0.75 / 1.25 = 0.6; by (0.3, 0.2, −0.1): the overlap
    # is 0.7·0.8·0.9. Grid cell faces fall on the box faces, so measured error is 0 (to
    # float64) at resolution 40; tolerance 1e-9.
    a = _box()
    assert metrics.volumetric_iou(a, _box(center=(0.25, 0, 0)), resolution=40) == pytest.approx(
        0.6, abs=1e-9
    )
    overlap = 0.7 * 0.8 * 0.9
    iou = metrics.volumetric_iou(a, _box(center=(0.3, 0.2, -0.1)), resolution=40)
    assert iou == pytest.approx(overlap / (2.0 - overlap), abs=1e-9)
    assert metrics.volumetric_iou(a, _box(center=(1.5, 0, 0)), resolution=16) == 0.0


def test_iou_does_not_depend_on_the_chunking(monkeypatch):
    pred, gt = _sphere(R), _sphere(R + DELTA)
    whole = metrics.volumetric_iou(pred, gt, resolution=20)
    monkeypatch.setattr(metrics, "_IOU_CHUNK", 1000)  # 20² points per slice -> 2 slices a call
    assert metrics.volumetric_iou(pred, gt, resolution=20) == whole


def test_normal_error_of_an_empty_render_against_a_sphere():
    # Analytic: inside the disk a sphere's colour c = n/2 + 1/2 is |c − 1|² = 1 − (nx+ny+nz)/2
    # from the white background, whose disk mean is 1 − (2/3)/2 = 2/3; the disk covers πr²/4
    # of the 2 × 2 image. Measured at 128² with subdivision 4: −1.4 % (silhouette pixels and
    # tessellation); tolerance 7.5 %.
    expected = (2.0 / 3.0) * math.pi * R**2 / 4.0
    got = metrics.normal_consistency(EMPTY, _sphere(R, subdivisions=4), size=128)
    assert got == pytest.approx(expected, rel=0.075)


def test_normal_error_separates_different_shapes():
    sphere, box = _sphere(R), _box()
    # Measured 0.044 (64², sphere r 0.5 vs unit cube).
    assert metrics.normal_consistency(sphere, box, size=64) > 0.01
    images = metrics.normal_images(sphere, size=32, views=4)
    assert images.shape == (4, 32, 32, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert metrics.view_yaws(4) == (0.0, 90.0, 180.0, 270.0)


def test_empty_prediction_gives_inf_distances_and_zero_iou():
    gt = _sphere(R)
    scores = metrics.evaluate_mesh(
        EMPTY,
        gt,
        PIFU_UNITS_PER_CM,
        np.random.default_rng(0),
        n=N,
        normal_size=32,
        iou_resolution=16,
    )
    assert scores["p2s_cm"] == math.inf
    assert scores["chamfer_cm"] == math.inf
    assert scores["iou"] == 0.0
    background = np.sum((metrics.normal_images(gt, size=32) - 1.0) ** 2, axis=-1).mean()
    assert scores["normal_l2"] == pytest.approx(background, rel=1e-6)
    assert scores["normal_l2"] > 0.0


def test_bad_ground_truth_and_arguments_raise_one_clear_error():
    rng = np.random.default_rng(0)
    with pytest.raises(HdjaxError, match="ground-truth mesh has no faces"):
        metrics.point_to_surface_cm(_sphere(R), EMPTY, PIFU_UNITS_PER_CM, rng)
    with pytest.raises(HdjaxError, match="units_per_cm"):
        metrics.chamfer_cm(_sphere(R), _sphere(R), 0.0, rng)
    with pytest.raises(HdjaxError, match="box"):
        metrics.volumetric_iou(_sphere(R), _sphere(R), 8, box=np.array([[1.0] * 3, [-1.0] * 3]))


def test_summarize_and_markdown_table():
    rows = [
        {"subject": "a", "p2s_cm": 1.0, "chamfer_cm": 2.0, "normal_l2": 0.1, "iou": 0.5},
        {"subject": "b", "p2s_cm": 3.0, "chamfer_cm": 4.0, "normal_l2": 0.3, "iou": 0.7},
    ]
    summary = metrics.summarize(rows)
    assert summary["p2s_cm"] == pytest.approx(2.0)
    assert summary["chamfer_cm"] == pytest.approx(3.0)
    assert summary["normal_l2"] == pytest.approx(0.2)
    assert summary["iou"] == pytest.approx(0.6)
    assert summary["num_subjects"] == 2
    assert summary["subjects"] == rows
    table = metrics.markdown_table(summary)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2 + 1  # header, rule, 2 subjects, mean
    assert lines[2].startswith("| a | 1.0000 | 2.0000 | 0.1000 | 0.5000 |")
    assert "**mean (2)**" in lines[-1] and "**0.6000**" in lines[-1]

    failed = metrics.summarize([*rows, {**rows[0], "p2s_cm": math.inf, "iou": 0.0}])
    assert failed["p2s_cm"] == math.inf
    assert failed["iou"] == pytest.approx(0.4)
    assert "inf" in metrics.markdown_table(failed)
    assert math.isnan(metrics.summarize([])["iou"])
    with pytest.raises(HdjaxError, match="lacks the metric"):
        metrics.summarize([{"p2s_cm": 1.0}])

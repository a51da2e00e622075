"""Grain input pipeline: determinism, resumption, sharding, crops, backgrounds."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import cv2
import numpy as np
import pytest

from hdjax.data import builder_lib as bl
from hdjax.data import pipeline as pl
from hdjax.errors import HdjaxError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _builder_module():
    mod_name = "synthetic_humans_dataset_builder"
    if mod_name not in sys.modules:
        path = os.path.join(REPO, "datasets", "synthetic_humans", f"{mod_name}.py")
        spec = importlib.util.spec_from_file_location(mod_name, path)
        sys.modules[mod_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[mod_name])
    return sys.modules[mod_name]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """4 records: 64² ortho renders of one body from 4 yaws, 2,000 points each."""
    mod = _builder_module()
    config = mod.Config(
        name="pipe",
        render=bl.pifuhd_config(size=64, yaws=(0.0, 90.0, 180.0, 270.0), num_points=2000),
        bodies=("body_02",),
    )
    builder = mod.Builder(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return pl.open_source(builder.data_dir, "train")


def _config(**kw) -> pl.PipelineConfig:
    base = dict(batch_size=2, num_points=300, coarse_size=32, crop_size=32, num_epochs=2)
    return pl.PipelineConfig(**(base | kw))


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["pifuhd_coarse", "pifuhd_fine"])
def test_reproducible_for_a_seed(source, mode):
    cfg = _config(mode=mode)
    a = _batches(pl.make_loader(source, cfg, seed=7, process_index=0, process_count=1), 3)
    b = _batches(pl.make_loader(source, cfg, seed=7, process_index=0, process_count=1), 3)
    c = _batches(pl.make_loader(source, cfg, seed=8, process_index=0, process_count=1), 3)
    assert all(_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(_equal(x, y) for x, y in zip(a, c, strict=True))
    assert a[0]["points"].shape == (2, 300, 3) and a[0]["labels"].shape == (2, 300)
    assert a[0]["image"].shape == (2, 32, 32, 3)
    assert -1.0 <= a[0]["image"].min() and a[0]["image"].max() <= 1.0


def test_resumes_mid_epoch_identically(source):
    cfg = _config(mode="pifuhd_fine")
    it = iter(pl.make_loader(source, cfg, seed=1, process_index=0, process_count=1))
    next(it)
    state = it.get_state()
    rest = [next(it) for _ in range(3)]  # crosses the epoch boundary (2 batches per epoch)
    resumed = iter(pl.make_loader(source, cfg, seed=1, process_index=0, process_count=1))
    resumed.set_state(state)
    assert all(_equal(x, next(resumed)) for x in rest)


def test_shards_are_disjoint_and_cover_the_data(source):
    cfg = _config(mode="pifuhd_coarse", batch_size=1, num_epochs=1)
    shards = [
        _batches(pl.make_loader(source, cfg, seed=0, process_index=i, process_count=2), 2)
        for i in range(2)
    ]
    calibs = [tuple(b["calib"][0].ravel()) for shard in shards for b in shard]
    assert len(set(calibs)) == 4  # every yaw once (each yaw has its own calib)
    with pytest.raises(StopIteration):
        it = iter(pl.make_loader(source, cfg, seed=0, process_index=0, process_count=2))
        for _ in range(3):
            next(it)


def test_fine_crop_keeps_points_consistent_with_pixels(source):
    rng = np.random.default_rng(0)
    record = source[1]
    cfg = _config(mode="pifuhd_fine", num_points=1500)
    out = pl.prepare(record, rng, cfg)
    col, row = out["crop_offset"]
    c = cfg.crop_size
    full_mask = record["mask"][..., 0] > 0
    np.testing.assert_array_equal(out["mask"][..., 0] > 0, full_mask[row : row + c, col : col + c])
    uv = pl.project_uv(out["points"], out["calib"])
    in_crop = np.all(np.abs(uv) <= 1, axis=1)
    # In-crop points are drawn first: all of them here (fewer stored than asked for).
    stored = np.all(np.abs(pl.project_uv(record["points_fine"], out["calib"])) <= 1, axis=1)
    assert 0 < stored.sum() < 1500 and in_crop.sum() == stored.sum()
    # Crop pixel = full-image pixel − offset, for the same 3D points.
    px_crop = (uv + 1) * (c - 1) / 2
    px_full = (pl.project_uv(out["points"], out["calib_global"]) + 1) * 63 / 2
    offset = np.array([col, row], np.float32)
    np.testing.assert_allclose(px_crop + offset, px_full, atol=1e-3)
    # Inside points land on the subject's pixels of the crop (1-pixel tolerance).
    inside = in_crop & (out["labels"] == 1)
    px = np.rint(px_crop[inside]).astype(int)
    grown = cv2.dilate(out["mask"][..., 0], np.ones((3, 3), np.uint8)) > 0
    assert inside.sum() > 50 and grown[px[:, 1], px[:, 0]].mean() > 0.99
    # Keypoints move with the crop.
    np.testing.assert_allclose(
        out["keypoints"][:, :2] + offset, record["keypoints"][:, :2], rtol=0, atol=1e-3
    )


def test_background_only_outside_the_mask(source, tmp_path):
    record = source[0]
    cfg = _config(mode="pifuhd_coarse", coarse_size=64, jitter=(1.0, 1.0))
    a = pl.prepare(record, np.random.default_rng(0), cfg)
    b = pl.prepare(record, np.random.default_rng(1), cfg)
    mask = a["mask"][..., 0] > 0
    np.testing.assert_allclose(a["image"][mask], b["image"][mask], atol=1e-6)
    assert np.abs(a["image"][~mask] - b["image"][~mask]).mean() > 0.05
    expected = record["image"][mask].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(a["image"][mask], expected, atol=1e-5)


def test_background_folder_skips_unreadable_files(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "good.png"), np.full((40, 50, 3), (0, 0, 255), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        found = pl.list_backgrounds(str(tmp_path))
    assert found == [str(tmp_path / "good.png")]
    assert "broken.jpg" in caplog.text
    bg = pl.image_background(found[0], np.random.default_rng(0), 16)
    np.testing.assert_allclose(bg[..., 0], 1.0)  # red (RGB) from a BGR file
    with pytest.raises(HdjaxError):
        pl.list_backgrounds(str(tmp_path / "missing"))


def test_contact_sheet_rows_show_every_map_and_points(source, tmp_path):
    from hdjax.data import contact_sheet

    record = source[0]
    sheet = contact_sheet.make_sheet([record, source[1]], tile=64)
    assert sheet.shape == (128, 7 * 64, 3) and sheet.dtype == np.uint8
    row = contact_sheet.record_row(record)
    np.testing.assert_array_equal(row[:, :64], record["image"])
    overlay = row[:, 6 * 64 :]
    green = np.all(overlay == contact_sheet.INSIDE_RGB, axis=-1)
    red = np.all(overlay == contact_sheet.OUTSIDE_RGB, axis=-1)
    mask = record["mask"][..., 0] > 0
    assert green.sum() > 20 and red.sum() > 20
    assert mask[green].mean() > 0.9  # inside points drawn on the subject
    assert not contact_sheet.is_perspective(record["calib"])
    # Tiles a quarter of the record's size (as the default 256 px for 1024² records) still
    # show the points: they are drawn after the resize.
    small = contact_sheet.record_row(record, tile=16)[:, 6 * 16 :]
    assert small.shape == (16, 16, 3)
    assert np.all(small == contact_sheet.INSIDE_RGB, axis=-1).sum() > 10
    assert np.all(small == contact_sheet.OUTSIDE_RGB, axis=-1).sum() > 10


def test_color_jitter_matches_the_torchvision_definitions():
    img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    out = pl.color_jitter(img, np.random.default_rng(5), 0.7, 1.0)
    b, c, s = np.random.default_rng(5).uniform(0.7, 1.0, 3)
    grey = np.array([0.299, 0.587, 0.114], np.float32)
    ref = img * b
    ref = (ref - (ref @ grey).mean()) * c + (ref @ grey).mean()
    ref = np.clip((ref - (ref @ grey)[..., None]) * s + (ref @ grey)[..., None], 0, 1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(pl.color_jitter(img, np.random.default_rng(0), 1, 1), img, atol=1e-6)

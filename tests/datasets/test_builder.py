"""Dataset generation: records, the render cache, the TFDS builders (tiny), bad-scan reports."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import trimesh

from hdjax.data import codecs, records, render_cache, render_config, subjects
from hdjax.datasets.scan_renders import scan_renders_dataset_builder
from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder
from hdjax.errors import HdjaxError
from hdjax.geometry import camera as cam

TINY = {"size": 64, "yaws": (0.0, 90.0), "num_points": 1000}


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    mod = synthetic_humans_dataset_builder
    config = mod.Config(
        name="tiny", render=render_config.pifuhd_config(**TINY), bodies=("body_00", "body_01")
    )
    builder = mod.Builder(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return builder


def test_embedded_bodies_are_watertight_adults_with_keypoints():
    names = subjects.embedded_body_names()
    assert len(names) >= 8
    for name in names:
        s = subjects.load_embedded_body(name)
        assert s.mesh.is_watertight, name
        height = np.ptp(s.mesh.vertices[:, 1])
        assert 1.45 < height < 2.0, (name, height)
        assert s.keypoints.shape == (31, 3)
        # Nose above the ankles, both inside the body's bounding box (metres, +y up).
        assert s.keypoints[0, 1] > s.keypoints[15, 1] + 1.0
        lo, hi = s.mesh.bounds
        assert np.all(s.keypoints >= lo - 0.05) and np.all(s.keypoints <= hi + 0.05)
        # Several procedural clothing colours, not one flat colour.
        assert len(np.unique(s.mesh.visual.vertex_colors[:, :3], axis=0)) > 20


def test_depth_and_normal_encodings_round_trip():
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (8, 8)).astype(np.float32)
    mask = rng.random((8, 8)) > 0.3
    back = codecs.png_to_ortho_depth(
        codecs.decode_png(codecs.png_bytes(codecs.ortho_depth_to_png(z, mask)))
    )
    np.testing.assert_allclose(back[mask], z[mask], atol=1e-4)
    assert np.all(codecs.ortho_depth_to_png(z, mask)[~mask] == 0)
    n = rng.normal(size=(8, 8, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    dec = codecs.uint8_to_normal(
        codecs.decode_png(codecs.png_bytes(codecs.normal_to_uint8(n, mask)))
    )
    np.testing.assert_allclose(dec[mask], n[mask], atol=1 / 127.5)


def test_records_match_camera_and_label_points_consistently():
    subject = subjects.load_embedded_body("body_00")
    config = render_config.pifuhd_config(**TINY)
    rec = records.render_record(subject, config, view=1)
    # The view's camera, jittered from the record's generator (the first draws).
    camera = records.make_camera(config, 90.0, records.subject_rng(0, "body_00", 1))
    assert camera.yaw_deg == 90.0 and camera.scale != 1.0
    np.testing.assert_array_equal(rec["calib"], camera.calib)
    mask = codecs.decode_png(rec["mask"]) > 0
    assert 0.03 < mask.mean() < 0.6
    # Every inside point projects onto the silhouette (1-pixel tolerance at 64²).
    inside = rec["points_coarse"][rec["labels_coarse"] == 1]
    uv = inside @ rec["calib"][:2, :3].T + rec["calib"][:2, 3]
    px = np.rint((uv + 1) * 63 / 2).astype(int)
    grown = np.zeros_like(mask)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            grown |= np.roll(mask, (dr, dc), axis=(0, 1))
    assert grown[px[:, 1], px[:, 0]].mean() > 0.99
    assert 0.3 < rec["labels_coarse"].mean() <= 0.5
    # The same seed gives the same record; another view gives another one.
    again = records.render_record(subject, config, view=1)
    np.testing.assert_array_equal(again["points_fine"], rec["points_fine"])
    assert again["image"] == rec["image"]
    assert records.render_record(subject, config, view=0)["image"] != rec["image"]


def test_a_record_is_the_same_alone_or_with_its_subject():
    """Views share the subject's point pool, yet a record depends on (seed, subject, view)
    alone: rendered by itself it equals the one `render_subject` makes with shared pools."""
    subject = subjects.load_embedded_body("body_01")
    config = render_config.pifuhd_config(**TINY)
    together = records.render_subject(lambda _: subject, config, 5, None, "body_01").records
    alone = records.render_record(subject, config, view=1, seed=5)
    for key in ("points_coarse", "labels_coarse", "points_fine", "labels_fine"):
        np.testing.assert_array_equal(together[1][1][key], alone[key])
    a, b = (together[v][1]["points_coarse"] for v in (0, 1))
    shared = np.isin(a.view("V12").ravel(), b.view("V12").ravel())
    assert 0.1 < shared.mean() < 0.7, shared.mean()  # ~1.1n of a 3n pool per view
    separate = records.render_record(subject, dataclasses.replace(config, point_pool=0.0), 0)
    c = separate["points_coarse"]
    assert not np.isin(c.view("V12").ravel(), b.view("V12").ravel()).any()


def _sigma_m(subject, config):
    """RMS distance of a record's near-surface coarse points to the mesh, in scan metres."""
    import point_cloud_utils as pcu

    norm = records.normalization(subject, config)
    mesh = cam.normalize_mesh(subject.mesh, norm)
    points = records.render_record(subject, config, view=0)["points_coarse"].astype(np.float64)
    dist, _, _ = pcu.closest_points_on_mesh(points, mesh.vertices, np.asarray(mesh.faces))
    near = dist[dist < 0.2 * norm.scale]  # drops the uniform points
    return float(np.sqrt(np.mean(near**2)) / norm.scale)


def test_sigma_is_absolute_centimetres_when_the_scan_unit_is_known():
    """σ = 5 cm of the real body (metres here), not 5 cm of a body rescaled to 180 cm."""
    subject = subjects.load_embedded_body("body_03")
    height_m = float(np.ptp(subject.mesh.vertices[:, 1]))
    assert abs(height_m - 1.8) > 0.1, "a body whose height tells the two rules apart"
    config = render_config.pifuhd_config(size=32, yaws=(0.0,), num_points=4000, sigma_coarse_cm=5.0)
    known = _sigma_m(subject, config)
    unknown = _sigma_m(dataclasses.replace(subject, unit_cm=None), config)
    # The RMS distance of N(0, σ²I) offsets to a flat surface is σ; thin limbs shrink it.
    assert 0.8 * 0.05 < known < 0.05
    # Same seed, same draws: only the scale of the offsets differs between the two rules
    # (16 % here). Measured 2.5 % off 1.8 / height: curvature shrinks the nearest-point
    # distance a little more for the larger σ (geometry, not float noise).
    assert known / unknown == pytest.approx(1.8 / height_m, rel=0.08)
    assert known / unknown > 1.06  # the 180 cm rule alone would give 1


def test_tfds_build_reads_back_every_feature(tiny_synthetic):
    assert "tensorflow" not in sys.modules  # TFDS without TensorFlow
    source = tiny_synthetic.as_data_source("train")
    assert len(source) == 2  # body_00 x 2 yaws; body_01 is the test split
    assert len(tiny_synthetic.as_data_source("test")) == 2
    expected = {
        "image": ((64, 64, 3), np.uint8),
        "mask": ((64, 64, 1), np.uint8),
        "normal_front": ((64, 64, 3), np.uint8),
        "normal_back": ((64, 64, 3), np.uint8),
        "depth_front": ((64, 64, 1), np.uint16),
        "depth_back": ((64, 64, 1), np.uint16),
        "calib": ((4, 4), np.float32),
        "keypoints": ((31, 3), np.float32),
        "hands": ((42, 3), np.float32),
        "points_coarse": ((1000, 3), np.float32),
        "labels_coarse": ((1000,), np.uint8),
        "points_fine": ((1000, 3), np.float32),
        "labels_fine": ((1000,), np.uint8),
    }
    rec = source[0]
    assert set(expected) | {"subject", "yaw", "camera"} == set(rec)
    assert rec["camera"] in (b"ortho", "ortho")
    for key, (shape, dtype) in expected.items():
        assert rec[key].shape == shape, key
        assert rec[key].dtype == dtype, key
    mask = rec["mask"][..., 0] > 0
    assert mask.any() and not mask.all()
    assert np.all(rec["depth_front"][~mask] == 0) and np.all(rec["depth_front"][mask] > 0)
    # Ortho depth: front surface nearer the camera (+z) than the back one.
    zf = codecs.png_to_ortho_depth(rec["depth_front"][..., 0])[mask]
    zb = codecs.png_to_ortho_depth(rec["depth_back"][..., 0])[mask]
    assert np.all(zf >= zb - 1e-3)
    assert rec["keypoints"][:, 2].all()  # all 31 keypoints (knuckles too) inside the image
    assert not rec["hands"].any()  # the embedded bodies have no hand joints
    report = json.load(open(os.path.join(tiny_synthetic.data_dir, "build_report_train.json")))
    assert report["used"] == ["body_00"] and report["records"] == 2


def _write_scans(root: str) -> None:
    good = subjects.load_embedded_body("body_03").mesh
    os.makedirs(os.path.join(root, "good"))
    good.export(os.path.join(root, "good", "good.ply"))
    os.makedirs(os.path.join(root, "corrupt"))
    with open(os.path.join(root, "corrupt", "corrupt.obj"), "w") as f:
        f.write("v 0 0\nf 1 2 x\nthis is not an obj\n")
    os.makedirs(os.path.join(root, "nofaces"))
    with open(os.path.join(root, "nofaces", "nofaces.obj"), "w") as f:
        f.write("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    nan = trimesh.creation.box()
    nan.vertices[0, 0] = np.nan
    os.makedirs(os.path.join(root, "nan"))
    with open(os.path.join(root, "nan", "nan.obj"), "w") as f:
        f.write(trimesh.exchange.obj.export_obj(nan))
    huge = trimesh.creation.box(extents=(1e6, 1e6, 1e6))
    os.makedirs(os.path.join(root, "huge"))
    huge.export(os.path.join(root, "huge", "huge.obj"))
    os.makedirs(os.path.join(root, "empty_folder"))


def test_bad_scans_are_skipped_and_reported(tmp_path):
    scans = tmp_path / "scans"
    _write_scans(str(scans))
    mod = scan_renders_dataset_builder
    config = mod.Config(
        name="tiny",
        render=render_config.pifuhd_config(size=64, yaws=(0.0,), num_points=500),
        test_every=0,
    )
    builder = mod.Builder(config=config, data_dir=str(tmp_path / "tfds"))
    import tensorflow_datasets as tfds

    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(scans))
    )
    source = builder.as_data_source("train")
    assert len(source) == 1 and source[0]["subject"] in (b"good", "good")
    report = json.load(open(os.path.join(builder.data_dir, "build_report_train.json")))
    assert report["used"] == ["good"]
    reasons = dict(report["skipped"])
    assert set(reasons) == {"corrupt", "nofaces", "nan", "huge", "empty_folder"}
    assert "no faces" in reasons["nofaces"] or "failed to load" in reasons["nofaces"]
    assert "non-finite" in reasons["nan"]
    assert "max_extent" in reasons["huge"]
    assert "no mesh file" in reasons["empty_folder"]
    assert report["summary"].startswith("1 subjects used, 5 skipped")


def test_twok2k_config_renders_2k2k_depth_encoding():
    subject = subjects.load_embedded_body("body_01")
    config = render_config.twok2k_config(size=64, yaws=(-30.0,), num_points=200)
    rec = records.render_record(subject, config, view=0)
    d = codecs.png_to_depth(codecs.decode_png(rec["depth_front"]), rec["camera"])
    fg = d > 0
    # 2K2K: d = (r − 1)·f + 1024 with the body within ±0.36 of the origin at r ≈ 1.
    f = cam.PerspCamera(64).focal
    assert np.all(np.abs(d[fg] - 1024) < 0.4 * f)
    camera = records.make_camera(config, -30.0, records.subject_rng(0, "body_01", 0))
    np.testing.assert_array_equal(rec["calib"], camera.calib)
    assert rec["camera"] == "persp"


def test_beam_build_matches_local_records(tmp_path):
    beam = pytest.importorskip("apache_beam")
    import tensorflow_datasets as tfds

    mod = synthetic_humans_dataset_builder
    render = render_config.pifuhd_config(size=32, yaws=(0.0, 90.0), num_points=200)
    config = mod.Config(name="tiny_beam", render=render, bodies=("body_04",), beam=True)
    builder = mod.Builder(config=config, data_dir=str(tmp_path))
    options = beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=options))
    source = builder.as_data_source("train")
    assert len(source) == 2
    assert not os.path.exists(builder.render_cache_dir)  # workers wrote it; removed after
    local = records.render_record(subjects.load_embedded_body("body_04"), render, view=1)
    rec = next(source[i] for i in range(2) if source[i]["yaw"] == 90.0)
    np.testing.assert_array_equal(rec["points_fine"], local["points_fine"])
    np.testing.assert_array_equal(rec["image"], codecs.decode_png(local["image"]))


# ------------------------------------------------------------------------ resumable builds

CACHE_TINY = {"size": 32, "num_points": 200}
_RENDER_RECORD = records.render_record  # the real one, whatever a test has patched in since


class _Interrupted(Exception):
    """Stands for a build killed mid-way (not one of the render errors that skip a subject)."""


class _CountingRender:
    """Stands in for `records.render_record`: counts calls, raises `_Interrupted` later."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise _Interrupted
        self.calls += 1
        return _RENDER_RECORD(*args, **kwargs)


def _generate(names, config, cache_dir, seed=0, num_workers=1):
    report = subjects.BuildReport()
    load = subjects.load_embedded_body
    out = records.generate_records(names, load, config, report, seed, cache_dir, num_workers)
    return list(out), report


def _assert_same_records(got, want):
    """Same keys in the same order, every value equal and of the same type and dtype."""
    assert [k for k, _ in got] == [k for k, _ in want]
    for (key, a), (_, b) in zip(got, want, strict=True):
        assert set(a) == set(b), key
        for name, value in b.items():
            assert type(a[name]) is type(value), (key, name)
            if isinstance(value, np.ndarray | np.generic):
                assert a[name].dtype == value.dtype, (key, name)
                np.testing.assert_array_equal(a[name], value)
            else:
                assert a[name] == value, (key, name)


def test_interrupted_generation_resumes_from_the_render_cache(tmp_path, monkeypatch):
    config = render_config.pifuhd_config(yaws=(0.0, 120.0, 240.0), **CACHE_TINY)
    names = ("body_00", "body_01")
    want, _ = _generate(names, config, cache_dir=None)
    cache = str(tmp_path / "cache")

    # Killed during the 5th render: body_00's 3 views and body_01's first are finished.
    monkeypatch.setattr(records, "render_record", _CountingRender(fail_after=4))
    with pytest.raises(_Interrupted):
        _generate(names, config, cache)
    assert len([f for f in os.listdir(cache) if f.endswith(".npz")]) == 4
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]  # no half-written file

    counter = _CountingRender()
    monkeypatch.setattr(records, "render_record", counter)
    got, report = _generate(names, config, cache)
    assert counter.calls == 2  # only body_01's last two views
    assert report.cached == 4 and report.records == 6
    _assert_same_records(got, want)

    # A finished cache renders nothing at all.
    counter = _CountingRender()
    monkeypatch.setattr(records, "render_record", counter)
    got, report = _generate(names, config, cache)
    assert counter.calls == 0 and report.cached == 6
    _assert_same_records(got, want)


def test_changed_render_config_or_seed_never_reuses_cached_records(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    config = render_config.pifuhd_config(yaws=(0.0, 90.0), **CACHE_TINY)
    subject = subjects.load_embedded_body("body_02")
    _generate(["body_02"], config, cache)
    for changed, seed in (
        (dataclasses.replace(config, sigma_fine_cm=2.0), 0),
        (dataclasses.replace(config, size=48), 0),
        (config, 1),
    ):
        assert records.cache_tag(changed, seed) != records.cache_tag(config, 0)
        counter = _CountingRender()
        monkeypatch.setattr(records, "render_record", counter)
        got, report = _generate(["body_02"], changed, cache, seed)
        assert counter.calls == 2 and report.cached == 0
        monkeypatch.undo()
        # What was yielded is the changed config's record, not a stale one.
        fresh = records.render_record(subject, changed, 0, seed)
        _assert_same_records(got[:1], [("body_02_v000", fresh)])
    # The original config still finds its own files.
    counter = _CountingRender()
    monkeypatch.setattr(records, "render_record", counter)
    _generate(["body_02"], config, cache)
    assert counter.calls == 0


def test_changed_record_code_never_reuses_cached_records(monkeypatch):
    """The tag hashes the source of the modules that make records (sampling, for one)."""
    config = render_config.pifuhd_config(**TINY)
    before = records.cache_tag(config, 0)
    real = records.inspect.getsource

    def edited(module):
        text = real(module)
        return text + "\n# changed" if module is records.point_sampling else text

    monkeypatch.setattr(records.inspect, "getsource", edited)
    assert records.cache_tag(config, 0) != before


def test_corrupt_cache_files_are_rerendered_with_a_warning(tmp_path, monkeypatch, caplog):
    cache = str(tmp_path / "cache")
    config = render_config.pifuhd_config(yaws=(0.0, 90.0, 180.0, 270.0), **CACHE_TINY)
    want, _ = _generate(["body_03"], config, cache)
    store = render_cache.RecordCache(cache, records.cache_tag(config, 0))
    paths = [store.path(key) for key, _ in want]
    with open(paths[0], "r+b") as f:  # truncated: no zip central directory
        f.truncate(os.path.getsize(paths[0]) // 2)
    with open(paths[1], "r+b") as f:  # one payload byte flipped: zip CRC mismatch
        f.seek(os.path.getsize(paths[1]) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    open(paths[2], "wb").close()  # empty

    counter = _CountingRender()
    monkeypatch.setattr(records, "render_record", counter)
    with caplog.at_level("WARNING"):
        got, report = _generate(["body_03"], config, cache)
    assert counter.calls == 3 and report.cached == 1
    _assert_same_records(got, want)
    warned = [r.getMessage() for r in caplog.records if "render cache" in r.getMessage()]
    assert len(warned) == 3
    assert all(any(os.path.basename(p) in w for w in warned) for p in paths[:3])
    # The re-rendered records replaced the bad files.
    for key, record in want[:3]:
        _assert_same_records([(key, store.get(key))], [(key, record)])


def test_tfds_build_resumes_after_an_interruption(tmp_path, monkeypatch):
    mod = synthetic_humans_dataset_builder
    render = render_config.pifuhd_config(yaws=(0.0, 90.0), **CACHE_TINY)

    def build(data_dir, **kw):
        config = mod.Config(name="tiny_resume", render=render, bodies=("body_05", "body_06"), **kw)
        builder = mod.Builder(config=config, data_dir=str(data_dir))
        builder.download_and_prepare()
        return builder

    reference = build(tmp_path / "reference")
    assert not os.path.exists(reference.render_cache_dir)  # removed after success

    monkeypatch.setattr(records, "render_record", _CountingRender(fail_after=3))
    with pytest.raises(_Interrupted):
        build(tmp_path / "resumed")
    cache_dir = os.path.join(tmp_path, "resumed", "synthetic_humans", "tiny_resume", "render_cache")
    assert len(os.listdir(os.path.join(cache_dir, str(mod.Builder.VERSION)))) == 3

    counter = _CountingRender()
    monkeypatch.setattr(records, "render_record", counter)
    resumed = build(tmp_path / "resumed", keep_render_cache=True)
    assert counter.calls == 1  # 4 records in all, 3 finished before the interruption
    assert os.path.isdir(resumed.render_cache_dir)
    assert resumed.render_cache_dir == os.path.join(cache_dir, str(mod.Builder.VERSION))
    cached = {
        split: json.load(open(os.path.join(resumed.data_dir, f"build_report_{split}.json")))
        for split in ("train", "test")
    }
    assert sum(r["cached"] for r in cached.values()) == 3
    for split in ("train", "test"):
        a, b = resumed.as_data_source(split), reference.as_data_source(split)
        assert len(a) == len(b) == 2
        for i in range(2):
            assert set(a[i]) == set(b[i])
            for name in b[i]:
                np.testing.assert_array_equal(a[i][name], b[i][name], err_msg=name)


# ------------------------------------------------------------------------ parallel builds


def _shard_bytes(builder) -> dict[str, bytes]:
    names = sorted(n for n in os.listdir(builder.data_dir) if ".array_record-" in n)
    assert names
    return {n: open(os.path.join(builder.data_dir, n), "rb").read() for n in names}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux thread affinity")
def test_pin_threads_pins_the_threads_imports_started():
    """A build worker's BLAS threads start at import, before it pins itself: all of them
    must follow, or they spin on the other workers' cores."""
    import subprocess

    code = (
        "import glob, os, numpy\n"
        "from hdjax.data import records\n"
        "records.pin_threads({min(os.sched_getaffinity(0))})\n"
        "for t in glob.glob('/proc/self/task/*/status'):\n"
        "    print([x for x in open(t) if x.startswith('Cpus_allowed_list')][0].split()[-1])\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    allowed = out.stdout.split()
    assert len(allowed) >= 2 and len(set(allowed)) == 1, allowed
    assert "-" not in allowed[0] and "," not in allowed[0], allowed


def test_shards_are_the_same_bytes_for_any_number_of_workers(tmp_path):
    mod = synthetic_humans_dataset_builder
    render = render_config.pifuhd_config(yaws=(0.0, 180.0), **CACHE_TINY)
    bodies = ("body_02", "body_03", "body_04")
    built = []
    for workers in (1, 2):
        config = mod.Config(name="tiny_workers", render=render, bodies=bodies, num_workers=workers)
        builder = mod.Builder(config=config, data_dir=str(tmp_path / f"w{workers}"))
        builder.download_and_prepare()
        built.append(builder)
    assert len(built[0].as_data_source("train")) == 4
    assert _shard_bytes(built[0]) == _shard_bytes(built[1])


def _load_or_die(name: str) -> subjects.Subject:
    """A loader whose worker process dies (as if OOM-killed) on body_03."""
    if name == "body_03":
        os.kill(os.getpid(), 9)
    return subjects.load_embedded_body(name)


def test_a_dead_worker_fails_the_build_and_the_rerun_renders_only_the_rest(tmp_path):
    config = render_config.pifuhd_config(yaws=(0.0,), **CACHE_TINY)
    names = ("body_02", "body_03", "body_04")
    cache = str(tmp_path / "cache")
    report = subjects.BuildReport()
    with pytest.raises(HdjaxError, match=r"worker died.*kept in the render cache.*rerun"):
        list(records.generate_records(names, _load_or_die, config, report, 0, cache, 2))
    finished = len(os.listdir(cache)) if os.path.isdir(cache) else 0
    assert finished <= 2  # body_03 never rendered
    got, report = _generate(names, config, cache_dir=cache, num_workers=2)
    want, _ = _generate(names, config, cache_dir=None)
    _assert_same_records(got, want)
    assert report.cached == finished and report.used == list(names)


def test_a_split_over_the_memory_limit_builds_without_tensorflow(tmp_path, monkeypatch):
    """TFDS spills a split over 1 GB to shuffle buckets, written through TensorFlow unless
    `tfds_base` replaces them; a limit of 0 bytes makes even a tiny build spill."""
    from tensorflow_datasets.core import shuffle

    mod = synthetic_humans_dataset_builder
    render = render_config.pifuhd_config(yaws=(0.0, 180.0), **CACHE_TINY)
    config = mod.Config(name="tiny_spill", render=render, bodies=("body_02", "body_03"))
    built = []
    for limit in (shuffle.MAX_MEM_BUFFER_SIZE, 0):
        monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", limit)
        builder = mod.Builder(config=config, data_dir=str(tmp_path / f"limit{limit}"))
        builder.download_and_prepare()
        source = builder.as_data_source("train")
        rows = (source[i] for i in range(len(source)))
        built.append({(r["subject"], float(r["yaw"])): r for r in rows})
    assert len(built[0]) == 2 and built[0].keys() == built[1].keys()
    for key, record in built[0].items():
        for field, value in record.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(built[1][key][field]))

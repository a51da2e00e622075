"""End to end on the tiny config: photo -> mesh, field queries, conversion, bad input."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from configs.pifuhd import get_config
from hdjax.geometry import mesh as mesh_lib
from hdjax.geometry import octree
from hdjax.models.pifuhd import PIFuHDArch, init_params
from hdjax.reconstruction import pifuhd as recon
from hdjax.reconstruction.weights import open_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def cfg():
    return get_config("tiny")


@pytest.fixture(scope="module")
def weights(cfg):
    return open_weights("random", PIFuHDArch.from_config(cfg.model.arch), seed=0)


def _image(path, size=(90, 60)):
    img = np.full((*size, 3), 90, np.uint8)
    cv2.ellipse(img, (30, 45), (15, 40), 0, 0, 360, (40, 160, 200), -1)
    cv2.imwrite(str(path), img)
    return path


def test_reconstruct_writes_mesh_and_normals(tmp_path, cfg, weights):
    _image(tmp_path / "a.png")
    rc = cfg.reconstruct.copy_and_resolve_references()
    rc.input, rc.mesh_format, rc.octree = str(tmp_path / "a.png"), "both", "parity"
    summary = recon.reconstruct_items(weights, rc, str(tmp_path / "out"))
    assert summary.line() == "1 of 1 images written"
    out = tmp_path / "out" / "reconstruct"
    mesh = trimesh.load(out / "a.obj", process=False)
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert np.all(np.abs(mesh.vertices) <= 1.0)
    colors = mesh.visual.vertex_colors[:, :3]
    assert colors.std() > 0  # normal colours, not a constant
    ply = trimesh.load(out / "a.ply", process=False)
    np.testing.assert_allclose(ply.vertices, mesh.vertices, atol=1e-4)
    png = cv2.imread(str(out / "a_normals.png"))
    assert png.shape == (64, 192, 3)
    assert sorted(os.listdir(out)) == ["a.obj", "a.ply", "a_normals.png"]


def test_grid_without_skipping_equals_the_dense_field(cfg, weights, tmp_path):
    """With no cell ever skipped (threshold < 0) the octree is a dense evaluation: every node
    but the official never-evaluated last slices holds the network's occupancy there."""
    from hdjax.reconstruction import images, preprocess

    img = images.load_image(_image(tmp_path / "b.png"))
    fine, coarse = preprocess.prepare_pifuhd_inputs(
        img, preprocess.whole_image_rect(*img.shape[:2]), 128, 64
    )
    feats, timings = recon.image_features(weights, fine, coarse)
    assert sorted(timings) == ["coarse", "fine", "netB", "netF"]
    assert all(t > 0 for t in timings.values())
    evaluate = recon.occupancy_fn(weights, feats, chunk=1000)
    r = 16
    grid, stats = recon.occupancy_grid(evaluate, r, "parity", 4, -1.0)
    assert stats.queries == (r - 1) ** 3
    idx = np.stack(np.meshgrid(*[np.arange(r - 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    dense = evaluate(octree.indices_to_points(idx, r))
    np.testing.assert_allclose(grid[:-1, :-1, :-1].reshape(-1), dense, atol=1e-6)
    assert np.all(grid[-1] == 0) and np.all(grid[:, -1] == 0) and np.all(grid[:, :, -1] == 0)
    # Chunk size does not change values.
    pts = octree.indices_to_points(idx, r)
    np.testing.assert_allclose(recon.occupancy_fn(weights, feats, chunk=97)(pts), dense, atol=1e-6)


def _dense_grid(weights, image_path, r):
    """The network's occupancy at every node of the (R, R, R) grid (last slices 0, official)."""
    from hdjax.reconstruction import images, preprocess

    img = images.load_image(image_path)
    fine, coarse = preprocess.prepare_pifuhd_inputs(
        img,
        preprocess.whole_image_rect(*img.shape[:2]),
        weights.arch.fine_size,
        weights.arch.coarse_size,
    )
    feats, _ = recon.image_features(weights, fine, coarse)
    idx = np.stack(np.meshgrid(*[np.arange(r - 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = np.zeros((r, r, r), np.float32)
    grid[:-1, :-1, :-1] = recon.occupancy_fn(weights, feats, chunk=4096)(
        octree.indices_to_points(idx, r)
    ).reshape((r - 1,) * 3)
    return grid


def test_fast_grid_mesh_lies_on_the_dense_field_surface(tmp_path, cfg, weights):
    """The narrow band evaluates both ends of every grid edge marching cubes cuts, so each
    vertex it writes is a vertex of the densely evaluated field's mesh; with random weights
    the field is noisy and tiny components may be missed, but not much of the surface.
    Random weights give no contrast (every cell within 1e-4), so the contrast rule would stop
    at the first lattice: threshold 0 switches it off to exercise the tracing.
    "grid" colours are unit normals mapped to [0, 1]."""
    _image(tmp_path / "c.png")
    rc = cfg.reconstruct.copy_and_resolve_references()
    rc.input, rc.octree, rc.colors = str(tmp_path / "c.png"), "fast", "grid"
    rc.threshold = 0.0
    assert not recon.reconstruct_items(weights, rc, str(tmp_path)).failed
    lines = (tmp_path / "reconstruct" / "c.obj").read_text().splitlines()
    rows = np.array([line.split()[1:] for line in lines if line.startswith("v ")], np.float64)
    written, colors = rows[:, :3], rows[:, 3:]
    dense, _ = mesh_lib.extract_mesh(
        _dense_grid(weights, tmp_path / "c.png", rc.resolution), rc.resolution
    )
    # OBJ rounds to 4 decimals: up to √3·5e-5 ≈ 9e-5 apart; a voxel is 2/64 ≈ 0.03.
    dist, _ = cKDTree(dense).query(written)
    assert dist.max() < 5e-4
    # Coverage depends on the random weights' noise (measured 94 % and 98.9 % for two inits:
    # the band misses blobs a few voxels wide); a broken band would lose most of the surface.
    assert 0.8 * len(dense) < len(written) <= len(dense)
    np.testing.assert_allclose(np.linalg.norm(colors * 2 - 1, axis=1), 1, atol=1e-3)


def test_bad_image_in_folder_is_reported_and_others_done(tmp_path, cfg, weights):
    _image(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rc = cfg.reconstruct.copy_and_resolve_references()
    rc.input = str(tmp_path)
    summary = recon.reconstruct_items(weights, rc, str(tmp_path / "out"))
    assert summary.written == ["good"] and [n for n, _ in summary.failed] == ["bad.png"]
    assert summary.line().startswith("1 of 2 images written, 1 failed: bad.png (")
    names = sorted(os.listdir(tmp_path / "out" / "reconstruct"))
    assert names == ["good.obj", "good_normals.png"]


@pytest.fixture(scope="module")
def xla_cache(request, tmp_path_factory):
    """One persistent compilation cache for every `hdjax.main` run of this module.

    In pytest's cache folder when the cache plugin is on, so later sessions reuse it too
    (entries are keyed by the program and the JAX version, so stale ones are never hit).
    """
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return cache.mkdir("hdjax_xla_cache")
    return tmp_path_factory.mktemp("xla_cache")


def _main(tmp_path, cache_dir, *args):
    cmd = [
        sys.executable,
        "-m",
        "hdjax.main",
        f"--config={REPO}/configs/pifuhd.py:tiny",
        f"--workdir={tmp_path / 'work'}",
        f"--compilation_cache={cache_dir}",
        "--config.checkpoint=random",  # a later --config.checkpoint wins
        *args,
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def _query(tmp_path, cache_dir, *extra):
    """`--mode=query` on tmp_path/q.png and tmp_path/p.npy, writing tmp_path/o.npy."""
    return _main(
        tmp_path,
        cache_dir,
        "--mode=query",
        f"--config.reconstruct.input={tmp_path / 'q.png'}",
        f"--config.reconstruct.points={tmp_path / 'p.npy'}",
        f"--output={tmp_path / 'o.npy'}",
        *extra,
    )


def test_main_query_mode(tmp_path, xla_cache):
    _image(tmp_path / "q.png")
    pts = np.random.default_rng(0).uniform(-1, 1, (500, 3)).astype(np.float32)
    np.save(tmp_path / "p.npy", pts)
    r = _query(tmp_path, xla_cache)
    assert r.returncode == 0, r.stderr[-2000:]
    occ = np.load(tmp_path / "o.npy")
    assert occ.shape == (500,) and np.all((occ >= 0) & (occ <= 1))


def _evil_pickle(path, marker):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(path, "wb") as f:
        pickle.dump({"model_state_dict": Evil()}, f, protocol=2)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", r"p\.npy: cannot read points"),
        ("shape", r"p\.npy: points must be an \(N, 3\)"),
        ("truncated_pt", r"ck\.pt: truncated"),
        ("evil_pt", r"ck\.pt: refusing to load: .*(posix|os)\.system"),
        ("wrong_arch", r"ck\.pt: tensor \S+ (is missing|has shape)"),
        ("bad_image", r"q\.png: "),
    ],
)
def test_main_bad_input_is_one_clear_line(tmp_path, xla_cache, case, pattern):
    torch = pytest.importorskip("torch") if case in ("truncated_pt", "wrong_arch") else None
    _image(tmp_path / "q.png")
    np.save(tmp_path / "p.npy", np.zeros((4, 3), np.float32))
    extra = []
    if case == "missing":
        (tmp_path / "p.npy").unlink()
    elif case == "shape":
        np.save(tmp_path / "p.npy", np.zeros((4, 2), np.float32))
    elif case == "bad_image":
        (tmp_path / "q.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    elif case == "evil_pt":
        _evil_pickle(tmp_path / "ck.pt", tmp_path / "pwned")
        extra = [f"--config.checkpoint={tmp_path / 'ck.pt'}"]
    elif case in ("truncated_pt", "wrong_arch"):
        _tiny_checkpoint(torch, tmp_path / "ck.pt", wrong_arch=case == "wrong_arch")
        if case == "truncated_pt":
            data = (tmp_path / "ck.pt").read_bytes()
            (tmp_path / "ck.pt").write_bytes(data[: len(data) // 2])
        extra = [f"--config.checkpoint={tmp_path / 'ck.pt'}"]
    r = _query(tmp_path, xla_cache, *extra)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    import re

    assert re.search(pattern, last), last
    assert not (tmp_path / "o.npy").exists()
    assert not (tmp_path / "pwned").exists()


def _tiny_checkpoint(torch, path, wrong_arch=False, seed=1):
    """The tiny config's random params saved in the official checkpoint layout."""
    from hdjax.models.pifuhd_official import arch_to_options, params_to_state_dict

    arch = PIFuHDArch.from_config(get_config("tiny").model.arch)
    params = init_params(arch, seed)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in params_to_state_dict(params, arch).items()}
    opt, opt_netG = arch_to_options(arch)
    if wrong_arch:
        opt_netG["num_stack"] += 1
    torch.save({"model_state_dict": sd, "opt": opt, "opt_netG": opt_netG}, path)
    return arch, params


def test_tiny_checkpoint_round_trips_through_official_layout(tmp_path):
    torch = pytest.importorskip("torch")
    arch, params = _tiny_checkpoint(torch, tmp_path / "t.pt")
    w = open_weights(str(tmp_path / "t.pt"), PIFuHDArch.from_config(get_config().model.arch))
    assert w.arch == arch  # the file's options decide, not the config
    for names in [("netG", "netF"), ("netG", "image_filter"), ("mlp",)]:
        got = w.get(names)
        want = params
        for k in names:
            want = want[k]
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


def _small(cfg, **kw):
    rc = cfg.reconstruct.copy_and_resolve_references()
    rc.resolution, rc.init_resolution = 32, 8
    rc.update(kw)
    return rc


def test_same_stem_never_overwrites_and_summary_counts(tmp_path, cfg, weights):
    """`x.png` and `x.jpg` both reconstruct (as x_png, x_jpg); a name reused within one run is
    refused, not overwritten; a crop mostly off the image is written but counted."""
    from hdjax.reconstruction import preprocess

    _image(tmp_path / "x.png")
    _image(tmp_path / "x.jpg")
    (tmp_path / "x_rect.txt").write_text("-60 -60 100 100\n")  # 16 % on the image
    out = tmp_path / "out"
    summary = recon.reconstruct_items(weights, _small(cfg, input=str(tmp_path)), str(out))
    assert summary.written == ["x_jpg", "x_png"] and not summary.failed
    assert [n for n, _ in summary.warned] == ["x.jpg", "x.png"]
    assert summary.line().startswith("2 of 2 images written; 2 with a suspicious crop")
    assert sorted(os.listdir(out / "reconstruct")) == [
        "x_jpg.obj",
        "x_jpg_normals.png",
        "x_png.obj",
        "x_png_normals.png",
    ]
    # Two items with one output name (e.g. x.PNG and x.png on a case-insensitive disk).
    items = preprocess.find_inputs(tmp_path)
    items = [dataclasses.replace(i, name="same") for i in items]
    before = (out / "reconstruct" / "x_jpg.obj").read_bytes()
    summary = recon.reconstruct_items(weights, _small(cfg), str(out), items)
    assert summary.written == ["same"]
    assert summary.failed == [
        ("x.png", f"would overwrite {out}/reconstruct/same.obj, written earlier in this run")
    ]
    assert (out / "reconstruct" / "x_jpg.obj").read_bytes() == before


def test_mesh_is_written_before_the_png(tmp_path, cfg, weights, monkeypatch):
    """Interrupted between the two files, the mesh is complete and the PNG absent: a
    `_normals.png` only exists beside its complete mesh. Stale temporaries are removed."""
    out = tmp_path / "reconstruct"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".a.obj.hdjax-{dead.pid}-abc.tmp").write_bytes(b"left by a killed run")

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(recon.visualize, "save_normals_png", interrupted)
    _image(tmp_path / "a.png")
    with pytest.raises(KeyboardInterrupt):
        recon.reconstruct_items(weights, _small(cfg, input=str(tmp_path / "a.png")), str(tmp_path))
    assert os.listdir(out) == ["a.obj"]
    assert trimesh.load(out / "a.obj", process=False).faces.shape[0] > 0


def test_no_contrast_fast_grid_costs_no_more_than_parity(cfg, weights, tmp_path):
    """Random weights: occupancy within 1e-4 of 0.5 everywhere, the fast octree's worst case."""
    from hdjax.reconstruction import images, preprocess

    img = images.load_image(_image(tmp_path / "b.png"))
    fine, coarse = preprocess.prepare_pifuhd_inputs(
        img, preprocess.whole_image_rect(*img.shape[:2]), 128, 64
    )
    feats, _ = recon.image_features(weights, fine, coarse)
    evaluate = recon.occupancy_fn(weights, feats, chunk=4096)
    counts = {}
    for mode in ("parity", "fast"):
        rc = cfg.reconstruct
        counts[mode] = recon.occupancy_grid(
            evaluate, rc.resolution, mode, rc.init_resolution, rc.threshold
        )[1].queries
    assert counts["fast"] <= counts["parity"]

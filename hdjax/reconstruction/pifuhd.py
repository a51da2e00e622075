"""Photo -> mesh with PIFuHD, stage by stage, within bounded memory.

Stages: normal nets (one at a time, their weights dropped after use) -> coarse and fine
filters (only the last stack's features are kept) -> occupancy queries in fixed-size jitted
chunks over the octree grid -> marching cubes -> normal-coloured OBJ/PLY + a PNG of the input
and normal maps. `query_points` serves `--mode=query`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from hdjax.errors import HdjaxError
from hdjax.geometry import mesh as mesh_lib
from hdjax.geometry import octree
from hdjax.geometry.projection import EVAL_CALIB
from hdjax.io.files import atomic_write
from hdjax.models import shipped
from hdjax.models.pifuhd import PIFuHD, PIFuHDArch, numerics_from_config
from hdjax.models.pifuhd_official import save_converted
from hdjax.reconstruction import images, preprocess, runner, visualize
from hdjax.reconstruction.weights import Weights, open_weights


@dataclasses.dataclass
class ImageFeatures:
    """What the point queries need of one image (batch of 1).

    coarse: (1, S/4, S/4, 256) last coarse stack; fine: (1, F/2, F/2, 16) last fine stack;
    normals: [front, back] (1, S, S, 3) in [-1, 1]; all float32.
    """

    coarse: jax.Array
    fine: jax.Array
    normals: list[jax.Array]


@functools.lru_cache(maxsize=4)
def _stage_fns(model: PIFuHD):
    def wrap(method, subtree):
        fn = jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method))
        return fn, subtree

    calib = dict(
        calib_global=jnp.asarray(EVAL_CALIB)[None], calib_local=jnp.asarray(EVAL_CALIB)[None]
    )
    return dict(
        netF=wrap(PIFuHD.front_normal, ("netG", "netF")),
        netB=wrap(PIFuHD.back_normal, ("netG", "netB")),
        coarse=wrap(lambda m, x, n: m.coarse_features(x, n)[-1], ("netG", "image_filter")),
        fine=wrap(lambda m, x, n: m.fine_features(x, n)[-1], ("image_filter",)),
        occupancy=jax.jit(
            lambda p, c, f, pts: model.apply(
                {"params": p}, c, f, pts, **calib, method=PIFuHD.occupancy
            )
        ),
        # The fine features are taken and ignored: the same call as `occupancy`.
        coarse_occupancy=jax.jit(
            lambda p, c, _, pts: model.apply(
                {"params": p},
                c,
                pts,
                calib_global=calib["calib_global"],
                method=PIFuHD.coarse_occupancy,
            )
        ),
    )


def _nest(names: tuple[str, ...], params):
    for k in reversed(names):
        params = {k: params}
    return params


def image_features(
    weights: Weights, image_fine: np.ndarray, image_coarse: np.ndarray
) -> tuple[ImageFeatures, dict[str, float]]:
    """Runs the normal nets and both filters. Images: (F, F, 3) and (S, S, 3) in [-1, 1].

    Returns:
      The features and the seconds each stage took (`netF`, `netB`, `coarse`, `fine`; the
      normal nets only where the arch uses them).
    """
    fns = _stage_fns(weights.model)
    timings: dict[str, float] = {}
    arch = weights.arch
    x_c = jnp.asarray(image_coarse)[None]
    x_f = jnp.asarray(image_fine)[None]

    def run(stage, *args):
        fn, names = fns[stage]
        t = time.perf_counter()
        params = _nest(names, weights.get(names))
        # Params live only inside this call: a normal net is 730 MB, two never coexist.
        out = jax.block_until_ready(fn(params, *args))
        timings[stage] = time.perf_counter() - t
        return out

    normals = []
    if arch.use_front_normal:
        normals.append(run("netF", x_c))
    if arch.use_back_normal:
        normals.append(run("netB", x_c))
    coarse = run("coarse", x_c, normals)
    fine = run("fine", x_f, normals)
    return ImageFeatures(coarse, fine, normals), timings


def occupancy_fn(
    weights: Weights,
    feats: ImageFeatures,
    chunk: int,
    progress: tqdm | None = None,
    level: str = "fine",
) -> Callable[[np.ndarray], np.ndarray]:
    """(N, 3) float points in the query frame -> (N,) float32 occupancy, `chunk` at a time,
    of the fine level (PIFuHD's output) or of the coarse level alone (``level="coarse"``).

    Every call uses the same padded (1, chunk, 3) shape, so it compiles once.
    """
    if level not in ("fine", "coarse"):
        raise ValueError(f"level must be 'fine' or 'coarse', got {level!r}")
    fn = _stage_fns(weights.model)["occupancy" if level == "fine" else "coarse_occupancy"]
    params = {"netG": {"mlp": weights.get(("netG", "mlp"))}}
    if level == "fine":
        params["mlp"] = weights.get(("mlp",))

    def evaluate(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float32).reshape(-1, 3)
        out = np.empty(len(points), np.float32)
        for start in range(0, len(points), chunk):
            part = points[start : start + chunk]
            n = len(part)
            if n < chunk:
                part = np.concatenate([part, np.zeros((chunk - n, 3), np.float32)])
            out[start : start + n] = np.asarray(fn(params, feats.coarse, feats.fine, part[None]))[
                0, :n
            ]
            if progress is not None:
                progress.update(n)
        return out

    return evaluate


# Config names of the two grid methods (`reconstruct.octree`).
_GRID_METHODS = {"parity": "octree", "fast": "narrowband"}


def occupancy_grid(
    evaluate: Callable[[np.ndarray], np.ndarray],
    resolution: int,
    method: str = "fast",
    init_resolution: int = 64,
    threshold: float = 0.05,
) -> tuple[np.ndarray, octree.GridStats]:
    """The (R+1)³ occupancy grid by ``method`` (`reconstruct.octree`): "parity" (official
    octree, exact) or "fast" (narrow band)."""
    return octree.eval_grid(
        lambda idx: evaluate(octree.indices_to_points(idx, resolution)),
        resolution,
        method=_GRID_METHODS[method],
        init_resolution=init_resolution,
        threshold=threshold,
    )


def mesh_and_colors(
    grid: np.ndarray,
    evaluate: Callable[[np.ndarray], np.ndarray],
    resolution: int,
    colors: str,
    image_path: str | os.PathLike = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Marching cubes of the grid of ``resolution`` + vertex colours (``colors``,
    `reconstruct.colors`: network | grid | none)."""
    try:
        out = mesh_lib.extract_mesh(grid, resolution, with_normals=colors == "grid")
    except ValueError as e:
        raise HdjaxError(f"no mesh: {e}", image_path or None) from None
    verts, faces = out[:2]
    if colors == "grid":
        return verts, faces, out[2] * 0.5 + 0.5
    if colors == "network":
        return verts, faces, mesh_lib.vertex_normal_colors(evaluate, verts)
    return verts, faces, None


def _network_inputs(
    item: preprocess.InputItem, arch: PIFuHDArch, cfg: ml_collections.ConfigDict
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The official crop and resizes: (F, F, 3) and (S, S, 3) float32 in [-1, 1], and the
    crop's warnings (`preprocess.check_crop`, each also logged)."""
    img = images.load_image(item.image, cfg.get("exif_orientation", True))
    h, w = img.shape[:2]
    rect = preprocess.rect_for_item(item, h, w, cfg.crop_type)
    notes = preprocess.check_crop(item, rect, h, w)
    for note in notes:
        logging.warning("%s: %s", item.crop_file or item.image, note)
    fine, coarse = preprocess.prepare_pifuhd_inputs(img, rect, arch.fine_size, arch.coarse_size)
    return fine, coarse, notes


def output_paths(
    item: preprocess.InputItem, out_dir: str, cfg: ml_collections.ConfigDict
) -> list[str]:
    """The files `reconstruct_image` writes for `item`, in the order it writes them: the
    mesh(es) first, the normals PNG last."""
    base = os.path.join(out_dir, item.name)
    meshes = {"obj": [".obj"], "ply": [".ply"], "both": [".obj", ".ply"]}[cfg.mesh_format]
    return [base + ext for ext in meshes] + [base + "_normals.png"]


def reconstruct_image(
    weights: Weights,
    item: preprocess.InputItem,
    out_dir: str,
    cfg: ml_collections.ConfigDict,
) -> dict:
    """One image -> `{name}.obj`/`.ply` and `{name}_normals.png` in out_dir. Returns timings
    and the crop's warnings (`notes`).

    Files are written only once the mesh exists, each atomically, the PNG last: an image
    whose `_normals.png` exists has its complete mesh(es) too.
    """
    image_fine, image_coarse, notes = _network_inputs(item, weights.arch, cfg)
    t0 = time.perf_counter()
    feats, timings = image_features(weights, image_fine, image_coarse)
    with tqdm(desc=f"{item.name}: queries", unit="pt", unit_scale=True, leave=False) as bar:
        evaluate = occupancy_fn(weights, feats, cfg.chunk, bar)
        t = time.perf_counter()
        grid, stats = occupancy_grid(
            evaluate, cfg.resolution, cfg.octree, cfg.init_resolution, cfg.threshold
        )
        timings["grid"] = time.perf_counter() - t
        t = time.perf_counter()
        verts, faces, colors = mesh_and_colors(
            grid, evaluate, cfg.resolution, cfg.colors, item.image
        )
        timings["mesh"] = time.perf_counter() - t
    *meshes, png = output_paths(item, out_dir, cfg)
    for path in meshes:
        save = mesh_lib.save_obj if path.endswith(".obj") else mesh_lib.save_ply
        save(path, verts, faces, colors)
    if len(feats.normals) == 2:
        normals = (np.asarray(n[0]) for n in feats.normals)
        visualize.save_normals_png(png, image_coarse, *normals)
    timings.update(
        notes=notes,
        total=time.perf_counter() - t0,
        queries=stats.queries,
        vertices=len(verts),
        faces=len(faces),
    )
    return timings


def reconstruct_items(
    weights: Weights,
    cfg: ml_collections.ConfigDict,
    workdir: str,
    items: list[preprocess.InputItem] | None = None,
) -> runner.RunSummary:
    """Reconstructs every image of `cfg.input` (or `items`) into `workdir/reconstruct`.

    A bad image is reported (one line) and skipped. No file written earlier in the same run
    is overwritten; temporaries left by killed runs are removed first.

    Returns:
      The run's summary: written, failed and suspicious images.
    """
    if items is None:
        items = preprocess.find_inputs(cfg.input)
    return runner.run_items(
        items,
        os.path.join(workdir, "reconstruct"),
        lambda item, out_dir: output_paths(item, out_dir, cfg),
        lambda item, out_dir: reconstruct_image(weights, item, out_dir, cfg),
        lambda t: f"{t['vertices']} vertices, {t['queries']} queries, {t['total']:.1f} s",
    )


def query_points(weights: Weights, image_path: str, points_path: str, out_path: str, cfg) -> None:
    """`--mode=query`: occupancies of (N, 3) points (.npy, query frame) for one image."""
    try:
        points = np.load(points_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise HdjaxError(f"cannot read points ({e})", points_path) from None
    if points.ndim != 2 or points.shape[1] != 3 or not np.issubdtype(points.dtype, np.number):
        raise HdjaxError(f"points must be an (N, 3) numeric array, got {points.shape}", points_path)
    if not np.all(np.isfinite(points)):
        raise HdjaxError("points contain NaN or inf", points_path)
    items = preprocess.find_inputs(image_path)
    if len(items) != 1:
        raise HdjaxError("query mode takes one image, not a folder", image_path)
    image_fine, image_coarse, _ = _network_inputs(items[0], weights.arch, cfg)
    feats, _ = image_features(weights, image_fine, image_coarse)
    occ = occupancy_fn(weights, feats, cfg.chunk)(points)
    try:
        atomic_write(out_path, lambda f: np.save(f, occ))
    except OSError as e:
        raise HdjaxError(f"cannot write occupancies ({e.strerror or e})", out_path) from e


def _weights(cfg: ml_collections.ConfigDict) -> Weights:
    arch = PIFuHDArch.from_config(cfg.model.arch)
    checkpoint = shipped.resolve_checkpoint(cfg.checkpoint, cfg.weights, "pifuhd")
    weights = open_weights(checkpoint, arch, cfg.seed, numerics_from_config(cfg.model.numerics))
    logging.info("weights: %s", weights.source)
    return weights


def reconstruct(
    cfg: ml_collections.ConfigDict, workdir: str, items: list[preprocess.InputItem] | None = None
) -> runner.RunSummary:
    """``--mode=reconstruct``: the config's weights on every image of ``items`` (default:
    ``reconstruct.input``) into ``workdir/reconstruct``."""
    return reconstruct_items(_weights(cfg), cfg.reconstruct, workdir, items)


def query(cfg: ml_collections.ConfigDict, workdir: str, out: str) -> None:
    """``--mode=query``: occupancies of ``reconstruct.points`` for ``reconstruct.input``."""
    del workdir
    rc = cfg.reconstruct
    query_points(_weights(cfg), rc.input, rc.points, out, rc)


def convert(cfg: ml_collections.ConfigDict, workdir: str, out: str) -> None:
    """``--mode=convert``: ``checkpoint`` (a .pt) as an orbax directory ``out``."""
    del workdir
    weights = _weights(cfg)
    save_converted(out, weights.get(()), weights.arch)

"""Records: rendered views of subjects, as the TFDS builders (`hdjax.datasets`) store them.

A *record* is one rendered view of a subject (`hdjax.data.subjects`). `generate_records`
turns subjects into records whose values are exactly what the TFDS features take (PNG bytes
for images, numpy arrays for tensors), so the TFDS classes only declare features and call it.

Record (`H = W = config.size`, `P = config.num_points`, `J = 23`):

====================  ===================  ===============================================
key                   value                meaning
====================  ===================  ===============================================
``image``             PNG (H, W, 3) uint8  shaded render, background black
``mask``              PNG (H, W, 1) uint8  255 on the subject
``normal_front/back`` PNG (H, W, 3) uint8  view-frame unit normal n as round((n+1)·127.5),
                                           background 0
``depth_front/back``  PNG (H, W, 1) uint16 ortho: `codecs.ortho_depth_to_png` of view-frame
                                           z; persp: the 2K2K ``d · 32``; background 0
``camera``            str                  "ortho" (PIFuHD) or "persp" (2K2K)
``calib``             (4, 4) float32       normalised point -> uv (ortho) / pixels (persp),
                                           the view's jittered pose included
``keypoints``         (J, 3) float32       (u, v, visibility) pixels, 2K2K's 31-joint
                                           layout: COCO-WholeBody body+feet, then 8 finger
                                           knuckles (`hdjax.data.keypoints`); rows of
                                           joints the subject lacks are 0. Visibility as
                                           COCO's: 2 seen, 1 in the image but hidden or
                                           buried (`keypoint_hidden`), 0 outside or none
``hands``             (42, 3) float32      (u, v, visibility) pixels of the COCO-WholeBody hand
                                           points (21 per hand: wrist, thumb CMC/MCP/IP/
                                           tip, then MCP/PIP/DIP/tip of index to little;
                                           left then right); 0 where the subject has none
                                           (generated bodies have them)
``points_coarse``     (P, 3) float32       normalised-frame points, σ = ``sigma_coarse_cm``
``labels_coarse``     (P,) uint8           1 inside (winding number), 0 outside
``points_fine``       (P, 3) float32       same with σ = ``sigma_fine_cm``
``labels_fine``       (P,) uint8
``subject``           str                  subject name
``yaw``               float32              degrees
====================  ===================  ===============================================

Camera jitter (`render_config.RenderConfig`; `make_camera` draws it from the record's generator):

====================  =======  ====================================================
field                 default  per view, u ~ U(−1, 1) each
====================  =======  ====================================================
``pitch_deg``         4.0      pitch ``u · pitch_deg`` about the view's +x (both cameras)
``scale_jitter``      0.05     apparent size × ``1 + u · scale_jitter``: ortho: the
                               pose's scale; persp: the subject moved along the view
                               axis by ``distance · (1 − 1/size factor)`` (the official
                               intrinsics and depth encoding stay fixed)
``shift_jitter``      0.03     the subject's centre moved by ``u · shift_jitter`` half
                               image sides, in x and in y
====================  =======  ====================================================

The jitter moves the subject, never the intrinsics (`camera` module docstring): ``calib``,
the maps, the keypoints and the points (stored in the normalised frame; the uniform ones
fill the jittered view's reconstruction cube) agree exactly. Zero fields: no jitter.
Evaluation renders its views without jitter (`hdjax.eval.job.render_views`), so its
ground truth is the normalised mesh turned by the yaw alone.

Sigmas are absolute centimetres (the paper's 5 cm / 3 cm) whenever the subject's scan unit
is known (`Subject.unit_cm`: the embedded bodies are in metres; scans take
`RenderConfig.scan_unit_cm`). For scans of unknown unit they fall back to centimetres of a
180 cm body, PIFu's own assumption (its normalisation scales every scan to 180 units). The
uniform points fill the view's reconstruction cube (`point_sampling`). The surface points of
a subject's views come from one labelled pool per σ level (`point_pools`,
``RenderConfig.point_pool``), drawn from the subject's own generator, so a record still
depends only on (seed, subject, view).

Resumable builds: finished records go to a `render_cache.RecordCache` (``cache_dir`` of
`generate_records`) under a tag (`cache_tag`) that hashes the `RenderConfig`, the seed and
the source of the modules that make a record (this one, rendering, cameras, codecs, point
sampling, keypoints), so neither a changed config nor changed code ever reuses stale records.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import itertools
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import trimesh

from hdjax.data import codecs, point_sampling
from hdjax.data import keypoints as keypoints_lib
from hdjax.data import render as render_lib
from hdjax.data.render_cache import RecordCache
from hdjax.data.render_cache import cache_tag as _cache_tag
from hdjax.data.render_config import RenderConfig
from hdjax.data.subjects import BuildReport, ScanError, Subject
from hdjax.errors import HdjaxError
from hdjax.geometry import camera as cam

NUM_KEYPOINTS = 31  # 2K2K layout: COCO-WholeBody 23 + 8 knuckles (hdjax.data.keypoints)
NUM_HAND_POINTS = 42  # COCO-WholeBody hands: 21 per hand, left then right
_BODY_JOINTS = 23  # COCO-WholeBody body + feet, the first rows of the keypoints


TWOK2K_POINT_BOX = np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]])


def make_camera(
    config: RenderConfig, yaw: float, rng: np.random.Generator | None = None
) -> cam.Camera:
    """The `OrthoCamera` / `PerspCamera` of one view; with ``rng``, jittered by the config
    (module docstring; four draws whatever the fields, zero ones included)."""
    if config.camera not in ("ortho", "persp"):
        raise ValueError(f"unknown camera {config.camera!r} (ortho or persp)")
    u = np.zeros(4) if rng is None else rng.uniform(-1.0, 1.0, 4)
    pitch = float(config.pitch_deg * u[0])
    size_factor = 1.0 + float(config.scale_jitter * u[1])
    if config.camera == "ortho":  # the image spans [−1, 1]: a half side is one unit
        shift = (float(config.shift_jitter * u[2]), float(config.shift_jitter * u[3]), 0.0)
        return cam.OrthoCamera(
            size=config.size, yaw_deg=yaw, pitch_deg=pitch, scale=size_factor, shift=shift
        )
    base = cam.PerspCamera(size=config.size, yaw_deg=yaw)
    tz = base.distance * (1.0 - 1.0 / size_factor)
    # A half image side at the subject's depth, so the centre moves by u·shift half sides.
    half = (base.distance - tz) * math.tan(math.radians(base.fov_deg) / 2.0)
    sx, sy = (float(config.shift_jitter * u[k] * half) for k in (2, 3))
    return dataclasses.replace(base, pitch_deg=pitch, shift=(sx, sy, tz))


def normalization(subject: Subject, config: RenderConfig) -> cam.Normalization:
    """The scan -> normalised frame similarity of the config's convention."""
    if config.camera == "ortho":
        mesh = subject.mesh
        return cam.pifu_normalization(mesh.vertices, 1, mesh.faces, config.center)
    return cam.twok2k_normalization(subject.mesh.vertices, subject.mesh.faces)


def subject_rng(seed: int, name: str, view: int) -> np.random.Generator:
    """A generator fixed by (seed, subject name, view index), independent of build order."""
    key = [int(b) for b in name.encode("utf-8")]
    return np.random.default_rng([seed, view, len(key), *key])


_LEVELS = ("coarse", "fine")
# The pools' generator stream: `subject_rng`'s view slot, at a value no view takes.
_POOL_STREAM = 2**32 - 1


def _units_per_cm(subject: Subject, mesh, norm) -> float:
    """Normalised units per centimetre of the subject."""
    if subject.unit_cm:
        return norm.scale / subject.unit_cm
    return float(np.ptp(mesh.vertices[:, 1])) / 180.0  # PIFu's: every scan a 180 cm body


def _sigma(subject: Subject, config: RenderConfig, mesh, norm, level: str) -> float:
    """σ of one level in normalised units (module docstring)."""
    return getattr(config, f"sigma_{level}_cm") * _units_per_cm(subject, mesh, norm)


# How much of what covers a point still lets it be seen: clothes over a body joint (a loose
# trouser leg over a knee, a coat over a dress over a hip: 7 cm); for the points of a hand,
# its skin must show (not a hand inside a skirt). A point less deep than SURFACE_CM in the
# skin is a landmark of the surface (nose, eyes, toes, fingers), seen only from its side.
BODY_COVER_CM = 10.0
HAND_COVER_CM = 2.0
SURFACE_CM = 1.5
_STEPS = 64  # samples along the ray, between its first hit and the point


def keypoint_hidden(
    mesh, skin, camera, points: np.ndarray, cover: np.ndarray, surface: float
) -> np.ndarray:
    """(N,) bool: the keypoints (N, 3, normalised frame; NaN rows are never hidden) that the
    camera cannot see.

    A point is seen when the first surface on its camera ray (`render.surface_in_front`)
    is within ``cover`` (N,) of it. Farther, a point less than ``surface`` deep in the body
    (``skin``, closed, without clothes; ``mesh`` itself for a scan) is hidden (a nose seen
    from behind, a hand inside a skirt); a joint deeper inside is seen when the ray, from
    that first surface on, enters the body within ``cover`` and stays inside it up to the
    joint: an elbow under a sleeve is seen, one behind the torso (the ray leaves the body
    and enters again) or under a thicker cover is not. Lengths in normalised units.
    """
    hidden = np.zeros(len(points), bool)
    known = np.flatnonzero(np.all(np.isfinite(points), axis=1))
    p = np.asarray(points, np.float64)[known]
    gap = render_lib.surface_in_front(mesh, camera, p) if len(p) else np.zeros(0)
    far = gap > np.asarray(cover, np.float64)[known]
    if not far.any():
        return hidden
    body = mesh if skin is None else skin
    p, gap, cover, idx = p[far], gap[far], np.asarray(cover, np.float64)[known][far], known[far]
    shallow = np.abs(point_sampling.signed_distance(body.vertices, body.faces, p)) < surface
    # s: distance in front of the point along the ray, from the first hit (s = gap) down.
    s = gap[:, None] * (1.0 - (np.arange(_STEPS) + 0.5) / _STEPS)
    samples = p[:, None] + s[..., None] * _camera_direction(camera, p)[:, None]
    inside = point_sampling.label_points(body, samples.reshape(-1, 3)).reshape(s.shape)
    first = np.argmax(inside, axis=1)
    covered = gap - np.where(inside.any(1), s[np.arange(len(s)), first], 0.0)
    leaves = ((np.cumsum(inside, axis=1) > 0) & ~inside).any(1)  # out again after entering
    hidden[idx] = shallow | (covered > cover) | leaves
    return hidden


def _camera_direction(camera, points: np.ndarray) -> np.ndarray:
    """(N, 3) unit vectors from each point towards the camera, normalised frame."""
    if isinstance(camera, cam.OrthoCamera):
        d = cam.direction_from_view(np.array([[0.0, 0.0, 1.0]]), camera)
        d = np.broadcast_to(d, points.shape)
    else:
        d = cam.from_view(np.array([[0.0, 0.0, camera.distance]]), camera) - points
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def point_pools(
    subject: Subject, config: RenderConfig, seed: int = 0, norm: cam.Normalization | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The labelled surface pools that every view of the subject draws from, per σ level
    (`point_sampling.surface_pool`); None when ``config.point_pool`` is 0. ``norm``: the
    subject's `normalization`, when the caller has it."""
    size = round(config.point_pool * config.num_points)
    if size <= 0:
        return None
    norm = normalization(subject, config) if norm is None else norm
    mesh, solid = _normalized(subject, norm)
    rng = subject_rng(seed, subject.name, _POOL_STREAM)
    return {
        level: point_sampling.surface_pool(
            mesh, rng, size, _sigma(subject, config, mesh, norm, level), solid
        )
        for level in _LEVELS
    }


def _normalized(subject: Subject, norm: cam.Normalization):
    """The subject's surface and solid (None when it has none) in the normalised frame."""
    if subject.solid is None:
        return cam.normalize_mesh(subject.mesh, norm), None
    solid = cam.normalize_mesh(subject.solid, norm)
    # The surface shares the solid's vertices; a vertex at the edge of the faces left out
    # keeps its closed piece's normal, so the surface shades as the closed pieces do.
    surface = trimesh.Trimesh(
        solid.vertices,
        subject.mesh.faces,
        vertex_normals=solid.vertex_normals,
        visual=subject.mesh.visual.copy(),
        process=False,
    )
    return surface, solid


def render_record(
    subject: Subject,
    config: RenderConfig,
    view: int,
    seed: int = 0,
    pools: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    norm: cam.Normalization | None = None,
) -> dict[str, Any]:
    """Render view ``view`` of a subject and sample its points: one record (module table).

    ``pools`` and ``norm``: the subject's `point_pools` and `normalization` when the caller
    renders several views (they are computed here otherwise; the record is the same either
    way).
    """
    yaw = float(config.yaws[view])
    norm = normalization(subject, config) if norm is None else norm
    if pools is None:
        pools = point_pools(subject, config, seed, norm)
    rng = subject_rng(seed, subject.name, view)
    mesh, solid = _normalized(subject, norm)
    camera = make_camera(config, yaw, rng)
    joints = None
    if subject.keypoints is not None:
        hands = np.full((NUM_HAND_POINTS, 3), np.nan) if subject.hands is None else subject.hands
        joints = norm.apply(np.concatenate([_all_joints(subject.keypoints), hands]))
    out = render_lib.render(mesh, camera, rng, joints=joints)
    mask = out["mask"]
    if not mask.any():
        raise ScanError(f"view {view} (yaw {yaw:g}) renders no foreground pixel")
    if config.camera == "ortho":
        depth = [codecs.ortho_depth_to_png(out[k], mask) for k in ("depth_front", "depth_back")]
    else:
        depth = [
            np.where(mask, codecs.persp_depth_to_png(out[k]), 0)
            for k in ("depth_front", "depth_back")
        ]
    points2d = np.zeros((NUM_KEYPOINTS + NUM_HAND_POINTS, 3), np.float32)
    if joints is not None:
        known = np.all(np.isfinite(out["keypoints"]), axis=1)
        points2d[known, :2] = out["keypoints"][known]
        seen = out["keypoints_visible"] & known
        skin = None if subject.skin is None else cam.normalize_mesh(subject.skin, norm)
        per_cm = _units_per_cm(subject, mesh, norm)
        cover = np.full(len(joints), HAND_COVER_CM * per_cm)
        cover[:_BODY_JOINTS] = BODY_COVER_CM * per_cm  # then knuckles and hand points
        hidden = keypoint_hidden(mesh, skin, camera, np.where(seen[:, None], joints, np.nan),
                                 cover, SURFACE_CM * per_cm)  # fmt: skip
        points2d[:, 2] = np.where(seen, np.where(hidden, 1.0, 2.0), 0.0)
    keypoints, hands2d = points2d[:NUM_KEYPOINTS], points2d[NUM_KEYPOINTS:]
    if config.camera == "ortho":  # the cube is the query frame's: undo the pose's s and t
        box = (point_sampling.RECONSTRUCTION_CUBE - camera.translation) / camera.scale
    else:  # a box about the subject, wherever the jitter put it
        box = TWOK2K_POINT_BOX
    record = {
        "image": codecs.png_bytes(out["image"]),
        "mask": codecs.png_bytes((mask * 255).astype(np.uint8)[..., None]),
        "normal_front": codecs.png_bytes(codecs.normal_to_uint8(out["normal_front"], mask)),
        "normal_back": codecs.png_bytes(codecs.normal_to_uint8(out["normal_back"], mask)),
        "depth_front": codecs.png_bytes(depth[0][..., None].astype(np.uint16)),
        "depth_back": codecs.png_bytes(depth[1][..., None].astype(np.uint16)),
        "camera": config.camera,
        "calib": np.asarray(out["calib"], np.float32),
        "keypoints": keypoints,
        "hands": hands2d,
        "subject": subject.name,
        "yaw": np.float32(yaw),
    }
    for level in _LEVELS:
        pts, lab = point_sampling.sample_points(
            mesh,
            rng,
            config.num_points,
            _sigma(subject, config, mesh, norm, level),
            box,
            camera.rotation,
            pool=None if pools is None else pools[level],
            solid=solid,
        )
        record[f"points_{level}"] = pts.astype(np.float32)
        record[f"labels_{level}"] = lab.astype(np.uint8)
    return record


def _all_joints(keypoints: np.ndarray) -> np.ndarray:
    """(23 or 31, 3) subject joints -> (31, 3), NaN for the knuckles it lacks."""
    kp = np.asarray(keypoints, np.float64)
    if kp.shape not in ((23, 3), (NUM_KEYPOINTS, 3)):
        raise ScanError(f"keypoints must be (23, 3) or ({NUM_KEYPOINTS}, 3), got {kp.shape}")
    missing = np.full((NUM_KEYPOINTS - len(kp), 3), np.nan)
    return np.concatenate([kp, missing])


def record_key(name: str, view: int) -> str:
    """The example key (and cache file stem) of view ``view`` of subject ``name``."""
    return f"{name}_v{view:03d}"


def _record_code_digest() -> str:
    """A hash of the source of every module whose code decides what a record holds."""
    h = hashlib.sha256()
    for module in (sys.modules[__name__], render_lib, cam, codecs, point_sampling, keypoints_lib):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


def cache_tag(config: RenderConfig, seed: int) -> str:
    """The render-cache tag fixed by all that decides a record's content: config, seed, code."""
    return _cache_tag(
        {"config": dataclasses.asdict(config), "seed": seed, "code": _record_code_digest()}
    )


@dataclasses.dataclass
class SubjectRecords:
    """What one subject gave: its records, or why it was skipped (`render_subject`)."""

    name: str
    records: list[tuple[str, dict[str, Any]]]
    cached: int = 0
    error: str | None = None
    meta: dict[str, Any] | None = None


def render_subject(
    load: Callable[[str], Subject],
    config: RenderConfig,
    seed: int,
    cache_dir: str | None,
    name: str,
) -> SubjectRecords:
    """Every view of subject ``name`` (``load(name)``), through the render cache.

    A subject that fails to load or render (`ScanError`, or ValueError / RuntimeError, e.g.
    no foreground at all) comes back with ``error`` set and no records. Module-level and
    picklable with its arguments, so build workers run it.
    """
    try:
        subject = load(name)
    except (ScanError, ValueError, RuntimeError) as e:
        return SubjectRecords(name, [], error=str(e))
    cache = None if cache_dir is None else RecordCache(cache_dir, cache_tag(config, seed))
    out, cached, pools, norm = [], 0, None, None
    try:
        for view in range(len(config.yaws)):
            key = record_key(subject.name, view)
            record = None if cache is None else cache.get(key)
            if record is None:
                if norm is None:  # only when a view is to be rendered
                    norm = normalization(subject, config)
                    pools = point_pools(subject, config, seed, norm)
                record = render_record(subject, config, view, seed, pools, norm)
                if cache is not None:
                    cache.put(key, record)
            else:
                cached += 1
            out.append((key, record))
    except (ScanError, ValueError, RuntimeError) as e:
        return SubjectRecords(subject.name, [], error=f"render failed: {e}")
    return SubjectRecords(subject.name, out, cached, meta=subject.meta)


def generate_records(
    names: Sequence[str],
    load: Callable[[str], Subject],
    config: RenderConfig,
    report: BuildReport,
    seed: int = 0,
    cache_dir: str | None = None,
    num_workers: int = 1,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(key, record)`` for every view of every subject, counting into ``report``.

    Subjects come in the order of ``names``; one that fails to load or render is skipped
    into ``report`` (with its reason), and each used subject's ``meta`` is appended to
    ``report.meta``. Progress (subjects, records/s, ETA) is logged every 30 s.

    Args:
      load: ``name -> Subject``; must be picklable (a module-level function or a
        `functools.partial` of one) when ``num_workers > 1``.
      cache_dir: optional `RecordCache` folder: every rendered record is saved there, and
        records already there (same config and seed) are read back instead of rendered, so
        a rerun after an interruption only renders what is missing.
      num_workers: processes rendering subjects in parallel (1: in this process). A record
        depends only on (seed, subject, view), so the records are the same for any number
        of workers.
    """
    work = functools.partial(render_subject, load, config, seed, cache_dir)
    progress = _Progress(len(names), len(config.yaws))
    if num_workers > 1 and len(names) > 1:
        results = _in_workers(work, names, min(num_workers, len(names)), cache_dir)
    else:
        results = map(work, names)
    for result in results:
        if result.error is not None:
            report.skipped.append((result.name, result.error))
        else:
            report.used.append(result.name)
            report.cached += result.cached
            if result.meta is not None:
                report.meta.append(result.meta)
        for key, record in result.records:
            report.records += 1
            yield key, record
        progress.update(len(result.records) - result.cached)


def _in_workers(
    work: Callable[[str], SubjectRecords], names: Sequence[str], workers: int, cache_dir: str | None
) -> Iterator[SubjectRecords]:
    """``map(work, names)`` in ``workers`` processes, in order, at most 2 subjects per worker
    in flight (finished records wait in memory only until the ones before them are done)."""
    # spawn: the parent may hold threads (TFDS, point-cloud-utils) that fork would copy
    # mid-flight; workers import only hdjax.data.
    context = multiprocessing.get_context("spawn")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    # One core per worker when there are enough: the renderer's thread pool then stays on
    # its worker's core instead of spinning on the others' (measured before the pools were
    # single-threaded: ~1.9 CPU-seconds per record unpinned, ~1.4 pinned).
    pin = cores if 1 < workers <= len(cores) else []
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker,
        initargs=(context.Value("i", 0), pin),
    )  # fmt: skip
    with pool:
        pending: collections.deque = collections.deque()
        todo = iter(names)
        try:
            with single_threaded_children():  # the workers start within the first submits
                for name in itertools.islice(todo, 2 * workers):
                    pending.append(pool.submit(work, name))
            while pending:
                result = pending.popleft().result()
                for name in itertools.islice(todo, 1):
                    pending.append(pool.submit(work, name))
                yield result
        except concurrent.futures.process.BrokenProcessPool:
            kept = "are kept in the render cache" if cache_dir else "are lost (no render cache)"
            raise HdjaxError(
                "a build worker died (killed, out of memory, or started from a script without "
                "an `if __name__ == '__main__':` guard, which worker processes need); the "
                f"records finished so far {kept}: rerun to render only the missing ones"
            ) from None
        finally:
            for future in pending:
                future.cancel()


# Environment variables that size the thread pools of the libraries a build worker uses.
_THREAD_POOLS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "IGL_NUM_THREADS")


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
    """Processes started inside the block give numpy's BLAS, OpenMP and libigl one thread.

    Build workers size those pools when they import the libraries, before any code of ours
    runs in them, so the setting has to come through their environment. One thread each,
    since the workers already fill the cores: a second BLAS thread on a pinned worker's one
    core only spins against the first (measured: a record on one pinned core took 1.8 s with
    numpy's default pool, 1.0 s with one thread).
    """
    old = {k: os.environ.get(k) for k in _THREAD_POOLS}
    os.environ.update(dict.fromkeys(_THREAD_POOLS, "1"))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_worker(counter, cores: list[int]) -> None:
    """Build worker start: pin it to the next of ``cores`` (if any)."""
    if cores:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        pin_threads({cores[index % len(cores)]})


def pin_threads(cores: set[int]) -> None:
    """Pin every thread of this process to ``cores``: `os.sched_setaffinity` moves only the
    calling thread, and imports have already started others (numpy's BLAS pool), which
    would go on running on every core."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except (ProcessLookupError, PermissionError):  # the thread has just ended
            pass


class _Progress:
    """Logs subjects done, rendered records/s and the ETA at most every ``every_s`` seconds."""

    def __init__(self, num_subjects: int, views: int, every_s: float = 30.0):
        self.total, self.views, self.every_s = num_subjects, views, every_s
        self.done = self.rendered = 0
        self.start = self.last = time.monotonic()

    def update(self, rendered: int) -> None:
        self.done += 1
        self.rendered += rendered
        now = time.monotonic()
        if now - self.last < self.every_s and self.done < self.total:
            return
        self.last = now
        rate = self.rendered / max(now - self.start, 1e-9)
        left = (self.total - self.done) * self.views
        eta = f"{left / rate / 60:.1f} min" if rate > 0 else "?"
        logging.info(
            "rendered %d/%d subjects, %.2f records/s, ETA %s", self.done, self.total, rate, eta
        )


def tfds_features(config: RenderConfig):
    """The `tfds.features.FeaturesDict` of a record (TFDS imported here only; no TensorFlow).

    Images are declared with explicit shapes and PNG encoding and receive PNG bytes: giving
    `tfds.features.Image` a numpy array would import TensorFlow to encode it. The point
    tensors are stored as raw bytes: as a protobuf float list, value by value, they cost
    0.06 s per σ level to write (measured, 100k points), as bytes 1 ms, at the same size.
    """
    import tensorflow_datasets as tfds

    s, p = config.size, config.num_points
    image = tfds.features.Image
    tensor = tfds.features.Tensor
    raw = tfds.features.Encoding.BYTES
    return tfds.features.FeaturesDict(
        {
            "image": image(shape=(s, s, 3), encoding_format="png"),
            "mask": image(shape=(s, s, 1), encoding_format="png"),
            "normal_front": image(shape=(s, s, 3), encoding_format="png"),
            "normal_back": image(shape=(s, s, 3), encoding_format="png"),
            "depth_front": image(shape=(s, s, 1), dtype=np.uint16, encoding_format="png"),
            "depth_back": image(shape=(s, s, 1), dtype=np.uint16, encoding_format="png"),
            "camera": tfds.features.Text(),
            "calib": tensor(shape=(4, 4), dtype=np.float32),
            "keypoints": tensor(shape=(NUM_KEYPOINTS, 3), dtype=np.float32),
            "hands": tensor(shape=(NUM_HAND_POINTS, 3), dtype=np.float32),
            "points_coarse": tensor(shape=(p, 3), dtype=np.float32, encoding=raw),
            "labels_coarse": tensor(shape=(p,), dtype=np.uint8, encoding=raw),
            "points_fine": tensor(shape=(p, 3), dtype=np.float32, encoding=raw),
            "labels_fine": tensor(shape=(p,), dtype=np.uint8, encoding=raw),
            "subject": tfds.features.Text(),
            "yaw": tensor(shape=(), dtype=np.float32),
        }
    )

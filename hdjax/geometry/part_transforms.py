"""2K2K's 12 body parts: 31 keypoints -> one similarity transform per part (spec 2k2k.md §3.1).

Every part (head, torso, 4 arm segments, 4 leg segments, 2 feet) is cut from the 2048² image
by a 4-dof similarity (rotation, uniform scale, translation) that puts a few of its keypoints
onto fixed targets of a canonical frame, found by least squares; the part network then sees
the centre crop `PART_SIZES[i]` of that canonical frame.

Coordinates are 2K2K's normalised image coordinates ``u = 2·px/size − 1`` (pixel-integer
convention, as the official code; +y down), in which a transform is a (2, 3) matrix
``[[a, −b, tx], [b, a, ty]]``. Two directions are returned:

* ``theta`` — canonical -> image, what ``affine_grid(theta)`` (align_corners=False) needs to
  sample the canonical crop out of the image (the official model's ``init_affine`` input).
* ``inverse`` — image -> canonical, the least-squares solution itself (the official
  ``init_affine_2048`` output, and the model's ``inv_z``).

Rules reproduced from the official solver:

* targets below (`_TARGETS`), in canonical normalised units;
* "scale cap": when the two defining joints are closer (in normalised image units) than the
  targets' own separation, the targets shrink by the ratio, so parts are never magnified;
* lower arms use elbow, wrist and the mean of the *present* fingers of that hand (a finger is
  present when neither normalised coordinate is exactly 0);
* feet: the official code also means a missing toe to take the other toe and a missing heel
  the ankle (missing = (0, 0) normalised), but writes that after building its least-squares
  system, so it never acts: a missing toe stays at normalised (0, 0). ``strict=False``
  reproduces this; ``strict=True`` applies the fallback as intended;
* the demo's keypoint rule (``missing="centre"``): pixel coordinates exactly 0 become the
  image centre before normalising, so missing joints sit at normalised 0 — which is also what
  the finger and foot rules test for. ``missing="corner"`` is the training rule (no
  replacement: an invisible joint stays at pixel (0, 0), normalised (−1, −1)).

``strict=False`` gives exactly the official numbers (missing joints sit where the keypoint
rule puts them), except that a hand without any present finger, where the official solver
averages an empty set (NaN) and fails, raises `HdjaxError`. ``strict=True`` (the default):
such a hand takes the point a quarter of the forearm beyond the wrist — where the lower-arm
targets themselves put the hand, so the three-point fit becomes the exact elbow-wrist fit —,
the foot fallbacks act, and any other joint a part needs raises `HdjaxError` naming the joint
and the part when it is missing. Singular transforms (coinciding joints) always raise.
"""

from __future__ import annotations

import numpy as np

from hdjax.errors import HdjaxError

JOINT_NAMES = (
    "nose", "left eye", "right eye", "left ear", "right ear",
    "left shoulder", "right shoulder", "left elbow", "right elbow", "left wrist", "right wrist",
    "left hip", "right hip", "left knee", "right knee", "left ankle", "right ankle",
    "left big toe", "left small toe", "left heel", "right big toe", "right small toe",
    "right heel",
    "left index finger", "left middle finger", "left ring finger", "left little finger",
    "right index finger", "right middle finger", "right ring finger", "right little finger",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)

PART_NAMES = (
    "head", "torso", "left upper arm", "left lower arm", "right upper arm", "right lower arm",
    "left thigh", "left shin", "right thigh", "right shin", "left foot", "right foot",
)  # fmt: skip
NUM_PARTS = len(PART_NAMES)

# (height, width) of each part's centre crop in the 2048² canonical frame.
HEAD_SIZE = (368, 320)
TORSO_SIZE = (528, 336)
ARM_SIZE = (352, 224)
LEG_SIZE = (272, 256)
FOOT_SIZE = (176, 128)
PART_SIZES = (HEAD_SIZE, TORSO_SIZE) + (ARM_SIZE,) * 4 + (LEG_SIZE,) * 4 + (FOOT_SIZE,) * 2

# Joints defining each part, in target order; lower arms: elbow, wrist, then the fingers
# whose mean is the third point.
PART_JOINTS = (
    (4, 3),
    (6, 5, 12, 11),
    (5, 7),
    (7, 9, 23, 24, 25, 26),
    (6, 8),
    (8, 10, 27, 28, 29, 30),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
    (17, 18, 19, 15),
    (20, 21, 22, 16),
)

_ARM_UP = (-1 / 8 - 1 / 24 - 1 / 48, 1 / 8 - 1 / 24 - 1 / 48)  # (−0.1875, 0.0625)
_ARM_LOW = tuple(4 / 3 * y for y in (-1 / 6, 0.0, 1 / 24))  # (−2/9, 0, 1/18)
_TORSO = ((-1 / 6, -1 / 4), (1 / 6, -1 / 4), (-1 / 8, 1 / 4), (1 / 8, 1 / 4))  # then × 2/3
_THIGH = (-5 / 32, 3 / 32)
_SHIN = (-9 / 64, 9 / 64)
_LEG_X = 3 / 128  # left legs at −x, right legs at +x
_TARGETS = (
    ((-1 / 12, 1 / 24), (1 / 12, 1 / 24)),
    tuple((2 / 3 * x, 2 / 3 * y) for x, y in _TORSO),
    tuple((0.0, y) for y in _ARM_UP),
    tuple((0.0, y) for y in _ARM_LOW),
    tuple((0.0, y) for y in _ARM_UP),
    tuple((0.0, y) for y in _ARM_LOW),
    tuple((-_LEG_X, y) for y in _THIGH),
    tuple((-_LEG_X, y) for y in _SHIN),
    tuple((_LEG_X, y) for y in _THIGH),
    tuple((_LEG_X, y) for y in _SHIN),
    ((0.0, 1 / 24), (0.0, 1 / 24), (0.0, -1 / 24), (0.0, -1 / 24)),
    ((0.0, 1 / 24), (0.0, 1 / 24), (0.0, -1 / 24), (0.0, -1 / 24)),
)  # fmt: skip
# Parts whose targets shrink when the joints (index pair into the part's points) are closer
# than the targets' separation; the torso and feet have no cap.
_CAPPED = {0: (0, 1), 2: (0, 1), 3: (0, 2), 4: (0, 1), 5: (0, 2), 6: (0, 1), 7: (0, 1),
           8: (0, 1), 9: (0, 1)}  # fmt: skip
# Finger-less hands: the hand point lies this fraction of elbow->wrist beyond the wrist
# (= the lower-arm targets' (finger − wrist) / (wrist − elbow)).
_HAND_EXTENSION = (_ARM_LOW[2] - _ARM_LOW[1]) / (_ARM_LOW[1] - _ARM_LOW[0])


def normalize_keypoints(keypoints: np.ndarray, size: int = 2048, missing: str = "centre"):
    """Pixels -> 2K2K normalised coordinates ``2·px/size − 1``.

    Args:
      keypoints: (..., 31, 2 or 3) pixels of the ``size``² image (a third column, e.g. an
        OpenPose confidence, is ignored here).
      missing: "centre" (demo: coordinates exactly 0 become ``size/2``, i.e. normalised 0) or
        "corner" (training: kept, i.e. normalised −1).

    Returns:
      (..., 31, 2) float64.
    """
    p = np.array(np.asarray(keypoints, np.float64)[..., :2])
    if missing == "centre":
        p[p == 0] = size / 2
    elif missing != "corner":
        raise ValueError(f"missing must be 'centre' or 'corner', got {missing!r}")
    return 2.0 * p / size - 1.0


def _present(p: np.ndarray) -> bool:
    return bool(p[0] != 0 and p[1] != 0)


def _solve(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (pseudo-inverse) taking points src (n, 2) onto dst (n, 2)."""
    n = len(src)
    design = np.zeros((2 * n, 4))
    design[0::2, 0], design[0::2, 1], design[0::2, 2] = src[:, 0], -src[:, 1], 1.0
    design[1::2, 0], design[1::2, 1], design[1::2, 3] = src[:, 1], src[:, 0], 1.0
    a, b, tx, ty = np.linalg.pinv(design) @ dst.reshape(-1)
    return np.array([[a, -b, tx], [b, a, ty]])


def _part_points(i: int, p: np.ndarray, feet_fallback: bool) -> np.ndarray:
    """The points of part i (normalised), after the finger (and optionally foot) fallbacks."""
    idx = PART_JOINTS[i]
    if i in (3, 5):
        fingers = [p[j] for j in idx[2:] if _present(p[j])]
        elbow, wrist = p[idx[0]], p[idx[1]]
        hand = np.mean(fingers, axis=0) if fingers else wrist + _HAND_EXTENSION * (wrist - elbow)
        return np.stack([elbow, wrist, hand])
    pts = p[list(idx)].copy()
    if i in (10, 11) and feet_fallback:
        if not pts[0].any():
            pts[0] = pts[1]
        if not pts[1].any():
            pts[1] = pts[0]
        if not pts[2].any():
            pts[2] = pts[3]
    return pts


def _fingerless(points: np.ndarray) -> bool:
    return any(all(not _present(points[j]) for j in PART_JOINTS[i][2:]) for i in (3, 5))


def _check_required(p_px: np.ndarray, missing_px: np.ndarray) -> None:
    """Raise for a joint a part needs that is missing and has no fallback."""
    for i, idx in enumerate(PART_JOINTS):
        if i in (3, 5):
            required = idx[:2]
        elif i in (10, 11):
            big, small, _heel, ankle = idx
            required = (ankle,) + (() if not (missing_px[big] and missing_px[small]) else (big,))
        else:
            required = idx
        for j in required:
            if missing_px[j]:
                raise HdjaxError(
                    f"keypoint {j} ({JOINT_NAMES[j]}) is missing: the {PART_NAMES[i]} part "
                    "needs it and has no fallback (pass strict=False for the official "
                    "behaviour, which puts it at the image centre)"
                )


def image_to_canonical(points: np.ndarray, feet_fallback: bool = False) -> np.ndarray:
    """The official solve (``init_affine_2048``) on normalised keypoints.

    Args:
      points: (31, 2) normalised coordinates (`normalize_keypoints`).
      feet_fallback: apply the foot fallbacks (missing toe -> other toe, heel -> ankle). The
        official solver writes them after it has built its least-squares system, so they
        never act there: False reproduces the official numbers.

    Returns:
      (12, 2, 3) float64 image -> canonical similarities.
    """
    p = np.asarray(points, np.float64)
    if p.shape != (NUM_JOINTS, 2):
        raise ValueError(f"expected ({NUM_JOINTS}, 2) normalised keypoints, got {p.shape}")
    out = np.zeros((NUM_PARTS, 2, 3))
    for i in range(NUM_PARTS):
        src = _part_points(i, p, feet_fallback)
        dst = np.array(_TARGETS[i], np.float64)
        if i in _CAPPED:
            a, b = _CAPPED[i]
            length = np.linalg.norm(src[a] - src[b])
            thr = np.linalg.norm(dst[a] - dst[b])
            if length < thr:
                dst = dst * (length / thr)
        out[i] = _solve(src, dst)
    return out


def invert_similarity(m: np.ndarray) -> np.ndarray:
    """(..., 2, 3) affine maps -> their inverses ``[R⁻¹ | −R⁻¹ t]`` (float64).

    Raises:
      HdjaxError: a singular map (a part whose joints coincide), naming the part when the
        input holds the 12 parts.
    """
    m = np.asarray(m, np.float64)
    r, t = m[..., :2], m[..., 2:]
    det = r[..., 0, 0] * r[..., 1, 1] - r[..., 0, 1] * r[..., 1, 0]
    bad = ~(np.abs(det) > 1e-12)
    if bad.any():
        where = np.argwhere(bad)[0]
        part = PART_NAMES[where[-1]] if m.shape[-3:-2] == (NUM_PARTS,) else str(tuple(where))
        raise HdjaxError(f"the {part} transform is singular: its keypoints coincide")
    r_inv = np.linalg.inv(r)
    return np.concatenate([r_inv, -r_inv @ t], axis=-1)


def part_transforms(
    keypoints: np.ndarray,
    size: int = 2048,
    missing: str = "centre",
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """31 keypoints (pixels) -> the 12 part transforms, both directions.

    Args:
      keypoints: (31, 2|3) or (B, 31, 2|3) pixels of the ``size``² image, 2K2K layout
        (`JOINT_NAMES`); a joint is missing when its x and y are both 0, or when a third
        column (confidence / visible) is 0.
      size: image side (2048 in 2K2K; keypoints are normalised by it).
      missing: "centre" (demo) or "corner" (training), see `normalize_keypoints`.
      strict: fallbacks for missing hands and feet, `HdjaxError` for any other missing joint;
        False: the official numbers (module docstring).

    Returns:
      ``(theta, inverse)``, each (12, 2, 3) or (B, 12, 2, 3) float32: theta canonical ->
      image (the model's ``init_affine``), inverse image -> canonical.
    """
    kp = np.asarray(keypoints, np.float64)
    if kp.ndim not in (2, 3) or kp.shape[-2:] not in ((NUM_JOINTS, 2), (NUM_JOINTS, 3)):
        raise HdjaxError(
            f"expected (B,) {NUM_JOINTS} keypoints with 2 or 3 columns, got {kp.shape}"
        )
    single = kp.ndim == 2
    kp = kp[None] if single else kp
    kp = kp.copy()
    if kp.shape[-1] == 3:
        # An unconfident joint counts as absent, as OpenPose writes it.
        kp[kp[..., 2] <= 0, :2] = 0.0
    thetas, inverses = [], []
    for one in kp:
        if strict:
            _check_required(one, np.all(one[:, :2] == 0, axis=-1))
        points = normalize_keypoints(one, size, missing)
        if not strict and _fingerless(points):
            raise HdjaxError(
                "no finger keypoint on one hand: the official solver fails here (pass "
                "strict=True for the wrist-extension fallback)"
            )
        inv = image_to_canonical(points, feet_fallback=strict).astype(np.float32)
        inverses.append(inv)
        thetas.append(invert_similarity(inv).astype(np.float32))
    theta, inverse = np.stack(thetas), np.stack(inverses)
    return (theta[0], inverse[0]) if single else (theta, inverse)

"""Keypoint layouts: the stored COCO-WholeBody body+feet points -> OpenPose BODY_25 and the
2K2K 31-joint layout.

`openpose_to_twok2k` reads an OpenPose json (BODY_25 + hands) into the 2K2K layout as the
official 2K2K demo does.

Records store 31 points in 2K2K's layout (u, v, visible): COCO-WholeBody order 0-22 (0-16
COCO body, 17-22 feet: left big toe, left small toe, left heel, right big toe, right small
toe, right heel), then the index/middle/ring/little knuckles of the left and right hand
(`hand_points_from_mesh` derives them for the embedded bodies, which have no hand joints).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from hdjax.errors import HdjaxError

log = logging.getLogger(__name__)

# BODY_25 index -> COCO-WholeBody index; neck (1) and mid-hip (8) are midpoints instead.
_BODY25_FROM_COCO = {
    0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 9: 12, 10: 14, 11: 16, 12: 11, 13: 13,
    14: 15, 15: 2, 16: 1, 17: 4, 18: 3, 19: 17, 20: 18, 21: 19, 22: 20, 23: 21, 24: 22,
}  # fmt: skip
_BODY25_MIDPOINTS = {1: (5, 6), 8: (11, 12)}


def coco23_to_body25(kp: np.ndarray) -> np.ndarray:
    """(23, 3) COCO-WholeBody (x, y, visible/confidence) -> (25, 3) OpenPose BODY_25.

    Neck and mid-hip are the midpoints of the shoulders / hips, visible only when both are;
    the result can be written as `pose_keypoints_2d` for the OpenPose crop rule. A record's
    (31, 3) keypoints are accepted too (the knuckles are not used).
    """
    kp = np.asarray(kp, np.float32)
    if kp.shape not in ((23, 3), (31, 3)):
        raise ValueError(f"expected (23, 3) or (31, 3) keypoints, got {kp.shape}")
    out = np.zeros((25, 3), np.float32)
    for dst, src in _BODY25_FROM_COCO.items():
        out[dst] = kp[src]
    for dst, (a, b) in _BODY25_MIDPOINTS.items():
        both = min(kp[a, 2], kp[b, 2])
        out[dst] = [*(0.5 * (kp[a, :2] + kp[b, :2])), both] if both > 0 else 0
    return out


def coco23_to_twok2k(kp: np.ndarray) -> np.ndarray:
    """(23, 3) COCO-WholeBody -> (31, 3) 2K2K layout.

    2K2K's slots 0-22 are COCO-WholeBody 0-22 (its training keypoints are projected in that
    order); slots 23-30 are finger knuckles, unknown here: they are marked invisible
    (0, 0, 0), as 2K2K's training data marks joints it cannot see (records carry knuckles:
    their keypoints are already in this layout).
    """
    kp = np.asarray(kp, np.float32)
    if kp.shape != (23, 3):
        raise ValueError(f"expected (23, 3) keypoints, got {kp.shape}")
    return np.concatenate([kp, np.zeros((8, 3), np.float32)])


# 2K2K slot -> BODY_25 index (slots 0-22), as the official demo maps an OpenPose json.
TWOK2K_FROM_BODY25 = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11, 19, 20, 21, 22,
                      23, 24)  # fmt: skip
# A missing ear (x = y = 0) takes the same-side eye: 2K2K slot -> BODY_25 fallback index.
_EAR_FALLBACK = {3: 16, 4: 15}
# 2K2K slots 23-26 (left) and 27-30 (right) <- OpenPose hand joints (index, middle, ring,
# little finger PIP joints).
TWOK2K_FROM_HAND = (6, 10, 14, 18)
_NUM_BODY25 = 25
_NUM_HAND = 21


def read_openpose_people(json_path: str | os.PathLike) -> list[dict]:
    """The non-empty ``people`` list of an OpenPose json (one line on any problem)."""
    try:
        with open(json_path) as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise HdjaxError("OpenPose json does not exist", json_path) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HdjaxError(f"cannot read OpenPose json ({e})", json_path) from e
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list):
        raise HdjaxError("not an OpenPose json (no 'people' list)", json_path)
    if not people:
        raise HdjaxError("no person found in OpenPose json", json_path)
    return people


def _points(person: dict, key: str, count: int, index: int, json_path, required: bool):
    """(count, 3) float64 of ``person[key]``; zeros when an optional entry is absent/empty."""
    values = person.get(key) if isinstance(person, dict) else None
    if values is None or (not required and len(values) == 0):
        if required:
            raise HdjaxError(f"person {index} has no '{key}'", json_path)
        return np.zeros((count, 3))
    try:
        flat = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise HdjaxError(f"person {index}: '{key}' is not a list of numbers", json_path) from e
    if flat.shape != (3 * count,):
        raise HdjaxError(
            f"person {index}: expected {3 * count} values in '{key}', got {flat.size}", json_path
        )
    return flat.reshape(count, 3)


def openpose_to_twok2k(json_path: str | os.PathLike) -> np.ndarray:
    """An OpenPose json (BODY_25 + hands) -> (31, 3) 2K2K keypoints, as the official demo maps it.

    Slots 0-22 take BODY_25 joints `TWOK2K_FROM_BODY25` (a missing ear, x = y = 0, takes the
    same-side eye); slots 23-26 / 27-30 the left / right hand joints `TWOK2K_FROM_HAND`.
    A missing or empty ``hand_*_keypoints_2d`` leaves its slots at 0 (missing: the part
    solver's finger-less hand rule then applies). With several people the most confident one
    (largest sum of BODY_25 confidences; the first on ties) is used, and a warning says so.

    Returns:
      (31, 3) float64 (x, y, confidence) pixels of the json's image; missing joints are 0.

    Raises:
      HdjaxError: unreadable json, no person, or a person without 75 BODY_25 values.
    """
    people = read_openpose_people(json_path)
    bodies = [
        _points(p, "pose_keypoints_2d", _NUM_BODY25, i, json_path, required=True)
        for i, p in enumerate(people)
    ]
    chosen = int(np.argmax([b[:, 2].sum() for b in bodies]))
    if len(people) > 1:
        log.warning(
            "%s: %d people; using person %d, the most confident (BODY_25 confidence sum %.2f)",
            json_path,
            len(people),
            chosen,
            bodies[chosen][:, 2].sum(),
        )
    body = bodies[chosen]
    out = np.zeros((31, 3))
    out[:23] = body[list(TWOK2K_FROM_BODY25)]
    for slot, eye in _EAR_FALLBACK.items():
        if out[slot, 0] == 0 and out[slot, 1] == 0:
            out[slot] = body[eye]
    for start, key in ((23, "hand_left_keypoints_2d"), (27, "hand_right_keypoints_2d")):
        hand = _points(people[chosen], key, _NUM_HAND, chosen, json_path, required=False)
        out[start : start + 4] = hand[list(TWOK2K_FROM_HAND)]
    return out


# Wrist -> knuckle (MCP joint) distance as a fraction of the hand's length along its axis.
_MCP_FRACTION = 0.5
# Index-to-little knuckle span as a fraction of the palm's width there.
_MCP_SPAN = 0.6


def _hand_vertices(vertices, faces, elbow, wrist):
    """Indices of the hand: the mesh component beyond the wrist plane that touches it."""
    axis = wrist - elbow
    length = float(np.linalg.norm(axis))
    axis = axis / length
    t = (vertices - wrist) @ axis
    near = np.linalg.norm(vertices - wrist, axis=1) < 1.3 * length
    inside = (t > 0) & near
    idx = np.nonzero(inside)[0]
    if len(idx) == 0:
        return idx, axis, length
    local = np.full(len(vertices), -1)
    local[idx] = np.arange(len(idx))
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = edges[inside[edges].all(1)]
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (local[edges[:, 0]], local[edges[:, 1]])), (len(idx), len(idx))
    )
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    seed = np.argmin(np.linalg.norm(vertices[idx] - wrist, axis=1))
    return idx[labels == labels[seed]], axis, length


def hand_points_from_mesh(
    vertices: np.ndarray, faces: np.ndarray, keypoints: np.ndarray, forward=(0.0, 0.0, 1.0)
) -> np.ndarray:
    """Plausible finger knuckles (2K2K slots 23-30) of a body mesh that has no hand joints.

    2K2K's training keypoints put the index/middle/ring/little MCP joints (the knuckles) in
    slots 23-26 (left) and 27-30 (right); its part solver uses only their mean, which fixes
    where the lower-arm crops end. Derived here from the geometry: the hand is the mesh
    component beyond the wrist plane (normal elbow -> wrist) that touches the wrist; its axis
    runs from the wrist to the hand's centroid, the knuckles sit half the hand's length along
    it, spread over 60 % of the palm's width (its widest direction across the axis) — the
    proportions of an adult hand. Index-to-little order assumes the thumb side faces
    ``forward`` (relaxed arms); only the mean matters to 2K2K.

    Args:
      vertices: (V, 3) mesh vertices; faces: (F, 3) int.
      keypoints: (23, 3) COCO-WholeBody body+feet joints (elbows 7/8, wrists 9/10), same
        frame as the mesh.
      forward: the body's facing direction in that frame.

    Returns:
      (8, 3) float64 knuckles: left index, middle, ring, little, then right; a hand that
      cannot be found (no vertex beyond the wrist) gives NaN rows.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    kp = np.asarray(keypoints, np.float64)
    out = np.full((8, 3), np.nan)
    for start, elbow, wrist in ((0, kp[7], kp[9]), (4, kp[8], kp[10])):
        idx, _, _ = _hand_vertices(v, f, elbow, wrist)
        if len(idx) < 10:
            continue
        hand = v[idx]
        direction = hand.mean(0) - wrist
        direction /= np.linalg.norm(direction)
        t = (hand - wrist) @ direction
        mcp = wrist + _MCP_FRACTION * t.max() * direction
        # Palm width: the widest spread across the axis among vertices near the knuckles.
        ring = hand[np.abs(t - _MCP_FRACTION * t.max()) < 0.15 * t.max()]
        across = ring - mcp
        across -= np.outer(across @ direction, direction)
        _, _, vt = np.linalg.svd(across - across.mean(0), full_matrices=False)
        width_dir = vt[0] if vt[0] @ np.asarray(forward) >= 0 else -vt[0]
        width = np.ptp(across @ width_dir)
        centre = mcp + (across.mean(0) @ width_dir) * width_dir
        step = _MCP_SPAN * width / 3.0
        for k, offset in enumerate((1.5, 0.5, -0.5, -1.5)):
            out[start + k] = centre + offset * step * width_dir
    return out

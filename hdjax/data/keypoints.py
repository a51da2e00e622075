"""Keypoint layouts: the stored COCO-WholeBody body+feet points -> OpenPose BODY_25 and the
2K2K 31-joint layout.

Records store 23 points in COCO-WholeBody order (0-16 COCO body, 17-22 feet: left big toe,
left small toe, left heel, right big toe, right small toe, right heel) as (u, v, visible).
"""

from __future__ import annotations

import numpy as np

# BODY_25 index -> COCO-WholeBody index; neck (1) and mid-hip (8) are midpoints instead.
_BODY25_FROM_COCO = {
    0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 9: 12, 10: 14, 11: 16, 12: 11, 13: 13,
    14: 15, 15: 2, 16: 1, 17: 4, 18: 3, 19: 17, 20: 18, 21: 19, 22: 20, 23: 21, 24: 22,
}  # fmt: skip
_BODY25_MIDPOINTS = {1: (5, 6), 8: (11, 12)}


def coco23_to_body25(kp: np.ndarray) -> np.ndarray:
    """(23, 3) COCO-WholeBody (x, y, visible/confidence) -> (25, 3) OpenPose BODY_25.

    Neck and mid-hip are the midpoints of the shoulders / hips, visible only when both are;
    the result can be written as `pose_keypoints_2d` for the OpenPose crop rule.
    """
    kp = np.asarray(kp, np.float32)
    if kp.shape != (23, 3):
        raise ValueError(f"expected (23, 3) keypoints, got {kp.shape}")
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
    order); slots 23-30 are finger joints, which the embedded bodies do not have: they are
    marked invisible (0, 0, 0), as 2K2K's training data marks joints it cannot see.
    """
    kp = np.asarray(kp, np.float32)
    if kp.shape != (23, 3):
        raise ValueError(f"expected (23, 3) keypoints, got {kp.shape}")
    return np.concatenate([kp, np.zeros((8, 3), np.float32)])

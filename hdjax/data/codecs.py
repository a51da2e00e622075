"""Encodings of the stored maps, shared by the dataset writer and the training reader.

numpy and OpenCV only: the input pipeline decodes records with these functions without
importing the renderer, the winding-number labeller or trimesh.

=================  ==========================================================================
map                PNG value
=================  ==========================================================================
normals            uint8 ``round((n + 1)·127.5)`` of a unit view-frame normal, background 0
ortho depth        uint16 ``round((z + 3)·1e4)`` of view-frame z in [−3, 3.55), background 0
2K2K depth         uint16 ``round(d · 32)`` of the 2K2K pixel-like depth d (`camera`),
                   background 0; network units are d / 512
=================  ==========================================================================
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from hdjax.errors import HdjaxError

# Ortho depth PNG: view-frame z in [−3, 3.5) normalised units, 1e-4 resolution, 0 = none.
ORTHO_DEPTH_OFFSET = 3.0
ORTHO_DEPTH_SCALE = 10000.0
TWOK2K_PNG_SCALE = 32.0
CAMERAS = ("ortho", "persp")


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W), (H, W, 1) or (H, W, 3) RGB uint8/uint16 -> PNG bytes (compression 1: speed)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = img[..., ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> array as stored (uint8/uint16; (H, W) or (H, W, 3) RGB)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a PNG")
    return img[..., ::-1] if img.ndim == 3 and img.shape[-1] == 3 else img


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


def persp_depth_to_png(d: np.ndarray) -> np.ndarray:
    """(H, W) 2K2K depth d -> (H, W) uint16 ``round(d · 32)`` as in the 2K2K PNGs."""
    return np.clip(np.rint(np.asarray(d, np.float64) * TWOK2K_PNG_SCALE), 0, 65535).astype(
        np.uint16
    )


def png_to_persp_depth(png: np.ndarray) -> np.ndarray:
    """Inverse of `persp_depth_to_png`: (H, W) uint16 PNG values -> (H, W) float32 d."""
    return (np.asarray(png, np.float32) / TWOK2K_PNG_SCALE).astype(np.float32)


def png_to_depth(png: np.ndarray, camera: str) -> np.ndarray:
    """A stored depth PNG -> float32 depth of the record's camera ("ortho" or "persp")."""
    if camera == "ortho":
        return png_to_ortho_depth(png)
    if camera == "persp":
        return png_to_persp_depth(png)
    raise ValueError(f"unknown camera {camera!r}; one of {CAMERAS}")


def record_camera(record: dict[str, Any]) -> str:
    """The camera a stored record was rendered with ("ortho" or "persp")."""
    camera = record.get("camera")
    camera = camera.decode() if isinstance(camera, bytes) else camera
    if camera not in CAMERAS:
        raise HdjaxError(
            f"record has no camera field (got {camera!r}): it was built by an older hdjax; "
            "rebuild the dataset"
        )
    return camera

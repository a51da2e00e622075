"""Debug images written next to the reconstructed mesh.

The official `gen_mesh` writes `{name}.png` = [input 512 image, front normals, back normals]
side by side, each mapped by ·0.5 + 0.5 and ×255 in float32, and lets `cv2.imwrite` convert to
8 bits (round half to even, saturate). `normals_to_uint8` reproduces that conversion.
"""

from __future__ import annotations

import os

import numpy as np

from hdjax.io.files import write_png


def normals_to_uint8(nml: np.ndarray) -> np.ndarray:
    """Maps values in [-1, 1] to uint8 like the official PNG: rint((x·0.5 + 0.5)·255), clipped.

    Args:
      nml: (..., 3) float array (normals or an image normalised to [-1, 1]); any float dtype,
        computed in float32 as the official torch tensors are. NaN maps to 0.

    Returns:
      (..., 3) uint8, same channel order as the input.
    """
    x = np.asarray(nml, dtype=np.float32)
    x = (x * np.float32(0.5) + np.float32(0.5)) * np.float32(255.0)
    # OpenCV's saturate_cast rounds half to even (lrint), as np.rint does.
    x = np.rint(np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0))
    return np.clip(x, 0, 255).astype(np.uint8)


def save_normals_png(
    path: str | os.PathLike,
    img_512: np.ndarray,
    nml_front: np.ndarray,
    nml_back: np.ndarray,
) -> None:
    """Writes [image, front normals, back normals] side by side as an 8-bit PNG, atomically.

    Args:
      path: output .png path; its folder must exist. Written with `atomic_write`, so readers
        never see a partial file.
      img_512: (512, 512, 3) float in [-1, 1], RGB (the coarse network input).
      nml_front: (512, 512, 3) float in [-1, 1], RGB = xyz (netF output).
      nml_back: (512, 512, 3) float in [-1, 1], RGB = xyz (netB output).

    Raises:
      ValueError: the three arrays are not all (H, W, 3) with the same H, W.
      HdjaxError: the file cannot be written.
    """
    parts = [np.asarray(a) for a in (img_512, nml_front, nml_back)]
    shape = parts[0].shape
    if len(shape) != 3 or shape[2] != 3 or any(p.shape != shape for p in parts):
        raise ValueError(f"expected three (H, W, 3) arrays, got {[p.shape for p in parts]}")
    write_png(path, normals_to_uint8(np.concatenate(parts, axis=1)))

"""Camera projections of the PIFu family, for NumPy and JAX arrays alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import jax

# The evaluation calib of PIFuHD: the query frame has y up, the image y axis points down.
EVAL_CALIB = np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32)

ArrayT = TypeVar("ArrayT", np.ndarray, "jax.Array")


def _numpy(*arrays) -> bool:
    # NumPy inputs (data pipelines) stay in NumPy: no device transfer, no JAX needed.
    return all(isinstance(a, np.ndarray) for a in arrays)


def orthogonal(points: ArrayT, calib: ArrayT) -> ArrayT:
    """Orthographic projection xyz = R p + t.

    Computed with NumPy when both inputs are NumPy arrays (data pipelines, no device
    transfer), else with JAX (also under `jit`), where the product runs at
    `precision="highest"`: full float32 on every backend, as the official float32 torch code.

    Args:
      points: (B, N, 3) points in the query (world) frame.
      calib: (B, 4, 4) (or (B, 3, 4)) matrices; R = calib[:, :3, :3], t = calib[:, :3, 3].
    Returns:
      (B, N, 3): normalised image x, y in [-1, 1] over the image, and z.
    """
    rot = calib[:, :3, :3]
    trans = calib[:, :3, 3]
    if _numpy(points, calib):
        rotated = np.einsum("bij,bnj->bni", rot, points)
    else:
        import jax.numpy as jnp

        rotated = jnp.einsum("bij,bnj->bni", rot, points, precision="highest")
    return rotated + trans[:, None, :]


def perspective(points: ArrayT, calib: ArrayT) -> ArrayT:
    """Pinhole projection of a 2K2K calib ``K·[R | t]``: (x/z, y/z, z) of xyz = R p + t.

    Args:
      points: (B, N, 3); calib: (B, 4, 4) with the intrinsics folded in (pixels).
    Returns:
      (B, N, 3): pixel column, row, and the camera-frame depth z.
    """
    xyz = orthogonal(points, calib)
    if _numpy(xyz):
        return np.concatenate([xyz[..., :2] / xyz[..., 2:], xyz[..., 2:]], axis=-1)
    import jax.numpy as jnp

    return jnp.concatenate([xyz[..., :2] / xyz[..., 2:], xyz[..., 2:]], axis=-1)

"""Camera projections of the PIFu family."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# The evaluation calib of PIFuHD: the query frame has y up, the image y axis points down.
EVAL_CALIB = np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32)


def orthogonal(points: jnp.ndarray, calib: jnp.ndarray) -> jnp.ndarray:
    """Orthographic projection xyz = R p + t.

    Args:
      points: (B, N, 3) points in the query (world) frame.
      calib: (B, 4, 4) (or (B, 3, 4)) matrices; R = calib[:, :3, :3], t = calib[:, :3, 3].
    Returns:
      (B, N, 3): normalised image x, y in [-1, 1] over the image, and z.
    """
    rot = calib[:, :3, :3]
    trans = calib[:, :3, 3]
    return jnp.einsum("bij,bnj->bni", rot, points, precision="highest") + trans[:, None, :]

"""Test-only helpers for the 2K2K tests: what the package itself never needs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hdjax.models.twok2k_official import Variables, official_key


def upsample_nearest2x(x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, C) -> (B, 2H, 2W, C), `nn.Upsample(scale_factor=2)` (nearest)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _to_torch(x: np.ndarray, kind: str) -> np.ndarray:
    return np.transpose(x, (3, 2, 0, 1)) if kind == "conv" else x


def variables_to_state_dict(variables: Variables) -> dict[str, np.ndarray]:
    """`TwoK2K` variables -> official state dict (with zero `num_batches_tracked`): the
    inverse of `twok2k_official.convert_state_dict`."""
    out: dict[str, np.ndarray] = {}
    for collection, tree in variables.items():
        for key_path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
            key, kind = official_key(collection, tuple(k.key for k in key_path))
            out[key] = np.ascontiguousarray(_to_torch(np.asarray(x, np.float32), kind))
            if key.endswith(".running_mean"):
                out[key.replace(".running_mean", ".num_batches_tracked")] = np.zeros((), np.int64)
    return out

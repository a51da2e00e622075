"""The implicit-function MLP of PIFu/PIFuHD (per-point 1x1 convs = dense layers)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hdjax.models.layers import Numerics


class ImplicitMLP(nn.Module):
    """Point features -> occupancy logit and the embedding phi.

    Layer l maps channels[l] (+ channels[0] when l is in res_layers, the input feature being
    appended after the activations) to channels[l+1]; leaky ReLU (slope 0.01) after every
    layer but the last; no normalisation. The official model applies a sigmoid to the logit.

    Attributes:
      channels: e.g. (257, 1024, 512, 256, 128, 1) for the coarse PIFuHD level.
      res_layers: layers that also receive the input feature.
      merge_layer: phi is the activated output of this layer (<= 0: len(channels) // 2).
      numerics: dtype and precision.
    """

    channels: Sequence[int]
    res_layers: Sequence[int] = ()
    merge_layer: int = -1
    numerics: Numerics = Numerics()

    @property
    def phi_layer(self) -> int:
        return self.merge_layer if self.merge_layer > 0 else len(self.channels) // 2

    @nn.compact
    def __call__(self, feature: jnp.ndarray, phi_only: bool = False):
        """(..., channels[0]) -> (logit (..., channels[-1]), phi (..., channels[phi_layer+1])).

        With phi_only the layers after phi are skipped and the logit is None (the fine level
        needs only the coarse phi, so inference saves those layers).
        """
        n_layers = len(self.channels) - 1
        y, phi = feature, None
        for i in range(n_layers):
            if i in self.res_layers:
                y = jnp.concatenate([y, feature], axis=-1)
            y = self.numerics.dense(self.channels[i + 1], f"filters_{i}")(y)
            if i != n_layers - 1:
                y = jax.nn.leaky_relu(y, 0.01)
            if i == self.phi_layer:
                phi = y
                if phi_only:
                    return None, phi
        return y, phi

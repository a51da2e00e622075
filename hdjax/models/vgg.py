"""VGG19 features for pix2pixHD's perceptual loss, filled from torchvision's weights file.

`VGG19Features` returns the five activations pix2pixHD's ``VGGLoss`` compares (relu1_1,
relu2_1, relu3_1, relu4_1, relu5_1: torchvision's ``vgg19().features[:30]``). Images go in
as they are, in [−1, 1] and without ImageNet normalisation, as pix2pixHD feeds them.

`load_vgg19(path)` reads torchvision's ``vgg19-*.pth`` (a state dict ``features.N.weight``
/ ``features.N.bias`` ..., classifier keys ignored) with the torch-free reader; no weights
are ever downloaded.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle import load_torch_file

# (torchvision features index, output channels) of every conv up to relu5_1, and after
# which conv each returned activation is taken (its ReLU) and a 2x2 max-pool follows.
_CONVS = (
    (0, 64),
    (2, 64),
    (5, 128),
    (7, 128),
    (10, 256),
    (12, 256),
    (14, 256),
    (16, 256),
    (19, 512),
    (21, 512),
    (23, 512),
    (25, 512),
    (28, 512),
)
_TAPS = (0, 5, 10, 19, 28)  # relu1_1 ... relu5_1
_POOL_AFTER = (2, 7, 16, 25)


class VGG19Features(nn.Module):
    """(B, H, W, 3) image in [−1, 1] -> [relu1_1 (B, H, W, 64), relu2_1 (B, H/2, W/2, 128),
    relu3_1 (/4, 256), relu4_1 (/8, 512), relu5_1 (/16, 512)]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        out = []
        for idx, ch in _CONVS:
            x = nn.relu(nn.Conv(ch, (3, 3), padding=1, name=f"features_{idx}")(x))
            if idx in _TAPS:
                out.append(x)
            if idx in _POOL_AFTER:
                x = nn.max_pool(x, (2, 2), (2, 2))
        return out


def load_vgg19(path: str | os.PathLike) -> dict[str, Any]:
    """torchvision ``vgg19-*.pth`` -> `VGG19Features` params (float32, NHWC kernels)."""
    path = os.fspath(path)
    state = load_torch_file(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HdjaxError("not a VGG19 state dict", path)
    params = {}
    for idx, ch in _CONVS:
        w, b = state.get(f"features.{idx}.weight"), state.get(f"features.{idx}.bias")
        cin = 3 if idx == 0 else dict(_CONVS)[_prev(idx)]
        if w is None or b is None or w.shape != (ch, cin, 3, 3) or b.shape != (ch,):
            got = None if w is None else tuple(w.shape)
            raise HdjaxError(
                f"not torchvision's VGG19: features.{idx}.weight is {got}, expected "
                f"{(ch, cin, 3, 3)}",
                path,
            )
        params[f"features_{idx}"] = {
            "kernel": jnp.asarray(np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0))),
            "bias": jnp.asarray(np.asarray(b, np.float32)),
        }
    return {"params": params}


def _prev(idx: int) -> int:
    indices = [i for i, _ in _CONVS]
    return indices[indices.index(idx) - 1]

"""Where PIFuHD weights come from: a PyTorch `.pt`, a converted orbax dir, or a random init.

Reconstruction asks for one subtree at a time (a normal net, a filter, the MLPs), so with a
`.pt` file only the part being run is ever converted and held in memory: the file is
memory-mapped and the 1.5 GB of weights are never resident together.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hdjax.checkpoint.pifuhd import (
    Params,
    arch_from_options,
    convert_state_dict,
    expected_shapes,
    load_converted,
    validate_state_dict,
)
from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle import load_torch_file
from hdjax.models.pifuhd import PIFuHDArch


@dataclasses.dataclass(frozen=True)
class Weights:
    """An architecture and a way to get the params of any of its subtrees.

    `get(("netG", "netF"))` returns that subtree; `get(())` the whole tree.
    """

    arch: PIFuHDArch
    get: Callable[[tuple[str, ...]], Params]
    source: str


def _subtree(params: Mapping[str, Any], names: tuple[str, ...]) -> Params:
    for k in names:
        params = params[k]
    return params


def random_params(arch: PIFuHDArch, seed: int) -> Params:
    """Official-style init: kernels N(0, 0.02), biases 0, GroupNorm scale 1 / bias 0.

    Drawn with numpy from the shapes alone: compiling flax's `init` (one RNG program per
    parameter) takes XLA tens of seconds even for the tiny config.
    """
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(0.0, 0.02, shape.shape).astype(np.float32))
        fill = 1.0 if name == "scale" else 0.0
        return jnp.full(shape.shape, fill, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, expected_shapes(arch))


def open_weights(checkpoint: str, arch: PIFuHDArch, seed: int = 0) -> Weights:
    """Opens `checkpoint` ('' = random weights for `arch`).

    A `.pt` file's stored options define the architecture (`arch` is then ignored) and all
    its keys and shapes are validated up front, before any tensor is read.
    """
    if not checkpoint:
        params = random_params(arch, seed)
        return Weights(arch, lambda names: _subtree(params, names), f"random (seed {seed})")
    if os.path.isdir(checkpoint):
        arch, params = load_converted(checkpoint)
        return Weights(arch, lambda names: _subtree(params, names), checkpoint)
    ckpt = load_torch_file(checkpoint)
    if not isinstance(ckpt, Mapping):
        raise HdjaxError("not a PIFuHD checkpoint (top level is not a dict)", checkpoint)
    missing = [k for k in ("model_state_dict", "opt", "opt_netG") if k not in ckpt]
    if missing:
        raise HdjaxError(f"not a PIFuHD checkpoint (no {', '.join(missing)} entry)", checkpoint)
    for k in ("opt", "opt_netG"):
        if not isinstance(ckpt[k], Mapping):
            raise HdjaxError(f"not a PIFuHD checkpoint ({k} is not an options object)", checkpoint)
    arch = arch_from_options(ckpt["opt"], ckpt["opt_netG"], checkpoint)
    state_dict = ckpt["model_state_dict"]
    validate_state_dict(state_dict, arch, checkpoint)
    return Weights(
        arch,
        lambda names: convert_state_dict(state_dict, arch, names, checkpoint),
        checkpoint,
    )

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

from hdjax.checkpoint.pifuhd import (
    Params,
    arch_from_options,
    convert_state_dict,
    load_converted,
    validate_state_dict,
)
from hdjax.checkpoint.torch_reader import load_torch_file
from hdjax.errors import HdjaxError
from hdjax.models.pifuhd import PIFuHD, PIFuHDArch


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
    """Official-style init: weights N(0, 0.02), biases 0, GroupNorm scale 1 / bias 0."""
    c, f = arch.coarse_size, arch.fine_size
    model = PIFuHD(arch)
    params = jax.jit(model.init)(
        jax.random.PRNGKey(seed),
        jnp.zeros((1, c, c, 3)),
        jnp.zeros((1, f, f, 3)),
        jnp.zeros((1, 1, 3)),
        jnp.eye(4)[None],
    )["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    out = []
    for (path, x), key in zip(leaves, keys, strict=True):
        if path[-1].key == "kernel":
            x = 0.02 * jax.random.normal(key, x.shape, x.dtype)
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)


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

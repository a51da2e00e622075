"""Where reconstruction's PIFuHD weights come from: a `.pt`, a converted orbax dir, or random.

Reconstruction asks for one subtree at a time (a normal net, a filter, the MLPs), so with a
`.pt` file or random weights only the part being run is ever converted (or drawn) and held in
memory: the file is memory-mapped and the 1.5 GB of weights are never resident together.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from hdjax import configlib
from hdjax.models import pifuhd_official, shipped
from hdjax.models.layers import Numerics
from hdjax.models.pifuhd import (
    Params,
    PIFuHD,
    PIFuHDArch,
    init_params,
    numerics_from_config,
    param_shapes,
)


@dataclasses.dataclass(frozen=True)
class Weights:
    """A model (architecture and numerics) and a way to get the params of its subtrees.

    `get(("netG", "netF"))` returns that subtree; `get(())` the whole tree.
    """

    model: PIFuHD
    get: Callable[[tuple[str, ...]], Params]
    source: str

    @property
    def arch(self) -> PIFuHDArch:
        return self.model.arch


def _subtree(params: Mapping[str, Any], names: tuple[str, ...]) -> Params:
    for k in names:
        params = params[k]
    return params


def open_weights(
    checkpoint: str, arch: PIFuHDArch, seed: int = 0, numerics: Numerics | None = None
) -> Weights:
    """Opens `checkpoint`: `shipped.RANDOM` = random weights for `arch` (`init_params`), a
    shipped `.npz` (`hdjax.models.shipped`, for exactly `arch`), a `.pt` or a converted
    directory.

    `numerics` None: the reconstruction default, float32 with the CPU kernels on a CPU
    backend and `nn.Conv` elsewhere.

    A `.pt` file's or converted directory's architecture wins over `arch`; a `.pt`'s keys
    and shapes are all validated up front, before any tensor is read.
    """
    numerics = numerics or numerics_from_config({"conv_impl": "auto"})
    if checkpoint == shipped.RANDOM:
        return Weights(
            PIFuHD(arch, numerics),
            lambda names: init_params(arch, seed, names),
            f"random (seed {seed})",
        )
    if checkpoint.endswith(".npz"):
        want = param_shapes(arch)
        params = shipped.load(checkpoint, "pifuhd", configlib.to_dict(arch), want)
        return Weights(PIFuHD(arch, numerics), lambda names: _subtree(params, names), checkpoint)
    if os.path.isdir(checkpoint):
        arch, params = pifuhd_official.load_converted(checkpoint)
        return Weights(PIFuHD(arch, numerics), lambda names: _subtree(params, names), checkpoint)
    arch, state_dict = pifuhd_official.open_official(checkpoint)
    return Weights(
        PIFuHD(arch, numerics),
        lambda names: pifuhd_official.convert_state_dict(state_dict, arch, names, checkpoint),
        checkpoint,
    )

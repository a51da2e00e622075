"""Foreign weights for `PIFuHD`: the official checkpoint (`pifuhd.pt`) -> params, and back.

The layout conversion (OIHW -> HWIO, transposed-conv flip, Conv1d -> Dense) and the official
key names live here and nowhere else. The stored options `opt` / `opt_netG` choose the
architecture; every tensor is then checked against the shape that architecture expects.
`load` opens either a `.pt` or a directory written by `save_converted`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hdjax import configlib
from hdjax.errors import HdjaxError
from hdjax.io.files import save_tree_dir
from hdjax.io.torch_pickle import load_torch_file, release_pages
from hdjax.models.pifuhd import LevelArch, Params, PIFuHDArch, param_shapes

# Keys the official state dict stores that no computation reads: `bn4` of blocks without a
# projection, and `downsample.0`, the same GroupNorm object as `bn4` stored twice.
_UNUSED_KEY = re.compile(r"(\.bn4\.|\.downsample\.0\.)(weight|bias)$")


def _opt_get(opt: Mapping[str, Any], field: str, name: str, path: str | None) -> Any:
    if field not in opt:
        raise HdjaxError(f"checkpoint option {name}.{field} is missing", path)
    return opt[field]


# LevelArch fields stored under their own name in opt / opt_netG; the widths the official
# code hard-codes are stored by hdjax-written checkpoints as extra `hdjax_*` options.
_LEVEL_OPTIONS = ("num_stack", "hg_depth", "hg_dim", "hg_down", "mlp_dim", "mlp_res_layers")
_LEVEL_EXTRAS = ("hg_width", "groups")
# PIFuHDArch field -> (official option, default when absent); all read from opt_netG but
# fine_size (opt.loadSizeBig).
_ARCH_OPTIONS = {
    "use_front_normal": ("use_front_normal", False),
    "use_back_normal": ("use_back_normal", False),
    "normal_ngf": ("hdjax_normal_ngf", 64),
    "normal_n_down": ("hdjax_normal_n_down", 4),
    "normal_n_blocks": ("hdjax_normal_n_blocks", 9),
    "coarse_size": ("loadSize", None),
    "z_size": ("z_size", None),
}


def arch_from_options(
    opt: Mapping[str, Any], opt_netG: Mapping[str, Any], path: str | None = None
) -> PIFuHDArch:
    """Architecture from the checkpoint's stored `opt` (fine) and `opt_netG` (coarse)."""
    for o, name in ((opt, "opt"), (opt_netG, "opt_netG")):
        if _opt_get(o, "norm", name, path) != "group":
            raise HdjaxError(f"{name}.norm={o['norm']!r} is not supported (only 'group')", path)
        if o.get("mlp_norm", "none") not in ("none", None):
            raise HdjaxError(f"{name}.mlp_norm={o['mlp_norm']!r} is not supported", path)

    def level(o: Mapping[str, Any], name: str, **fixed: Any) -> dict:
        fields = ("merge_layer", *_LEVEL_OPTIONS) if not fixed else _LEVEL_OPTIONS
        d = {f: _opt_get(o, f, name, path) for f in fields if f not in fixed}
        d |= {f: o[f"hdjax_{f}"] for f in _LEVEL_EXTRAS if f"hdjax_{f}" in o}
        return d | fixed

    arch: dict[str, Any] = dict(
        coarse=level(opt_netG, "opt_netG"),
        # The official fine level ignores opt.hg_down and forces merge_layer -1.
        fine=level(opt, "opt", hg_down="no_down", merge_layer=-1),
        fine_size=opt.get("loadSizeBig", 1024),
    )
    for field, (option, default) in _ARCH_OPTIONS.items():
        arch[field] = (
            _opt_get(opt_netG, option, "opt_netG", path)
            if default is None
            else opt_netG.get(option, default)
        )
    try:
        return configlib.build(PIFuHDArch, arch, "checkpoint options")
    except HdjaxError as e:
        raise HdjaxError(e.problem, path) from None


def arch_to_options(arch: PIFuHDArch) -> tuple[dict, dict]:
    """(opt, opt_netG) for `arch`, as the official code would store them (inverse of
    `arch_from_options`; non-official widths go into `hdjax_*` fields)."""

    def level(a: LevelArch) -> dict:
        d = {f: configlib.to_dict(a)[f] for f in ("merge_layer", *_LEVEL_OPTIONS)}
        d |= {f"hdjax_{f}": getattr(a, f) for f in _LEVEL_EXTRAS}
        return d | dict(norm="group", mlp_norm="none", z_size=arch.z_size)

    opt_netG = level(arch.coarse) | {o: getattr(arch, f) for f, (o, _) in _ARCH_OPTIONS.items()}
    opt = level(arch.fine) | dict(loadSize=arch.fine_size, loadSizeBig=arch.fine_size)
    return opt, opt_netG


def _generator_index(parts: list[str], n_down: int, n_blocks: int) -> list[str]:
    """Our GlobalGenerator module names -> the official `model.<i>` Sequential indices."""
    head, rest = parts[0], parts[1:]
    if head == "conv_in":
        return ["model", "1", *rest]
    if m := re.fullmatch(r"down(\d+)", head):
        return ["model", str(4 + 3 * int(m[1])), *rest]
    first_res = 4 + 3 * n_down
    if m := re.fullmatch(r"res(\d+)", head):
        conv = {"conv0": "1", "conv1": "5"}[rest[0]]
        return ["model", str(first_res + int(m[1])), "conv_block", conv, *rest[1:]]
    first_up = first_res + n_blocks
    if m := re.fullmatch(r"up(\d+)", head):
        return ["model", str(first_up + 3 * int(m[1])), *rest[1:]]  # drop our inner "conv"
    if head == "conv_out":
        return ["model", str(first_up + 3 * n_down + 1), *rest]
    raise KeyError(head)


def official_key(path: tuple[str, ...], arch: PIFuHDArch) -> tuple[str, str]:
    """Flax param path -> (official state-dict key, layout kind)."""
    parts = list(path)
    leaf = parts.pop()
    kind = "vector"
    if "netF" in parts or "netB" in parts:
        i = parts.index("netF") if "netF" in parts else parts.index("netB")
        parts = parts[: i + 1] + _generator_index(
            parts[i + 1 :], arch.normal_n_down, arch.normal_n_blocks
        )
        if leaf == "kernel":
            kind = "conv_transpose" if path[i + 1].startswith("up") else "conv"
    elif parts[-1].startswith("filters_"):
        parts[-1:] = ["filters", parts[-1].split("_")[1]]
        kind = "dense" if leaf == "kernel" else "vector"
    elif leaf == "kernel":
        kind = "conv"
        if parts[-1] == "downsample":
            parts.append("2")
    name = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    return ".".join([*parts, name]), kind


def _to_flax_layout(x, kind: str):
    """Official layout -> ours, for numpy or jax arrays."""
    if kind == "conv":  # (O, I, kh, kw) -> (kh, kw, I, O)
        return x.transpose(2, 3, 1, 0)
    if kind == "conv_transpose":  # (I, O, kh, kw) -> flipped forward kernel (kh, kw, I, O)
        return x[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
    if kind == "dense":  # Conv1d (O, I, 1) -> (I, O)
        return x[..., 0].transpose(1, 0)
    return x


def _to_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":
        return np.transpose(x, (3, 2, 0, 1))
    if kind == "conv_transpose":
        return np.transpose(x, (2, 3, 0, 1))[:, :, ::-1, ::-1]
    if kind == "dense":
        return np.transpose(x, (1, 0))[..., None]
    return x


def _shape_only(shape) -> np.ndarray:
    """A zero-byte array of `shape`, to push shapes through the layout functions."""
    return np.broadcast_to(np.zeros((), np.int8), tuple(shape))


def _check_tensor(state_dict, key: str, kind: str, shape, path) -> np.ndarray:
    if key not in state_dict:
        raise HdjaxError(f"tensor {key} is missing (the architecture expects it)", path)
    raw = state_dict[key]
    got = _to_flax_layout(_shape_only(raw.shape), kind).shape
    if got != tuple(shape):
        want = _to_torch_layout(_shape_only(shape), kind).shape
        raise HdjaxError(
            f"tensor {key} has shape {tuple(raw.shape)}, the architecture in the "
            f"checkpoint options expects {tuple(want)}",
            path,
        )
    return raw


def validate_state_dict(
    state_dict: Mapping[str, np.ndarray], arch: PIFuHDArch, path: str | None = None
) -> None:
    """Checks every key and shape against `arch` without reading any tensor data.

    Raises:
      HdjaxError naming the key for a missing tensor, a shape mismatch (with both shapes),
      or tensors the architecture has no place for.
    """
    used = set()

    def check(key_path, shape):
        key, kind = official_key(tuple(k.key for k in key_path), arch)
        _check_tensor(state_dict, key, kind, shape.shape, path)
        used.add(key)

    jax.tree_util.tree_map_with_path(check, param_shapes(arch))
    extra = sorted(k for k in state_dict if k not in used and not _UNUSED_KEY.search(k))
    if extra:
        more = f" (and {len(extra) - 3} more)" if len(extra) > 3 else ""
        raise HdjaxError(
            f"tensors {', '.join(extra[:3])}{more} do not belong to the PIFuHD "
            "architecture described by the checkpoint options",
            path,
        )


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    arch: PIFuHDArch,
    subtree: tuple[str, ...] = (),
    path: str | None = None,
    to_device: Callable[[np.ndarray], Any] = jnp.asarray,
) -> Params:
    """Official state dict -> hdjax params of the whole model or of one subtree.

    Args:
      state_dict: official key -> (lazy) array, e.g. `load_torch_file(p)["model_state_dict"]`.
      arch: the architecture (from `arch_from_options`).
      subtree: e.g. ("netG", "netF") converts only the front normal net, so callers can keep
        just the part they are running in memory.
      path: the checkpoint file, for error messages.
      to_device: applied to every converted array.
    Raises:
      HdjaxError as `validate_state_dict`: for the whole model everything is validated
      first; for a subtree its own tensors are (callers validate the whole dict once).
    """
    if not subtree:
        validate_state_dict(state_dict, arch, path)
    shapes = param_shapes(arch)
    for k in subtree:
        shapes = shapes[k]

    def convert(key_path, shape):
        key, kind = official_key(tuple(subtree) + tuple(k.key for k in key_path), arch)
        raw = _check_tensor(state_dict, key, kind, shape.shape, path)
        # Copy the file's bytes sequentially, then change the layout on the device: a strided
        # numpy transpose straight from the map took 2 s per normal net, XLA's 0.2 s.
        out = _to_flax_layout(to_device(np.array(raw, dtype=np.float32)), kind)
        release_pages(raw)
        return out

    return jax.tree_util.tree_map_with_path(convert, shapes)


def params_to_state_dict(params: Params, arch: PIFuHDArch) -> dict[str, np.ndarray]:
    """hdjax params -> official state dict (unused `bn4`/`downsample.0` keys included)."""
    out: dict[str, np.ndarray] = {}

    def put(key_path, x):
        key, kind = official_key(tuple(k.key for k in key_path), arch)
        out[key] = np.ascontiguousarray(_to_torch_layout(np.asarray(x), kind))

    jax.tree_util.tree_map_with_path(put, params)
    for key in list(out):
        if key.endswith("downsample.2.weight"):
            block = key[: -len("downsample.2.weight")]
            for p in ("weight", "bias"):
                out[f"{block}downsample.0.{p}"] = out[f"{block}bn4.{p}"]
    return out


def save_converted(directory: str | os.PathLike, params: Params, arch: PIFuHDArch) -> None:
    """Write params with orbax plus `arch.json`, so later runs skip the .pt conversion."""
    text = json.dumps(configlib.to_dict(arch), indent=1)
    save_tree_dir(directory, "params", params, {"arch.json": text})


def load_converted(directory: str | os.PathLike) -> tuple[PIFuHDArch, Params]:
    """Inverse of `save_converted`."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    arch_file = os.path.join(directory, "arch.json")
    try:
        with open(arch_file) as f:
            arch = configlib.build(PIFuHDArch, json.load(f), "arch.json")
    except (OSError, ValueError, HdjaxError) as e:
        raise HdjaxError(f"not a converted hdjax checkpoint ({e})", arch_file) from None
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32), param_shapes(arch)
    )
    params = ocp.StandardCheckpointer().restore(os.path.join(directory, "params"), target)
    return arch, params


def open_official(path: str) -> tuple[PIFuHDArch, Mapping[str, Any]]:
    """A `pifuhd.pt` (either PyTorch container), memory-mapped: its architecture (from the
    stored options) and its state dict, every key and shape validated, no tensor read yet."""
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, Mapping):
        raise HdjaxError("not a PIFuHD checkpoint (top level is not a dict)", path)
    missing = [k for k in ("model_state_dict", "opt", "opt_netG") if k not in ckpt]
    if missing:
        raise HdjaxError(f"not a PIFuHD checkpoint (no {', '.join(missing)} entry)", path)
    for k in ("opt", "opt_netG"):
        if not isinstance(ckpt[k], Mapping):
            raise HdjaxError(f"not a PIFuHD checkpoint ({k} is not an options object)", path)
    arch = arch_from_options(ckpt["opt"], ckpt["opt_netG"], path)
    state_dict = ckpt["model_state_dict"]
    validate_state_dict(state_dict, arch, path)
    return arch, state_dict


def load(path: str | os.PathLike) -> tuple[PIFuHDArch, Params]:
    """All params of a `.pt` or of a directory written by `save_converted`, and the
    architecture they fill (the file's, whatever the config says)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return load_converted(path)
    arch, state_dict = open_official(path)
    return arch, convert_state_dict(state_dict, arch, path=path)

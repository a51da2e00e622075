"""Foreign weights for `TwoK2K`: the official phase-2 checkpoint (`ckpt_bg_mask.pth.tar`).

The official `Model_2K2K(phase=2)` state dict (1504 entries, optionally `module.`-prefixed)
maps one to one onto `TwoK2K`'s {'params', 'batch_stats'}: conv weights OIHW -> HWIO,
BatchNorm weight/bias -> scale/bias, running_mean/var -> batch_stats mean/var;
`num_batches_tracked` is ignored. The checkpoint is the `torch.save` dict the official
training writes (`model_state_dict`, `optimizer_state_dict`, `epoch`, ...), read without torch;
only `model_state_dict` is used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hdjax.errors import HdjaxError
from hdjax.io.files import save_tree_dir
from hdjax.io.torch_pickle import load_torch_file, release_pages
from hdjax.models.twok2k.networks import init_variables

Variables = dict[str, Any]
FORMAT = "hdjax-twok2k-v1"
# Top-level modules of the official phase-2 model that own tensors.
NETWORKS = (
    "img2normal_face",
    "img2normal_upper",
    "img2normal_arm",
    "img2normal_leg",
    "img2normal_shoe",
    "img2normal_down",
    "ImgNorm_to_Dep",
    "refine",
)
_CONV_BLOCK = {"conv0": "conv.0", "bn0": "conv.1", "conv1": "conv.3", "bn1": "conv.4"}
_ATTENTION = {
    "g_conv": "W_g.0",
    "g_bn": "W_g.1",
    "x_conv": "W_x.0",
    "x_bn": "W_x.1",
    "psi_conv": "psi.0",
    "psi_bn": "psi.1",
}
_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _is_up_conv(block: str) -> bool:
    return block.startswith("depth") or (block.startswith("Up") and not block.startswith("Up_"))


def official_key(collection: str, path: tuple[str, ...]) -> tuple[str, str]:
    """Flax variable path -> (official state-dict key, 'conv' or 'vector').

    e.g. ('params', ('img2normal_arm', 'Att3', 'psi_bn', 'scale')) ->
    'img2normal_arm.Att3.psi.1.weight'.
    """
    *mods, leaf = path
    name = _LEAF[(collection, leaf)]
    kind = "conv" if leaf == "kernel" else "vector"
    if len(mods) == 2:  # a plain conv directly under the network (final 1x1 heads)
        return ".".join([*mods, name]), kind
    net, block, sub = mods
    if sub in _CONV_BLOCK:
        inner = _CONV_BLOCK[sub]
    elif sub in _ATTENTION:
        inner = _ATTENTION[sub]
    elif _is_up_conv(block):
        inner = {"conv": "up.1", "bn": "up.2"}[sub]
    else:
        inner = {"conv": "conv.0", "bn": "conv.1"}[sub]
    return f"{net}.{block}.{inner}.{name}", kind


def _to_flax(x, kind: str):
    return x.transpose(2, 3, 1, 0) if kind == "conv" else x


def variable_shapes(width: int = 64) -> Variables:
    """{'params', 'batch_stats'} of `TwoK2K` (base ``width``) as ShapeDtypeStructs."""
    return jax.eval_shape(lambda: init_variables(jax.random.PRNGKey(0), width=width))


def width_of(variables: Variables) -> int:
    """The base width of `TwoK2K` variables (the first conv block's channels)."""
    return int(
        jax.tree_util.tree_leaves(variables["params"]["img2normal_down"]["Conv1"])[0].shape[-1]
    )


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Every official phase-2 key hdjax reads -> its PyTorch shape, in our tree order
    (the `num_batches_tracked` buffers, which no computation reads, are not listed)."""
    out = {}
    for collection, tree in variable_shapes().items():
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            key, kind = official_key(collection, tuple(k.key for k in key_path))
            shape = leaf.shape if kind != "conv" else tuple(np.array(leaf.shape)[[3, 2, 0, 1]])
            out[key] = tuple(int(s) for s in shape)
    return out


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Removes DataParallel/DDP's `module.` prefix (what the official demo does)."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def validate_state_dict(state_dict: Mapping[str, Any], path: str | None = None) -> None:
    """Checks keys and shapes of an (unprefixed) official phase-2 state dict, reading no data.

    Raises:
      HdjaxError naming the file and the first offending key: a checkpoint of another model
      (no 2K2K network at all, e.g. PIFuHD's `netG.*`), a phase-1 checkpoint (no `refine`),
      a missing tensor, a shape mismatch, or a tensor 2K2K has no place for.
    """
    expected = official_shapes()
    nets = {k.split(".", 1)[0] for k in state_dict}
    if not nets & set(NETWORKS):
        example = sorted(state_dict)[:1]
        raise HdjaxError(
            "not a 2K2K checkpoint: none of its tensors belongs to a 2K2K network"
            + (f" (first key {example[0]!r})" if example else " (empty state dict)"),
            path,
        )
    if not any(k.startswith("refine.") for k in state_dict):
        raise HdjaxError(
            "a 2K2K phase-1 checkpoint (no refine.* tensors): the phase-2 model needs them", path
        )
    for key, shape in expected.items():
        if key not in state_dict:
            raise HdjaxError(f"tensor {key} is missing from the 2K2K state dict", path)
        got = tuple(int(s) for s in np.shape(state_dict[key]))
        if got != shape:
            raise HdjaxError(f"tensor {key} has shape {got}, 2K2K expects {shape}", path)
    extra = sorted(
        k for k in state_dict if k not in expected and not k.endswith(".num_batches_tracked")
    )
    extra += sorted(
        k
        for k in state_dict
        if k.endswith(".num_batches_tracked")
        and k.replace(".num_batches_tracked", ".running_mean") not in expected
    )
    if extra:
        more = f" (and {len(extra) - 3} more)" if len(extra) > 3 else ""
        raise HdjaxError(
            f"unexpected tensors {', '.join(extra[:3])}{more}: not part of the 2K2K phase-2 model",
            path,
        )


def convert_state_dict(
    state_dict: Mapping[str, Any],
    path: str | None = None,
    to_device: Callable[[np.ndarray], Any] = jnp.asarray,
) -> Variables:
    """Official phase-2 state dict (`module.` prefix allowed) -> `TwoK2K` variables.

    Raises HdjaxError as `validate_state_dict` (everything is checked before any copy).
    """
    state_dict = strip_module_prefix(state_dict)
    validate_state_dict(state_dict, path)

    def convert(collection):
        def one(key_path, _):
            key, kind = official_key(collection, tuple(k.key for k in key_path))
            raw = state_dict[key]
            out = _to_flax(to_device(np.array(raw, dtype=np.float32)), kind)
            release_pages(raw)
            return out

        return one

    return {
        c: jax.tree_util.tree_map_with_path(convert(c), tree)
        for c, tree in variable_shapes().items()
    }


def open_official(path: str | os.PathLike) -> dict[str, Any]:
    """The (unprefixed, validated, memory-mapped) state dict of an official checkpoint:
    a `torch.save`d dict holding `model_state_dict` (optimiser state and the rest ignored),
    or a bare state dict."""
    path = os.fspath(path)
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, Mapping):
        raise HdjaxError("not a 2K2K checkpoint (top level is not a dict)", path)
    state_dict = ckpt.get("model_state_dict", ckpt)
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and hasattr(v, "shape") for k, v in state_dict.items()
    ):
        raise HdjaxError(
            "not a 2K2K checkpoint (no model_state_dict of tensors; top-level keys: "
            f"{', '.join(map(str, list(ckpt)[:5]))})",
            path,
        )
    state_dict = strip_module_prefix(state_dict)
    validate_state_dict(state_dict, path)
    return state_dict


def save_converted(directory: str | os.PathLike, variables: Variables) -> None:
    """Writes variables with orbax plus a small `format.json` marker (with the width)."""
    meta = json.dumps({"format": FORMAT, "width": width_of(variables)})
    save_tree_dir(directory, "variables", variables, {"format.json": meta})


def load_converted(directory: str | os.PathLike) -> Variables:
    """Inverse of `save_converted`."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    marker = os.path.join(directory, "format.json")
    try:
        with open(marker) as f:
            meta = json.load(f)
        fmt, width = meta.get("format"), int(meta.get("width", 64))
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise HdjaxError(f"not a converted hdjax 2K2K checkpoint ({e})", marker) from None
    if fmt != FORMAT:
        raise HdjaxError(f"not a converted hdjax 2K2K checkpoint (format {fmt!r})", marker)
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32), variable_shapes(width)
    )
    return ocp.StandardCheckpointer().restore(os.path.join(directory, "variables"), target)


def load(path: str | os.PathLike, width: int | None = None) -> Variables:
    """`TwoK2K` variables from an official checkpoint file, a `save_converted` directory or
    weights shipped with hdjax (``.npz``, `hdjax.models.shipped`; ``width``: the base width
    they must have, default the file's own)."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        from hdjax.models import shipped

        if width is None:
            width = int(shipped.read_meta(path).get("arch", {}).get("width", 64))
        return shipped.load(path, "twok2k", {"width": width}, variable_shapes(width))
    if os.path.isdir(path):
        return load_converted(path)
    return convert_state_dict(open_official(path), path)

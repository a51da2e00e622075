"""Weights trained here and shipped inside the package: one ``.npz`` per model in
``hdjax/models/weights/``, the default of ``--mode=reconstruct`` for the config that names it
(``config.weights``).

A file holds every parameter leaf under its ``/``-joined path, stored as float16 (half the
bytes; the networks run in float32) or float32, and a ``__meta__`` JSON entry: the model
name, the architecture it was trained with and the run that made it. Loading checks all of
it, so a missing, truncated or foreign file fails in one line naming the file and the
mismatch, before any network runs.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from hdjax.errors import HdjaxError
from hdjax.io.files import atomic_write

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
RANDOM = "random"  # --config.checkpoint=random: the seed's random init, asked for explicitly
_META = "__meta__"


def path_of(name: str) -> str:
    """The shipped file of ``config.weights`` = ``name``."""
    return os.path.join(WEIGHTS_DIR, f"{name}.npz")


def weights_path(source: str) -> str:
    """``source`` when it is a path (exists, or ends in .npz / .pt), else the shipped file of
    the name ``source`` (`path_of`)."""
    if os.path.exists(source) or source.endswith((".npz", ".pt")):
        return source
    return path_of(source)


def resolve_checkpoint(checkpoint: str, weights: str, model_name: str) -> str:
    """What a run loads: ``checkpoint`` if given (a path, or `RANDOM`), else the shipped file
    of ``weights``.

    Raises:
      HdjaxError: neither is set (no silent random weights).
    """
    if checkpoint:
        return checkpoint
    if weights:
        return path_of(weights)
    raise HdjaxError(
        f"no weights: this {model_name} config ships none; give --config.checkpoint=PATH "
        f"(a .pt, a converted directory, WORKDIR/best) or --config.checkpoint={RANDOM}"
    )


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save(
    path: str | os.PathLike,
    model_name: str,
    arch: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    dtype: str = "float16",
    about: Mapping[str, Any] | None = None,
) -> None:
    """Writes ``params`` (a nested dict of arrays) as a shipped weights file, atomically."""
    flat = {k: np.asarray(v, np.float32) for k, v in _flatten(params).items()}
    if dtype == "float16":
        big = {k: float(np.abs(v).max()) for k, v in flat.items() if v.size}
        over = [k for k, m in big.items() if m > np.finfo(np.float16).max]
        if over:
            raise HdjaxError(f"parameter {over[0]} overflows float16; save as float32", path)
    arrays = {k: v.astype(dtype) for k, v in flat.items()}
    meta = dict(model=model_name, arch=dict(arch), dtype=dtype, about=dict(about or {}))
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``__meta__`` of a weights file (model, arch, dtype, about)."""
    return _open(path)[0]


def _open(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HdjaxError("weights file is missing (reinstall hdjax, or give a checkpoint)", path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(bytes(arrays.pop(_META)).decode())
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        why = f"{type(e).__name__}: {e}".splitlines()[0]
        raise HdjaxError(
            f"cannot read weights file, truncated or not hdjax's ({why})", path
        ) from None
    return meta, arrays


def load(
    path: str | os.PathLike,
    model_name: str,
    arch: Mapping[str, Any],
    want: Any,
) -> dict[str, Any]:
    """The float32 params of a shipped file, checked against the model, the architecture
    and ``want`` (a pytree of arrays or ShapeDtypeStructs with the expected shapes).

    Raises:
      HdjaxError: one line naming the file and the first mismatch.
    """
    meta, arrays = _open(path)
    if meta.get("model") != model_name:
        raise HdjaxError(f"weights are {meta.get('model')!r}'s, the config is {model_name}", path)
    stored, asked = meta.get("arch", {}), json.loads(json.dumps(dict(arch)))
    if stored != asked:
        diff = _first_difference(stored, asked)
        raise HdjaxError(f"weights are for another architecture ({diff})", path)
    params = _unflatten({k: v.astype(np.float32) for k, v in arrays.items()})
    check_shapes(want, params, os.fspath(path))
    return params


def _first_difference(stored: Any, asked: Any, where: str = "arch") -> str:
    if isinstance(stored, dict) and isinstance(asked, dict):
        for k in sorted(set(stored) | set(asked)):
            if stored.get(k) != asked.get(k):
                return _first_difference(stored.get(k), asked.get(k), f"{where}.{k}")
    return f"{where}: file {stored!r}, config {asked!r}"


def check_shapes(want: Any, got: Any, where: str) -> None:
    """Raises `HdjaxError` naming the first parameter whose shape differs (or a different
    tree: another architecture)."""
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(got):
        raise HdjaxError("holds another architecture's parameters", where)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(want), jax.tree_util.tree_leaves(got), strict=True
    ):
        if tuple(a.shape) != tuple(np.shape(b)):
            raise HdjaxError(
                f"parameter {jax.tree_util.keystr(path)} has shape {tuple(np.shape(b))}, the "
                f"config's model expects {tuple(a.shape)}",
                where,
            )

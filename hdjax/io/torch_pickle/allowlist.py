"""The restricted unpickler: which globals a checkpoint may name, and what they become.

A checkpoint is a pickle, i.e. a program. `find_class` is the only way a pickle can reach a
callable, so it hands out local stubs for a short allow-list (tensor rebuild functions,
storage classes, torch dtypes, `OrderedDict`, `argparse.Namespace`, plain numpy scalars and
arrays, a few harmless builtins) and refuses every other name before it is imported or called.
torch is never imported. `resolve` then replaces the stubs by plain values.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle import tensors
from hdjax.io.torch_pickle.tensors import PendingTensor

# Numpy dtype kinds accepted inside pickled numpy scalars/arrays (no objects, no records).
_NUMPY_KINDS = frozenset("biuf")


class _Sealed(type):
    """Metaclass of the stub classes: a pickle's BUILD cannot rewrite them for later loads."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise pickle.UnpicklingError(f"refusing to modify {cls.__name__}.{name}")


class StorageType(NamedTuple):
    """Stands for a `torch.<X>Storage` class (a tuple, so a pickle cannot modify it)."""

    name: str
    dtype: np.dtype


class _NamespaceStub(metaclass=_Sealed):
    """Receives an `argparse.Namespace`'s attribute dict; `resolve` makes it a plain dict."""

    # NEWOBJ calls `__new__` only, and BUILD is skipped for an empty Namespace.
    fields: dict[str, Any] = {}  # noqa: RUF012  (read-only default, never mutated)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("argparse.Namespace state is not a dict")
        self.fields = dict(state)


class _NdarrayMarker(metaclass=_Sealed):
    """Stands for `numpy.ndarray` as the subtype argument of `_reconstruct` only."""


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> PendingTensor:
    # Serves `_rebuild_tensor` and `_rebuild_tensor_v2`; v2's extra arguments (requires_grad,
    # backward hooks, metadata) do not change the data.
    return tensors.pending_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, _grad: Any, _hooks: Any, dtype: Any, *_: Any
) -> PendingTensor:
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v3 got a non-dtype {dtype!r:.80}")
    return tensors.pending_tensor(storage, offset, size, stride, dtype)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    # `nn.Parameter` (with or without state) is its data.
    return data


def _checked_numpy_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS or dtype.fields:
        raise pickle.UnpicklingError(f"numpy dtype {dtype!r:.80} is not allowed")
    return dtype


def _numpy_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, str):
        raise pickle.UnpicklingError(f"numpy dtype spec {obj!r:.80} is not a string")
    return _checked_numpy_dtype(np.dtype(obj, bool(align), bool(copy)))


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _checked_numpy_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar payload has the wrong size")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NdarrayMarker:
        raise pickle.UnpicklingError("only plain numpy.ndarray can be reconstructed")
    # numpy's own pickle: an empty array whose __setstate__ (run by BUILD) fills data; the
    # state's dtype went through `_numpy_dtype`, so object arrays cannot appear.
    return np.ndarray.__new__(np.ndarray, tensors.int_tuple(shape, "shape"), np.dtype(np.uint8))


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles spell `bytes` as `_codecs.encode(str, 'latin1')`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 bytes")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("argparse", "Namespace"): _NamespaceStub,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy", "ndarray"): _NdarrayMarker,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "scalar")] = _numpy_scalar
        table[(mod, "_reconstruct")] = _numpy_reconstruct
    for name, dtype in tensors.STORAGE_DTYPES.items():
        table[("torch", name)] = StorageType(name, dtype)
    table[("torch.storage", "UntypedStorage")] = table[("torch", "UntypedStorage")]
    for name, dtype in tensors.TORCH_DTYPES.items():
        table[("torch", name)] = dtype
    return table


_ALLOWED = _allowed_globals()
# Python-2 era names that protocol < 3 pickles use for the same modules.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def lookup_global(module: str, name: str, path: str) -> Any:
    """The stub for an allowed global.

    Raises:
      HdjaxError: the global is not allowed: an unsupported torch type (complex or float8
        dtypes, quantized storages, ...) or anything else (refused as unsafe).
    """
    key = (_MODULE_ALIASES.get(module, module), name)
    if key in _ALLOWED:
        return _ALLOWED[key]
    if key[0] in ("torch", "torch.storage"):
        raise HdjaxError(
            f"unsupported tensor type '{module}.{name}' (only real float, integer and bool "
            "tensors are read)",
            path,
        )
    raise HdjaxError(
        f"refusing to load: the pickle references disallowed global '{module}.{name}' "
        "(only tensors, storages, containers and argparse.Namespace are allowed)",
        path,
    )


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from the allow-list; storages via `persistent`."""

    def __init__(
        self, file: BinaryIO, path: str, persistent: Callable[[Any], Any] | None = None
    ) -> None:
        super().__init__(file)
        self._path = path
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        return lookup_global(module, name, self._path)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        return self._persistent(pid)


def unpickle(
    file: BinaryIO | bytes,
    path: str,
    what: str,
    persistent: Callable[[Any], Any] | None = None,
) -> Any:
    """Loads one pickle; a stream is left just after its STOP opcode.

    Raises:
      HdjaxError: a refused global, or a truncated/corrupt pickle (`what` names it).
    """
    stream = io.BytesIO(file) if isinstance(file, bytes) else file
    try:
        return RestrictedUnpickler(stream, path, persistent).load()
    except HdjaxError:
        raise
    except RecursionError:
        raise HdjaxError(f"{what} is nested too deeply to load", path) from None
    except Exception as e:  # any failure here means a corrupt file, not a bug to trace
        raise HdjaxError(f"truncated or corrupt {what}: {type(e).__name__}: {e}", path) from None


def storage_record(pid: Any, legacy: bool, path: str) -> tuple[str, np.dtype, int]:
    """Validates a storage's persistent id; returns (key, dtype, numel).

    Raises:
      HdjaxError: a pre-1.0 storage view (legacy files from PyTorch < 1.0).
    """
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    if len(pid) != (6 if legacy else 5):
        raise pickle.UnpicklingError(f"malformed storage record {pid!r:.80}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, StorageType):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r:.80}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError(f"malformed storage record {pid!r:.80}")
    if legacy and pid[5] is not None:
        raise HdjaxError("unsupported storage view (a PyTorch < 1.0 legacy file)", path)
    return key, storage_type.dtype, numel


def resolve(obj: Any, path: str) -> Any:
    """Replaces the stubs in a loaded pickle: tensors → numpy views, Namespaces → dicts.

    Shared objects stay shared (a memo by id), so tied tensors keep sharing memory.
    """
    memo: dict[int, Any] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, str | bytes | int | float | type(None) | np.generic):
            return x
        if id(x) in memo:
            return memo[id(x)]
        if isinstance(x, PendingTensor):
            memo[id(x)] = tensors.tensor_array(x, path)
        elif isinstance(x, _NamespaceStub):
            out: dict[str, Any] = {}
            memo[id(x)] = out
            out.update((k, walk(v)) for k, v in x.fields.items())
        elif isinstance(x, dict):
            memo[id(x)] = x
            for k in list(x):
                x[k] = walk(x[k])
        elif isinstance(x, list):
            memo[id(x)] = x
            x[:] = [walk(v) for v in x]
        elif isinstance(x, tuple):
            items = tuple(walk(v) for v in x)
            memo[id(x)] = x if all(a is b for a, b in zip(items, x, strict=True)) else items
        else:
            memo[id(x)] = x
        return memo[id(x)]

    try:
        return walk(obj)
    except RecursionError:
        raise HdjaxError("checkpoint is nested too deeply to load", path) from None

"""Read PyTorch checkpoint files (`torch.save` output) without importing torch.

Both containers written by `torch.save` are supported, detected by content:

* zip (PyTorch >= 1.6 default): `<prefix>/data.pkl` holds the pickle, `<prefix>/data/<key>` the
  raw little-endian bytes of each storage; members are stored uncompressed, so each storage is
  memory-mapped at its data offset (behind the member's local file header).
* legacy (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row —
  magic number, protocol version, sys info, the object, the list of storage keys — followed
  by every storage as an int64 element count and its raw bytes.

Security: a checkpoint is a pickle, i.e. a program. Every pickle is first scanned opcode by
opcode and refused if it names any global outside a small allow-list (tensor rebuild
functions, legacy storage classes, `OrderedDict`, `argparse.Namespace`, torch dtypes, numpy
scalars/arrays, a few harmless builtins); nothing is constructed before that scan passes.
The unpickler then maps each allowed name to a local stub (torch is never imported), and its
`find_class` refuses everything else again as a second line of defence.

Result: plain Python containers; every tensor is a numpy array viewing a read-only memory map
of the file (no RAM is spent until the data is touched), `argparse.Namespace` becomes `dict`.
"""

from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import pickletools
import struct
import sys
import zipfile
from collections.abc import Callable, Iterable
from typing import Any

import ml_dtypes
import numpy as np

from hdjax.errors import HdjaxError

# torch.serialization's legacy magic number and protocol version (public file-format facts).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"

# Legacy typed storage classes (`torch.FloatStorage`, ...) → element dtype.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    # Untyped (byte) storage: torch >= 2 pairs it with an explicit dtype (_rebuild_tensor_v3).
    "UntypedStorage": np.dtype(np.uint8),
}

# `torch.<dtype>` globals, pickled by name for dtypes that have no legacy storage class.
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "float8_e8m0fnu": np.dtype(ml_dtypes.float8_e8m0fnu),
}

# Numpy dtype kinds accepted inside pickled numpy scalars/arrays (no objects, no records).
_NUMPY_KINDS = frozenset("biufc")


# ----------------------------------------------------------------------------------------
# Stubs the unpickler hands out instead of torch / numpy / argparse objects.


class _StorageType:
    """Stands for a `torch.<X>Storage` class; only its element dtype matters."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = dtype


class _StorageRef:
    """One storage referenced by the pickle; `array` is filled once its bytes are located.

    Attributes:
      key: the storage key (zip member name / legacy key).
      dtype: element dtype.
      numel: number of elements.
      array: `(numel,) dtype` view of the data, set by the container reader.
    """

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _PendingTensor:
    """A tensor whose storage may not be located yet (legacy files store data after the
    pickle); replaced by a numpy array in `_finalize`."""

    def __init__(
        self,
        storage: _StorageRef,
        offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: np.dtype | None = None,
    ):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.dtype = dtype  # set only for untyped storages (v3): reinterpret the bytes.


class _NamespaceStub:
    """Receives an `argparse.Namespace`'s attribute dict; becomes a plain dict."""

    # NEWOBJ calls __new__ only, so fields default at class level until BUILD sets them.
    fields: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self, **kwargs: Any):
        self.fields = dict(kwargs)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("argparse.Namespace state is not a dict")
        self.fields = {**self.fields, **state}


class _NdarrayMarker:
    """Stands for `numpy.ndarray` as the subtype argument of `_reconstruct` only."""


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of ints: {value!r}")
    return tuple(value)


def _make_pending(
    storage: Any, offset: Any, size: Any, stride: Any, dtype: np.dtype | None = None
) -> _PendingTensor:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if not isinstance(offset, int) or offset < 0:
        raise pickle.UnpicklingError(f"bad storage offset {offset!r}")
    size_t = _as_int_tuple(size, "size")
    stride_t = _as_int_tuple(stride, "stride")
    if len(size_t) != len(stride_t) or any(v < 0 for v in size_t + stride_t):
        raise pickle.UnpicklingError(f"bad tensor geometry size={size_t} stride={stride_t}")
    return _PendingTensor(storage, offset, size_t, stride_t, dtype)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _PendingTensor:
    return _make_pending(storage, offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _PendingTensor:
    return _make_pending(storage, offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> _PendingTensor:
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v3 got a non-dtype {dtype!r}")
    return _make_pending(storage, offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> Any:
    return data


def _checked_numpy_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS or dtype.fields:
        raise pickle.UnpicklingError(f"numpy dtype {dtype!r} is not allowed (plain numbers only)")
    return dtype


def _numpy_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, str):
        raise pickle.UnpicklingError(f"numpy dtype spec {obj!r} is not a string")
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
    return np.ndarray.__new__(np.ndarray, _as_int_tuple(shape, "shape"), np.dtype(np.uint8))


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles spell `bytes` as `_codecs.encode(str, 'latin1')`.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 bytes")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("argparse", "Namespace"): _NamespaceStub,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy", "ndarray"): _NdarrayMarker,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "scalar")] = _numpy_scalar
        table[(mod, "_reconstruct")] = _numpy_reconstruct
    for name, dtype in _STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(name, dtype)
    table[("torch.storage", "UntypedStorage")] = table[("torch", "UntypedStorage")]
    for name, dtype in _TORCH_DTYPES.items():
        table[("torch", name)] = dtype
    return table


_ALLOWED = _allowed_globals()
# Python-2 era names that protocol < 3 pickles use for the same modules.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _lookup_global(module: str, name: str, path: str) -> Any:
    key = (_MODULE_ALIASES.get(module, module), name)
    if key not in _ALLOWED and key[0] in ("torch", "torch.storage") and name.endswith("Storage"):
        raise HdjaxError(f"unsupported storage type '{module}.{name}'", path)
    if key not in _ALLOWED:
        raise HdjaxError(
            f"refusing to load: the pickle references disallowed global '{module}.{name}' "
            "(only tensors, storages, containers and argparse.Namespace are allowed)",
            path,
        )
    return _ALLOWED[key]


# ----------------------------------------------------------------------------------------
# Opcode pre-scan: refuse a pickle before anything in it is constructed.

_UNKNOWN = object()
_STRING_OPS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
    }
)
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# Opcodes that leave the stack alone (so they do not break a string push → STACK_GLOBAL pair).
_NEUTRAL_OPS = frozenset({"PROTO", "FRAME"})
# Extension registry and out-of-band buffers are never used by torch.save.
_FORBIDDEN_OPS = frozenset({"EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"})


def _prescan(stream: io.IOBase, path: str, what: str) -> int:
    """Checks every global a pickle names, without executing it.

    Args:
      stream: binary stream positioned at the pickle's first byte.
      path: file name, for errors.
      what: which pickle ("data.pkl", "main pickle"), for errors.

    Returns:
      The stream position just after the pickle's STOP opcode.

    Raises:
      HdjaxError: a disallowed global or opcode, an unresolvable STACK_GLOBAL, or a
        truncated/corrupt pickle.
    """
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values of the last stack pushes, strings known exactly
    try:
        for op, arg, _ in pickletools.genops(stream):
            name = op.name
            if name in _FORBIDDEN_OPS:
                raise HdjaxError(f"refusing to load: {what} uses pickle opcode {name}", path)
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _lookup_global(module, attr, path)
                recent.append(_UNKNOWN)
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                    raise HdjaxError(
                        f"refusing to load: {what} builds a global name dynamically "
                        "(STACK_GLOBAL without literal strings)",
                        path,
                    )
                _lookup_global(recent[-2], recent[-1], path)
                recent.append(_UNKNOWN)
            elif name in _STRING_OPS:
                recent.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
            elif name in _GET_OPS:
                recent.append(memo.get(arg, _UNKNOWN))
            elif name in _PUT_OPS:
                memo[arg] = recent[-1] if recent else _UNKNOWN
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else _UNKNOWN
            elif name not in _NEUTRAL_OPS:
                recent.append(_UNKNOWN)
            del recent[:-2]
    except (ValueError, EOFError, struct.error) as e:
        raise HdjaxError(f"truncated or corrupt {what} ({e})", path) from None
    return stream.tell()


# ----------------------------------------------------------------------------------------
# Unpickling.


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose globals come only from the allow-list, as local stubs."""

    def __init__(self, data: bytes, path: str, persistent: Callable[[Any], Any] | None = None):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        return _lookup_global(module, name, self._path)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        return self._persistent(pid)


def _safe_unpickle(
    data: bytes, path: str, what: str, persistent: Callable[[Any], Any] | None = None
) -> Any:
    _prescan(io.BytesIO(data), path, what)
    return _unpickle_scanned(data, path, what, persistent)


def _unpickle_scanned(
    data: bytes, path: str, what: str, persistent: Callable[[Any], Any] | None
) -> Any:
    """Unpickles `data`, which `_prescan` has already accepted."""
    try:
        return _RestrictedUnpickler(data, path, persistent).load()
    except HdjaxError:
        raise
    except RecursionError:
        raise HdjaxError(f"{what} is nested too deeply to load", path) from None
    except Exception as e:  # any failure here means a corrupt file, not a bug to trace
        raise HdjaxError(f"corrupt {what}: {type(e).__name__}: {e}", path) from None


def _next_pickle(
    stream: io.IOBase, path: str, what: str, persistent: Callable[[Any], Any] | None = None
) -> Any:
    """Loads the pickle at the stream's position and leaves the stream just after it."""
    start = stream.tell()
    end = _prescan(stream, path, what)
    stream.seek(start)
    data = stream.read(end - start)
    return _unpickle_scanned(data, path, what, persistent)


def _storage_record(pid: Any, legacy: bool) -> tuple[str, np.dtype, int, Any]:
    """Validates a persistent id; returns (key, dtype, numel, legacy view metadata)."""
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    if len(pid) not in ((6,) if legacy else (5,)):
        raise pickle.UnpicklingError(f"malformed storage record {pid!r:.80}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r:.80}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError(f"malformed storage record {pid!r:.80}")
    return key, storage_type.dtype, numel, pid[5] if legacy else None


# ----------------------------------------------------------------------------------------
# Byte sources: memory map of the whole file, or plain reads.


class _Bytes:
    """Hands out `(nbytes,) uint8` arrays of file ranges, mapped or read."""

    def __init__(self, path: str, use_mmap: bool):
        self.path = path
        self.size = os.path.getsize(path)
        self._use_mmap = use_mmap
        self._map: np.ndarray | None = None

    def _check(self, offset: int, nbytes: int, label: str) -> None:
        if offset + nbytes > self.size:
            raise HdjaxError(
                f"truncated: {label} needs {nbytes} bytes at offset {offset}, file has {self.size}",
                self.path,
            )

    def read(self, offset: int, nbytes: int, label: str) -> bytes:
        if self._use_mmap:
            return self.get(offset, nbytes, label).tobytes()
        self._check(offset, nbytes, label)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(nbytes)

    def get(self, offset: int, nbytes: int, label: str) -> np.ndarray:
        self._check(offset, nbytes, label)
        if nbytes == 0:
            return np.zeros((0,), np.uint8)
        if not self._use_mmap:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return np.frombuffer(f.read(nbytes), np.uint8)
        if self._map is None:
            # A plain ndarray over an mmap object (np.memmap's Python-level slicing costs
            # ~10 us per tensor); the mmap stays alive as the arrays' base.
            with open(self.path, "rb") as f:
                self._map = np.frombuffer(
                    mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8
                )
        return self._map[offset : offset + nbytes]


def _is_builtin(dtype: np.dtype) -> bool:
    """False for ml_dtypes types (bfloat16, float8), which lack byte orders and array-interface
    type strings."""
    return dtype.type.__module__ == "numpy"


def _typed(raw: np.ndarray, dtype: np.dtype, big_endian: bool) -> np.ndarray:
    """Reinterprets `(nbytes,) uint8` as `(nbytes // itemsize,) dtype`, without a copy unless
    the file is big-endian and the dtype comes from ml_dtypes (which has no byte orders)."""
    usable = raw[: raw.size - raw.size % dtype.itemsize]
    if not big_endian or dtype.itemsize == 1:
        return usable.view(dtype)
    if _is_builtin(dtype):
        return usable.view(dtype.newbyteorder(">"))
    swapped = usable.reshape(-1, dtype.itemsize)[:, ::-1].copy().view(dtype).reshape(-1)
    swapped.flags.writeable = False  # like every other array this module returns
    return swapped


# ----------------------------------------------------------------------------------------
# Containers.


def _load_zip(path: str, src: _Bytes) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise HdjaxError(
            f"truncated or corrupt zip container ({e}); file has {src.size} bytes", path
        ) from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise HdjaxError(
                "zip file has no '<archive>/data.pkl': not a torch.save checkpoint "
                "(TorchScript archives are not supported)",
                path,
            )
        prefix = pkl[0][: -len("data.pkl")]
        try:
            data = zf.read(pkl[0])
            big_endian = (
                f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder").strip() == b"big"
            )
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise HdjaxError(f"cannot read {pkl[0]} ({e})", path) from None

        storages: dict[str, _StorageRef] = {}

        def persistent(pid: Any) -> _StorageRef:
            key, dtype, numel, _ = _storage_record(pid, legacy=False)
            if key not in storages:
                ref = _StorageRef(key, dtype, numel)
                ref.array = _zip_member_array(zf, src, f"{prefix}data/{key}", ref, big_endian)
                storages[key] = ref
            return storages[key]

        obj = _safe_unpickle(data, path, pkl[0], persistent)
    return _finalize(obj, path)


def _zip_member_array(
    zf: zipfile.ZipFile, src: _Bytes, member: str, ref: _StorageRef, big_endian: bool
) -> np.ndarray:
    label = f"storage {ref.key}"
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise HdjaxError(f"missing zip member '{member}' ({label})", src.path) from None
    nbytes = ref.numel * ref.dtype.itemsize
    if info.file_size < nbytes:
        raise HdjaxError(
            f"truncated: {label} needs {nbytes} bytes, zip member '{member}' has {info.file_size}",
            src.path,
        )
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        try:
            raw = np.frombuffer(zf.read(member)[:nbytes], np.uint8)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
            raise HdjaxError(f"cannot read zip member '{member}' ({e})", src.path) from None
    else:
        # Data starts after the local file header (30 bytes + name + extra field); its extra
        # field can differ from the central directory's, so read the local one.
        header = src.read(info.header_offset, 30, f"local header of '{member}'")
        if header[:4] != _ZIP_MAGIC:
            raise HdjaxError(f"corrupt local header for zip member '{member}'", src.path)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        raw = src.get(start, nbytes, label)
    return _typed(raw, ref.dtype, big_endian)


def _load_legacy(path: str, src: _Bytes) -> Any:
    with open(path, "rb") as f:
        try:
            magic = _next_pickle(f, path, "magic number")
        except HdjaxError as e:
            if "refusing" in e.problem:
                raise
            raise HdjaxError(f"not a PyTorch checkpoint ({e.problem})", path) from None
        if magic != _LEGACY_MAGIC:
            raise HdjaxError("not a PyTorch checkpoint (bad legacy magic number)", path)
        protocol = _next_pickle(f, path, "protocol version")
        sys_info = _next_pickle(f, path, "sys info")
        if protocol != _LEGACY_PROTOCOL:
            raise HdjaxError(f"unsupported legacy protocol version {protocol!r}", path)
        big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False

        refs: dict[str, _StorageRef] = {}
        views: list[tuple[str, str, int, int]] = []

        def persistent(pid: Any) -> _StorageRef:
            key, dtype, numel, view = _storage_record(pid, legacy=True)
            if key not in refs:
                refs[key] = _StorageRef(key, dtype, numel)
            if view is None:
                return refs[key]
            # Pre-1.0 files: a storage that is a slice (view_key, offset, size) of `key`.
            view_key, view_offset, view_size = view
            if view_key not in refs:
                refs[view_key] = _StorageRef(view_key, dtype, view_size)
                views.append((view_key, key, view_offset, view_size))
            return refs[view_key]

        obj = _next_pickle(f, path, "main pickle", persistent)
        keys = _next_pickle(f, path, "storage key list")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise HdjaxError("corrupt storage key list", path)
        offset = f.tell()

    int64 = ">q" if big_endian else "<q"
    for key in keys:
        ref = refs.get(key)
        if ref is None:
            raise HdjaxError(f"storage {key} is listed but never used by the pickle", path)
        count = src.read(offset, 8, f"size header of storage {key}")
        (numel,) = struct.unpack(int64, count)
        if numel != ref.numel:
            raise HdjaxError(
                f"corrupt: storage {key} has {numel} elements on disk, pickle says {ref.numel}",
                path,
            )
        nbytes = numel * ref.dtype.itemsize
        ref.array = _typed(src.get(offset + 8, nbytes, f"storage {key}"), ref.dtype, big_endian)
        offset += 8 + nbytes
    for view_key, root_key, view_offset, view_size in views:
        root = refs[root_key].array
        if root is None or view_offset + view_size > root.size:
            raise HdjaxError(f"corrupt: storage view {view_key} lies outside {root_key}", path)
        refs[view_key].array = root[view_offset : view_offset + view_size]
    missing = [k for k, r in refs.items() if r.array is None]
    if missing:
        raise HdjaxError(f"storage {missing[0]} is used but missing from the file", path)
    return _finalize(obj, path)


# ----------------------------------------------------------------------------------------
# Final pass: pending tensors → numpy views, Namespace stubs → dicts.


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _tensor_array(t: _PendingTensor, path: str) -> np.ndarray:
    base = t.storage.array
    assert base is not None  # every container reader fills all storages first
    if t.dtype is not None and t.dtype != base.dtype:
        base = base[: base.size - base.size % t.dtype.itemsize].view(t.dtype)
    if any(s == 0 for s in t.size):
        empty = np.zeros(t.size, dtype=base.dtype)
        empty.flags.writeable = False
        return empty
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if last >= base.size:
        raise HdjaxError(
            f"corrupt: tensor of size {t.size} (stride {t.stride}, offset {t.offset}) "
            f"reads past storage {t.storage.key} of {base.size} elements",
            path,
        )
    dtype = base.dtype
    if t.stride == _contiguous_strides(t.size):
        n = last + 1 - t.offset
        return base[t.offset : t.offset + n].reshape(t.size)
    if not _is_builtin(dtype):
        # ml_dtypes types do not survive as_strided's __array_interface__ round trip:
        # stride an unsigned int of the same width, then reinterpret.
        base = base.view(f"u{dtype.itemsize}")
    out = np.lib.stride_tricks.as_strided(
        base[t.offset :],
        shape=t.size,
        strides=tuple(s * dtype.itemsize for s in t.stride),
        writeable=False,
    )
    return out.view(dtype)


def _finalize(obj: Any, path: str) -> Any:
    memo: dict[int, Any] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, str | bytes | int | float | bool | type(None) | np.generic):
            return x
        key = id(x)
        if key in memo:
            return memo[key]
        if isinstance(x, _PendingTensor):
            memo[key] = _tensor_array(x, path)
        elif isinstance(x, _NamespaceStub):
            out: dict[str, Any] = {}
            memo[key] = out
            out.update((k, walk(v)) for k, v in x.fields.items())
        elif isinstance(x, dict):
            memo[key] = x
            for k in list(x):
                x[k] = walk(x[k])
        elif isinstance(x, list):
            memo[key] = x
            x[:] = [walk(v) for v in x]
        elif isinstance(x, tuple):
            items = tuple(walk(v) for v in x)
            memo[key] = x if all(a is b for a, b in zip(items, x, strict=True)) else items
        else:
            memo[key] = x
        return memo[key]

    try:
        return walk(obj)
    except RecursionError:
        raise HdjaxError("checkpoint is nested too deeply to load", path) from None


# ----------------------------------------------------------------------------------------
# Public API.


def load_torch_file(path: str | os.PathLike, *, use_mmap: bool = True) -> Any:
    """Loads a `torch.save` file (zip or legacy container) without torch.

    Args:
      path: the checkpoint (`.pt`, `.pth`, `.pth.tar`, ... — the extension is ignored).
      use_mmap: map storages from the file lazily (default); False reads them into memory.

    Returns:
      The saved object with plain containers (dict/OrderedDict/list/tuple, Python scalars,
      str). Each tensor (or `nn.Parameter`) is a read-only numpy array with the tensor's
      shape, dtype (bfloat16/float8 via `ml_dtypes`) and strides, viewing its storage, so
      tensors sharing a storage share memory. `argparse.Namespace` objects become dicts.

    Raises:
      HdjaxError: not a PyTorch file, truncated/corrupt file, missing zip member, unknown
        storage type, or a pickle naming any global outside the allow-list (refused before
        anything in it is constructed).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise HdjaxError("no such file", path) from None
    except IsADirectoryError:
        raise HdjaxError("is a directory, expected a checkpoint file", path) from None
    except OSError as e:
        raise HdjaxError(f"cannot read ({e.strerror})", path) from None
    src = _Bytes(path, use_mmap and hasattr(mmap, "mmap"))
    if head == _ZIP_MAGIC:
        return _load_zip(path, src)
    if head[:1] == b"\x80":  # pickle PROTO opcode: the legacy container starts with one
        return _load_legacy(path, src)
    if src.size >= 262 and _read_at(path, 257, 5) == b"ustar":
        raise HdjaxError("tar-format checkpoint (PyTorch < 0.4) is not supported", path)
    if src.size == 0:
        raise HdjaxError("not a PyTorch checkpoint (empty file)", path)
    raise HdjaxError("not a PyTorch checkpoint (neither a zip nor a legacy torch.save file)", path)


def _read_at(path: str, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def release_pages(array: np.ndarray) -> None:
    """Drops the resident pages of the file mapping behind `array` (no-op if not mapped).

    Mapped pages a caller has read count in its RSS until the kernel needs them back; a
    converter that copies tensors out one by one calls this so the file never sits in memory
    beside its converted copy. The data stays readable (pages fault in again from the cache).
    """
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        # ndarray views chain through `.base`; np.frombuffer's base is a memoryview (`.obj`).
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


def flatten_state_dict(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, np.ndarray]:
    """Flattens nested dicts/lists/tuples to `{"a.b.0.c": array}`, keeping only array leaves.

    Args:
      tree: the output of `load_torch_file` (or any part of it).
      prefix: key of `tree` itself; joined to the nested keys with `sep` when non-empty.
      sep: joins nested keys.

    Returns:
      Insertion-ordered dict from dotted key to numpy array.
    """
    out: dict[str, np.ndarray] = {}
    for key, leaf in _leaves(tree, prefix, sep):
        if isinstance(leaf, np.ndarray):
            out[key] = leaf
    return out


def _leaves(tree: Any, prefix: str, sep: str) -> Iterable[tuple[str, Any]]:
    if isinstance(tree, dict):
        items: Iterable[tuple[Any, Any]] = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        yield prefix, tree
        return
    for k, v in items:
        yield from _leaves(v, f"{prefix}{sep}{k}" if prefix else str(k), sep)


def describe(path: str | os.PathLike, max_value_chars: int = 80) -> str:
    """Human-readable listing of a checkpoint: one line per leaf.

    Arrays print as `key  shape  dtype`; other leaves (Namespace fields, epochs, losses)
    print as `key = value` with the value's repr cut to `max_value_chars`.
    """
    tree = load_torch_file(path)
    lines = []
    n_arrays = n_values = 0
    for key, leaf in _leaves(tree, "", "."):
        if isinstance(leaf, np.ndarray):
            n_arrays += 1
            lines.append(f"{key}  {tuple(leaf.shape)}  {leaf.dtype}")
        else:
            n_values += 1
            text = repr(leaf)
            if len(text) > max_value_chars:
                text = text[: max_value_chars - 3] + "..."
            lines.append(f"{key} = {text}")
    lines.append(f"# {n_arrays} arrays, {n_values} other values")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m hdjax.checkpoint.torch_reader FILE...`: prints `describe` for each file."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m hdjax.checkpoint.torch_reader CHECKPOINT [CHECKPOINT...]")
        return 2
    for path in args:
        try:
            print(describe(path))
        except HdjaxError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tensor dtypes and the strided rebuild of a tensor from its storage."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import ml_dtypes
import numpy as np

from hdjax.errors import HdjaxError

# Legacy typed storage classes (`torch.FloatStorage`, ...) → element dtype. torch >= 2 still
# pickles these names for every dtype that has one, in both containers.
STORAGE_DTYPES: dict[str, np.dtype] = {
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
    # Bytes only: torch >= 2 pairs it with a `torch.<dtype>` global (`_rebuild_tensor_v3`).
    "UntypedStorage": np.dtype(np.uint8),
}

# `torch.<dtype>` globals that `_rebuild_tensor_v3` names (dtypes without a storage class).
TORCH_DTYPES: dict[str, np.dtype] = {
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
}


@dataclasses.dataclass(eq=False)
class StorageRef:
    """One storage the pickle refers to; a container reader fills `array`.

    Attributes:
      key: the storage key (zip member name / legacy key).
      dtype: element dtype.
      numel: number of elements.
      array: `(numel,) dtype` read-only view of the data.
    """

    key: str
    dtype: np.dtype
    numel: int
    array: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class PendingTensor:
    """A tensor whose storage may not be located yet (legacy files store data after the
    pickle). `dtype` is set only for untyped storages, whose bytes it reinterprets."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: np.dtype | None = None


def int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of ints: {value!r:.80}")
    return tuple(value)


def pending_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, dtype: np.dtype | None = None
) -> PendingTensor:
    """Validates the arguments of a pickled tensor rebuild call."""
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if not isinstance(offset, int) or offset < 0:
        raise pickle.UnpicklingError(f"bad storage offset {offset!r:.80}")
    size_t, stride_t = int_tuple(size, "size"), int_tuple(stride, "stride")
    if len(size_t) != len(stride_t) or any(v < 0 for v in size_t + stride_t):
        raise pickle.UnpicklingError(f"bad tensor geometry size={size_t} stride={stride_t}")
    return PendingTensor(storage, offset, size_t, stride_t, dtype)


def storage_array(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`(nbytes,) uint8` → `(nbytes // itemsize,) dtype`, a view (files are little-endian)."""
    return raw[: raw.size - raw.size % dtype.itemsize].view(dtype)


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def tensor_array(t: PendingTensor, path: str) -> np.ndarray:
    """The tensor as a read-only numpy view of its storage, with torch's strides.

    Raises:
      HdjaxError: the tensor reaches past the end of its storage.
    """
    base = t.storage.array
    assert base is not None  # every container reader fills all storages first
    if t.dtype is not None and t.dtype != base.dtype:
        base = storage_array(base, t.dtype)
    if 0 in t.size:
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
        return base[t.offset : last + 1].reshape(t.size)
    if dtype.type.__module__ != "numpy":
        # ml_dtypes' bfloat16 does not survive as_strided's __array_interface__ round trip:
        # stride an unsigned int of the same width, then reinterpret.
        base = base.view(f"u{dtype.itemsize}")
    out = np.lib.stride_tricks.as_strided(
        base[t.offset :],
        shape=t.size,
        strides=tuple(s * dtype.itemsize for s in t.stride),
        writeable=False,
    )
    return out.view(dtype)

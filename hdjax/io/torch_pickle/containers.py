"""The two containers `torch.save` writes, read through one read-only memory map.

* zip (PyTorch >= 1.6 default): `<prefix>/data.pkl` holds the pickle, `<prefix>/data/<key>` the
  raw little-endian bytes of each storage. Members are stored uncompressed, so each storage is
  a view of the map at its data offset (behind the member's local file header).
* legacy (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row —
  magic number, protocol version, sys info, the object, the list of storage keys — followed
  by every storage as an int64 element count and its raw bytes.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle.allowlist import resolve, storage_record, unpickle
from hdjax.io.torch_pickle.tensors import StorageRef, storage_array

# torch.serialization's legacy magic number and protocol version (public file-format facts).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
ZIP_MAGIC = b"PK\x03\x04"
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError)


class MappedFile:
    """Hands out read-only `(nbytes,) uint8` views of file ranges, from one memory map.

    No RAM is spent until a view is read; the map stays alive as the views' base.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = os.path.getsize(path)
        self._map: np.ndarray | None = None

    def get(self, offset: int, nbytes: int, label: str) -> np.ndarray:
        if offset + nbytes > self.size:
            raise HdjaxError(
                f"truncated: {label} needs {nbytes} bytes at offset {offset}, file has {self.size}",
                self.path,
            )
        if nbytes == 0:
            return np.zeros((0,), np.uint8)
        if self._map is None:
            # A plain ndarray over an mmap object: np.memmap's Python-level slicing costs
            # ~10 us per tensor.
            with open(self.path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._map = np.frombuffer(mapped, np.uint8)
        return self._map[offset : offset + nbytes]


def release_pages(array: np.ndarray) -> None:
    """Drops the resident pages of the file mapping behind `array` (no-op if not mapped).

    Mapped pages a caller has read count in its RSS until the kernel needs them back; a
    converter that copies tensors out one by one calls this so the file never sits in memory
    beside its converted copy. The data stays readable (pages fault in again from the cache).
    """
    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        # ndarray views chain through `.base`; np.frombuffer's base is a memoryview (`.obj`).
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


def load_zip(src: MappedFile) -> Any:
    """Reads a zip container (see the module docstring)."""
    path = src.path
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise HdjaxError(f"truncated or corrupt zip container ({e})", path) from None
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
            order = zf.read(f"{prefix}byteorder") if f"{prefix}byteorder" in names else b"little"
        except _ZIP_ERRORS as e:
            raise HdjaxError(f"cannot read {pkl[0]} ({e})", path) from None
        if order.strip() != b"little":
            raise HdjaxError("unsupported big-endian checkpoint (byteorder is not 'little')", path)
        storages: dict[str, StorageRef] = {}

        def persistent(pid: Any) -> StorageRef:
            key, dtype, numel = storage_record(pid, legacy=False, path=path)
            if key not in storages:
                ref = StorageRef(key, dtype, numel)
                ref.array = _zip_member_array(zf, src, f"{prefix}data/{key}", ref)
                storages[key] = ref
            return storages[key]

        obj = unpickle(data, path, pkl[0], persistent)
    return resolve(obj, path)


def _zip_member_array(
    zf: zipfile.ZipFile, src: MappedFile, member: str, ref: StorageRef
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
        # A re-packed archive: no offset to map, so read (and decompress) the member.
        try:
            return storage_array(np.frombuffer(zf.read(member)[:nbytes], np.uint8), ref.dtype)
        except _ZIP_ERRORS as e:
            raise HdjaxError(f"cannot read zip member '{member}' ({e})", src.path) from None
    # Data starts after the local file header (30 bytes + name + extra field); its extra
    # field can differ from the central directory's, so read the local one.
    header = src.get(info.header_offset, 30, f"local header of '{member}'").tobytes()
    if header[:4] != ZIP_MAGIC:
        raise HdjaxError(f"corrupt local header for zip member '{member}'", src.path)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    return storage_array(src.get(start, nbytes, label), ref.dtype)


def load_legacy(src: MappedFile) -> Any:
    """Reads a legacy container (see the module docstring)."""
    with open(src.path, "rb") as f:
        _check_legacy_header(f, src.path)
        refs: dict[str, StorageRef] = {}

        def persistent(pid: Any) -> StorageRef:
            key, dtype, numel = storage_record(pid, legacy=True, path=src.path)
            return refs.setdefault(key, StorageRef(key, dtype, numel))

        obj = unpickle(f, src.path, "main pickle", persistent)
        keys = unpickle(f, src.path, "storage key list")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise HdjaxError("corrupt storage key list", src.path)
        offset = f.tell()  # the unpickler stops right after each pickle's STOP opcode
    for key in keys:
        if key not in refs:
            raise HdjaxError(f"storage {key} is listed but never used by the pickle", src.path)
        offset = _map_legacy_storage(src, refs[key], offset)
    missing = [k for k, r in refs.items() if r.array is None]
    if missing:
        raise HdjaxError(f"storage {missing[0]} is used but missing from the file", src.path)
    return resolve(obj, src.path)


def _check_legacy_header(f: BinaryIO, path: str) -> None:
    """Reads the magic number, protocol version and sys info pickles."""
    try:
        magic = unpickle(f, path, "magic number")
    except HdjaxError as e:
        if "refusing" in e.problem:
            raise
        raise HdjaxError(f"not a PyTorch checkpoint ({e.problem})", path) from None
    if magic != _LEGACY_MAGIC:
        raise HdjaxError("not a PyTorch checkpoint (bad legacy magic number)", path)
    protocol = unpickle(f, path, "protocol version")
    sys_info = unpickle(f, path, "sys info")
    if protocol != _LEGACY_PROTOCOL:
        raise HdjaxError(f"unsupported legacy protocol version {protocol!r:.40}", path)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise HdjaxError("unsupported big-endian checkpoint (little_endian=False)", path)


def _map_legacy_storage(src: MappedFile, ref: StorageRef, offset: int) -> int:
    """Maps the storage whose int64 element count sits at `offset`; returns where it ends."""
    (numel,) = struct.unpack("<q", src.get(offset, 8, f"size header of storage {ref.key}"))
    if numel != ref.numel:
        raise HdjaxError(
            f"corrupt: storage {ref.key} has {numel} elements on disk, pickle says {ref.numel}",
            src.path,
        )
    nbytes = numel * ref.dtype.itemsize
    ref.array = storage_array(src.get(offset + 8, nbytes, f"storage {ref.key}"), ref.dtype)
    return offset + 8 + nbytes

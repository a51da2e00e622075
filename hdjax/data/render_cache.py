"""Render cache: finished records on disk, so an interrupted dataset build resumes.

TFDS rewrites a split from scratch after an interruption, so the expensive part, rendering,
is cached per record: each finished record is one ``<key>.<tag>.npz`` file. The tag is
given by the caller (`hdjax.data.records.cache_tag` hashes the render config, the seed and
the code that makes records), so stale records are never reused. A rerun reads the
finished records back instead of rendering them; a corrupt file is re-rendered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from typing import Any

import numpy as np

from hdjax.io.files import atomic_write

# Bump when the cache file layout changes: old files then miss.
CACHE_FORMAT = 3


def cache_tag(payload: dict[str, Any]) -> str:
    """16 hex digits of a JSON-able payload and the cache format."""
    text = json.dumps({"payload": payload, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_META = "__meta__"


def encode_record(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Record -> plain numeric arrays for `np.savez` (no object arrays: nothing is pickled).

    Bytes and strings become 1-D uint8 arrays, numpy scalars 0-d arrays; their kinds go to a
    JSON ``__meta__`` entry so `decode_record` restores the exact Python/numpy types.
    """
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for k, v in record.items():
        if isinstance(v, bytes):
            arrays[k], kinds[k] = np.frombuffer(v, np.uint8), "bytes"
        elif isinstance(v, str):
            arrays[k], kinds[k] = np.frombuffer(v.encode("utf-8"), np.uint8), "str"
        elif isinstance(v, np.generic):
            arrays[k], kinds[k] = np.asarray(v), "scalar"
        elif isinstance(v, np.ndarray) and v.dtype != object:
            arrays[k], kinds[k] = v, "array"
        else:
            raise TypeError(f"record value {k!r} of type {type(v).__name__} cannot be cached")
    meta = json.dumps({"format": CACHE_FORMAT, "kinds": kinds}).encode()
    arrays[_META] = np.frombuffer(meta, np.uint8)
    return arrays


def decode_record(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of `encode_record`; raises ValueError/KeyError on anything inconsistent."""
    meta = json.loads(arrays[_META].tobytes())
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format')} != {CACHE_FORMAT}")
    kinds: dict[str, str] = meta["kinds"]
    if set(kinds) != set(arrays) - {_META}:
        raise ValueError("entries do not match the stored list")
    record: dict[str, Any] = {}
    for k, kind in kinds.items():
        a = arrays[k]
        if kind == "bytes":
            record[k] = a.tobytes()
        elif kind == "str":
            record[k] = a.tobytes().decode("utf-8")
        elif kind == "scalar":
            record[k] = a[()]
        elif kind == "array":
            record[k] = a
        else:
            raise ValueError(f"unknown kind {kind!r} of {k!r}")
    return record


class RecordCache:
    """Finished records of one tag (`cache_tag`): files ``<directory>/<key>.<tag>.npz``.

    A file is written under a temporary name and moved into place with `os.replace` (atomic),
    so an interrupted build never leaves a half-written file under a final name; a file that
    is unreadable anyway (disk trouble, a hand edit) is ignored with a warning and re-rendered.
    Deleting the directory is always safe: it only costs re-rendering.
    """

    def __init__(self, directory: str, tag: str):
        self.directory = directory
        self.tag = tag
        os.makedirs(directory, exist_ok=True)

    def path(self, key: str) -> str:
        """The file of record ``key``."""
        return os.path.join(self.directory, f"{key}.{self.tag}.npz")

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached record ``key``, or None when absent or unreadable (warned)."""
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return decode_record({k: npz[k] for k in npz.files})
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            # np.load / zipfile raise all of these for truncated or garbled files.
            logging.warning(
                "render cache: ignoring unreadable %s (%s: %s); re-rendering",
                path,
                type(e).__name__,
                e,
            )
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write record ``key`` atomically (temporary file in the same folder + os.replace)."""
        arrays = encode_record(record)
        atomic_write(self.path(key), lambda f: np.savez(f, **arrays))


def builder_cache_dir(data_dir_root: Any, name: str, config_name: str, version: Any) -> str | None:
    """Default render cache of a TFDS build: ``<root>/<name>/<config>/render_cache/<version>``.

    Next to (not inside) the versioned output folder, which TFDS deletes when a build fails.
    None for a non-local root (``gs://...``): the cache uses local file operations.
    """
    root = os.fspath(data_dir_root)
    if "://" in root:
        logging.warning("render cache disabled: %s is not a local folder", root)
        return None
    return os.path.join(root, name, config_name, "render_cache", str(version))


def remove_cache_dir(directory: str) -> None:
    """Delete a `builder_cache_dir` folder, and its ``render_cache`` parent once empty."""
    shutil.rmtree(directory, ignore_errors=True)
    parent = os.path.dirname(directory)
    if os.path.basename(parent) == "render_cache" and os.path.isdir(parent):
        if not os.listdir(parent):
            os.rmdir(parent)

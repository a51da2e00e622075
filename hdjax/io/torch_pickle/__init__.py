"""Read PyTorch checkpoint files (`torch.save` output) safely and without importing torch.

`load_torch_file` detects the container by content (zip or legacy, `containers`), unpickles
with an allow-list of globals (`allowlist`) and rebuilds each tensor as a numpy view of a
read-only memory map of the file (`tensors`). It reads what PIFuHD, 2K2K and torchvision
checkpoints hold: little-endian real float, integer and bool tensors, `nn.Parameter`,
optimiser states, Python values and `argparse.Namespace`. Anything else (complex or float8
tensors, big-endian files, PyTorch < 1.0 storage views, TorchScript, tar files, pickled
modules) is one `HdjaxError` naming the file.
"""

from __future__ import annotations

import os
from typing import Any

from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle.containers import (
    ZIP_MAGIC,
    MappedFile,
    load_legacy,
    load_zip,
    release_pages,
)

__all__ = ["load_torch_file", "release_pages"]


def load_torch_file(path: str | os.PathLike) -> Any:
    """Loads a `torch.save` file (zip or legacy container) without torch.

    Args:
      path: the checkpoint (`.pt`, `.pth`, `.pth.tar`, ... — the extension is ignored).

    Returns:
      The saved object with plain containers (dict/OrderedDict/list/tuple, Python scalars,
      str). Each tensor (or `nn.Parameter`) is a read-only numpy array with the tensor's
      shape, dtype (bfloat16 via `ml_dtypes`) and strides, viewing a memory map of the file,
      so no RAM is spent until it is read and tensors sharing a storage share memory.
      `argparse.Namespace` objects become dicts.

    Raises:
      HdjaxError: not a PyTorch file, truncated/corrupt file, unsupported content, or a
        pickle naming any global outside the allow-list (refused before it is called).
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
    if not head:
        raise HdjaxError("not a PyTorch checkpoint (empty file)", path)
    if head == ZIP_MAGIC:
        return load_zip(MappedFile(path))
    if head[:1] == b"\x80":  # pickle PROTO opcode: the legacy container starts with one
        return load_legacy(MappedFile(path))
    raise HdjaxError("not a PyTorch checkpoint (neither a zip nor a legacy torch.save file)", path)

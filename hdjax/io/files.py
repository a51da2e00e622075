"""Writing files so that readers never see a partial one."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from typing import IO, Any, Literal

# Temporary files are `.{name}.hdjax-{pid}-{random}.tmp`: the tag and pid let a later run
# tell this tool's leftovers (a killed process) from anyone else's files.
_TEMP_TAG = "hdjax-"
_TEMP_RE = re.compile(r"^\..+\.hdjax-(\d+)-[^.]+\.tmp$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Deletes this tool's temporary files in `directory` whose writing process is gone.

    A process killed outright (SIGKILL, power loss) cannot remove its temporary file; a
    temporary of a process still running (another run writing to the same folder) is kept.

    Returns:
      The paths removed.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMP_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _process_alive(int(m.group(1))):
            path = os.path.join(directory, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def atomic_write(
    path: str | os.PathLike,
    write_fn: Callable[[IO[Any]], object],
    mode: Literal["wb", "w"] = "wb",
) -> None:
    """Writes `path` through `write_fn(file)` so that it appears complete or not at all.

    The data goes to a temp file in the same folder (so the rename cannot cross file
    systems), is fsynced (durable before it is visible: a crash must not leave a renamed
    empty file) and replaces `path` with `os.replace`. On any exception, KeyboardInterrupt
    included, the temp file is removed and an existing `path` is left untouched.

    Args:
      path: the file to create or replace; its folder must exist.
      write_fn: writes the whole content to the open file it is given.
      mode: "wb" for a binary file, "w" for UTF-8 text.

    Raises:
      OSError: the folder does not exist or the file cannot be written; whatever
        `write_fn` raises passes through.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.{_TEMP_TAG}{os.getpid()}-", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600: keep a replaced file's permissions, else the usual 0644.
        try:
            permissions = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            permissions = 0o644
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_png(path: str | os.PathLike, rgb: Any) -> None:
    """Writes an (H, W, 3) uint8 RGB or (H, W) grey array as a PNG, atomically.

    Raises:
      HdjaxError: the image cannot be encoded or the file cannot be written.
    """
    import cv2
    import numpy as np

    from hdjax.errors import HdjaxError

    img = np.asarray(rgb)
    if img.ndim == 3:
        img = img[..., ::-1]  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise HdjaxError("OpenCV could not encode the PNG", path)
    try:
        atomic_write(path, lambda f: f.write(encoded.tobytes()))
    except OSError as e:
        raise HdjaxError(f"cannot write PNG ({e.strerror or e})", path) from e


def save_tree_dir(directory: str | os.PathLike, name: str, tree: Any, meta: dict[str, str]) -> None:
    """A converted-weights folder: ``tree`` saved by orbax as ``directory/name`` plus small
    text files (``meta``: file name -> content). Refuses a non-empty ``directory``.

    Raises:
      HdjaxError: ``directory`` exists and is not empty.
    """
    import orbax.checkpoint as ocp

    from hdjax.errors import HdjaxError

    directory = os.path.abspath(directory)
    if os.path.exists(directory) and os.listdir(directory):
        raise HdjaxError("already exists and is not empty: refusing to overwrite it", directory)
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, name), tree, force=True)
    checkpointer.wait_until_finished()
    for file, text in meta.items():
        atomic_write(os.path.join(directory, file), lambda f, t=text: f.write(t), mode="w")

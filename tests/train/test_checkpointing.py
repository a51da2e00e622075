"""Training checkpoints: a write that fails (a full disk) leaves the previous one intact."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_collections
import numpy as np

from hdjax.train import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The file-size limit makes every later write fail in the OS, as a full disk does (EFBIG
# instead of ENOSPC), inside tensorstore's own threads, where Python cannot fake it.
_FILL_THE_DISK = r"""
import resource, signal, sys
import ml_collections, numpy as np
from hdjax.errors import HdjaxError
from hdjax.train import checkpointing
manager = checkpointing.Manager(sys.argv[1], ml_collections.ConfigDict({"keep_checkpoints": 3}))
rng = np.random.default_rng(0)
manager.save(1, {"w": rng.random((300, 300), np.float32)}, b"one", 0)
manager.close()
manager = checkpointing.Manager(sys.argv[1], ml_collections.ConfigDict({"keep_checkpoints": 3}))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    manager.save(2, {"w": rng.random((300, 300), np.float32)}, b"two", 0)
    manager.save(3, {"w": rng.random((300, 300), np.float32)}, b"three", 0)
    manager.close()
except HdjaxError as e:
    print(e)
    sys.exit(3)
"""


def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    directory = str(tmp_path / "checkpoints")
    out = subprocess.run(
        [sys.executable, "-c", _FILL_THE_DISK, directory],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=300,
    )
    assert out.returncode == 3, out.stderr[-3000:]
    line = out.stdout.strip()
    assert line.startswith(directory) and "could not write a checkpoint" in line, line
    assert "File too large" in line and line.endswith("step 1 is intact"), line

    manager = checkpointing.Manager(directory, ml_collections.ConfigDict({"keep_checkpoints": 3}))
    assert manager.all_steps() == [1]
    like = {"w": np.zeros((300, 300), np.float32)}
    state, data = manager.restore(1, like)
    manager.close()
    assert not [n for n in os.listdir(directory) if "tmp" in n]  # the failed write is cleared
    assert data == b"one"
    expected = np.random.default_rng(0).random((300, 300), np.float32)
    np.testing.assert_array_equal(np.asarray(state["w"]), expected)


def test_a_watching_manager_sees_the_steps_another_one_writes(tmp_path):
    # The eval job's watch mode polls all_steps() while training writes: orbax caches the
    # list it read at start, and watch mode never saw a checkpoint.
    cfg = ml_collections.ConfigDict({"keep_checkpoints": 3})
    directory = str(tmp_path / "checkpoints")
    writer = checkpointing.Manager(directory, cfg)
    watcher = checkpointing.Manager(directory, cfg)
    assert watcher.all_steps() == []
    writer.save(5, {"w": np.ones(3, np.float32)}, b"x", stage=0)
    writer.close()  # waits for the save
    assert watcher.all_steps() == [5]
    watcher.close()

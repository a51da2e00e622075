"""Suite-wide setup: one persistent XLA compilation cache per test session.

Several slow tests compile what another part of them already compiled: a resumed run, the
second of two processes, an eval after training. With a cache shared by the session (this
process, the xdist workers and the subprocesses tests start, through the environment) they
read the executable instead (measured: the SIGKILL-resume test 125 s -> 101 s). A fresh
folder each session, removed at the end: nothing carries over between runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

_VAR = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config) -> None:
    if hasattr(config, "workerinput") or _VAR in os.environ:
        return  # an xdist worker (inherits the controller's), or the user chose one
    path = tempfile.mkdtemp(prefix="hdjax-xla-cache-")
    os.environ[_VAR] = path
    config._hdjax_xla_cache = path
    if "jax" in sys.modules:  # already imported: the variable alone is read too late
        sys.modules["jax"].config.update("jax_compilation_cache_dir", path)


def pytest_unconfigure(config) -> None:
    path = getattr(config, "_hdjax_xla_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)

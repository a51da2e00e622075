"""The command line: help, one-line usage errors, packaged configs, early input checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import hdjax
from hdjax import configlib
from hdjax.errors import HdjaxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, cwd=REPO):
    """`python -m hdjax.main ARGS` with this checkout first on the path."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "hdjax.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_help_exits_0_and_lists_config_fields():
    proc = _main("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for flag in ("--config:", "--workdir:", "--mode:", "--output:", "--compilation_cache:"):
        assert flag in out
    assert "--config.reconstruct.resolution=512" in out
    assert "--config.reconstruct.exif_orientation=True" in out
    assert "--config.train.lr=0.001" in out
    assert "Exit status: 0" in out


@pytest.mark.parametrize(
    "args, pattern",
    [
        (
            ["--config=configs/pifuhd.py:tiny", "--config.reconstruct.resolutoin=64"],
            "error: --config.reconstruct.resolutoin: unknown config field "
            "(did you mean reconstruct.resolution?)",
        ),
        (["--config=configs/pifuhd.py:tin"], "error: --config=configs/pifuhd.py:tin: unknown"),
        (["--config=nosuch.py"], "error: --config=nosuch.py: no such config file"),
        (["--config=pifuhd", "--mode=fly"], "error: flag --mode=fly: value should be one of"),
        (["--config=pifuhd:tin"], "error: --config=pifuhd:tin: unknown config variant 'tin'"),
        (
            ["--config=pifuhd", "--config.reconstruct.resolution=big"],
            "error: flag --config.reconstruct.resolution=big: invalid literal",
        ),
    ],
)
def test_usage_and_config_errors_are_one_line_exit_2(tmp_path, args, pattern):
    line = _one_error_line(_main(*args, f"--workdir={tmp_path}"))
    assert line.startswith(pattern), line


def test_runs_from_any_directory_and_checks_inputs_before_weights(tmp_path):
    """Outside the repository (beside a folder named `hdjax`, as next to a clone) the README's
    `configs/pifuhd.py` and the packaged name both resolve; a missing input is reported before
    any weight is drawn."""
    (tmp_path / "hdjax" / "configs").mkdir(parents=True)
    for config in ("configs/pifuhd.py:tiny", "pifuhd:tiny"):
        proc = _main(
            f"--config={config}",
            f"--workdir={tmp_path / 'w'}",
            "--mode=reconstruct",
            f"--config.reconstruct.input={tmp_path / 'missing'}",
            cwd=tmp_path,
        )
        line = _one_error_line(proc)
        assert line == f"error: {tmp_path / 'missing'}: input path does not exist", line
        assert "weights:" not in proc.stderr and "JAX devices" not in proc.stderr


def test_packaged_config_needs_no_hdjax_file(monkeypatch):
    # Beside a clone folder named `hdjax`, `import hdjax` can be a namespace package without
    # `__file__`; the config must locate its assets without it.
    monkeypatch.setattr(hdjax, "__file__", None, raising=False)
    cfg = configlib.load_config("pifuhd:tiny")
    assert os.path.isdir(cfg.reconstruct.input)
    assert configlib.resolve_config("configs/pifuhd.py") == "configs/pifuhd.py"  # repo root
    assert configlib.resolve_config("elsewhere/pifuhd.py:tiny") == (
        os.path.join(configlib.PACKAGED_CONFIGS, "pifuhd.py") + ":tiny"
    )


def test_unknown_override_names_the_closest_field():
    cfg = configlib.load_config("pifuhd")
    assert configlib.unknown_override(cfg, ["--config.reconstruct.resolution=4"]) is None
    assert configlib.unknown_override(cfg, ["--config.reconstrut.octree=fast"]) == (
        "--config.reconstrut.octree: unknown config field (did you mean reconstruct?)"
    )
    msg = configlib.unknown_override(cfg, ["--config.seed.x=1"])
    assert msg == "--config.seed.x: unknown config field (seed is a value, not a section)"
    with pytest.raises(HdjaxError, match="unknown config variant 'huge'"):
        configlib.load_config("pifuhd:huge")


def test_backend_probe_line_is_dropped():
    import logging

    from hdjax.main import _DropBackendProbe

    def record(msg):
        return logging.LogRecord("jax._src.xla_bridge", logging.INFO, "", 0, msg, (), None)

    probe = _DropBackendProbe()
    assert not probe.filter(record("Unable to initialize backend 'tpu': INTERNAL: no libtpu"))
    assert probe.filter(record("Platform 'cpu' is experimental"))

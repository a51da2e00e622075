"""The documented build commands (README.md, docs/, the docstrings of `hdjax.datasets`), each
run as a subprocess from outside the repository, at a tiny size (``--size=16
--num_points=50``), plus the builder's rule for configs named like a registered one."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

from hdjax.data import pipeline
from hdjax.datasets.scan_renders import scan_renders_dataset_builder as scan_renders
from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder as synthetic_humans
from hdjax.errors import HdjaxError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ("--size=16", "--num_points=50")
VERSION = str(synthetic_humans.Builder.VERSION)
# One worker builds the tiny embedded-body dataset that the next tests reuse.
pytestmark = pytest.mark.xdist_group("build_cli")


def _build(*args: str, cwd, **env_vars: str) -> subprocess.CompletedProcess:
    """``python -m hdjax.datasets.build ARGS`` in ``cwd``; the repository is importable only
    as the installed package would be (its root on PYTHONPATH, not the working folder)."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **env_vars)
    cmd = [sys.executable, "-m", "hdjax.datasets.build", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _built(result: subprocess.CompletedProcess, name: str, data_dir) -> str:
    """The dataset folder the build reports, after checking that it succeeded."""
    assert result.returncode == 0, result.stderr[-3000:]
    builder = scan_renders if name.startswith("scan_renders") else synthetic_humans
    folder = os.path.join(data_dir, name, str(builder.Builder.VERSION))
    assert f"built {name} in {folder}" in result.stdout
    return folder


@pytest.fixture(scope="module")
def tiny_embedded(tmp_path_factory):
    """README's "the same build by hand" without --num_bodies, tiny: 8 bodies × 12 yaws."""
    root = tmp_path_factory.mktemp("build_cli")
    data_dir = root / "tfds"
    result = _build(
        "synthetic_humans", "--config=pifuhd", f"--data_dir={data_dir}", *TINY,
        "--num_workers=2", cwd=root,
    )  # fmt: skip
    return _built(result, "synthetic_humans/pifuhd_16px_50pts", data_dir)


def test_tiny_build_of_the_embedded_bodies(tiny_embedded):
    assert len(pipeline.open_source(tiny_embedded, "train")) == 7 * 12
    assert len(pipeline.open_source(tiny_embedded, "test")) == 12


def test_the_same_config_builds_the_same_bytes(tiny_embedded, tmp_path):
    """Another process (another string hashing, one worker instead of two) writes the same
    shard files: the records' fields are serialized in a fixed order."""
    data_dir = tmp_path / "tfds"
    result = _build(
        "synthetic_humans", "--config=pifuhd", f"--data_dir={data_dir}", *TINY,
        "--num_workers=1", cwd=tmp_path, PYTHONHASHSEED="1",
    )  # fmt: skip
    folder = _built(result, "synthetic_humans/pifuhd_16px_50pts", data_dir)
    shards = sorted(n for n in os.listdir(folder) if ".array_record-" in n)
    assert len(shards) == 2
    for name in shards:
        with open(os.path.join(folder, name), "rb") as a:
            with open(os.path.join(tiny_embedded, name), "rb") as b:
                assert a.read() == b.read(), name


@pytest.mark.parametrize("extra", [(), ("--num_workers=1",)])
def test_the_documented_default_command_runs(tiny_embedded, tmp_path, extra):
    """``python -m hdjax.datasets.build synthetic_humans --config=pifuhd --data_dir=DIR``
    (build.py's first example, README), once more with a flag that keeps the name.

    It used to stop in TFDS ("Cannot name a custom BuilderConfig the same as an available
    BuilderConfig") while making the builder, before rendering anything. A full-size build
    renders 96 records at 1024² for minutes, so DIR holds the tiny build under the name
    ``pifuhd``: TFDS then reuses it, and the builder is made exactly as for a fresh build.
    """
    data_dir = tmp_path / "tfds"
    shutil.copytree(tiny_embedded, data_dir / "synthetic_humans" / "pifuhd" / VERSION)
    result = _build("synthetic_humans", "--config=pifuhd", f"--data_dir={data_dir}", *extra,
                    cwd=tmp_path)  # fmt: skip
    folder = _built(result, "synthetic_humans/pifuhd", data_dir)
    assert len(pipeline.open_source(folder, "train")) == 7 * 12


def test_generated_bodies_command(tmp_path):
    """``--config=pifuhd --num_bodies=N --seed=S [--num_workers=W]`` (README, build.py,
    docs/synthetic_bodies.md, contact_sheet.py), with one body."""
    pytest.importorskip("body_models")
    from hdjax.datasets.synthetic_humans import bodies

    try:
        bodies.check_installed()
    except HdjaxError as e:
        pytest.skip(str(e))
    data_dir = tmp_path / "tfds"
    result = _build(
        "synthetic_humans", "--config=pifuhd", "--num_bodies=1", "--seed=0", "--num_workers=1",
        f"--data_dir={data_dir}", *TINY, cwd=tmp_path,
    )  # fmt: skip
    folder = _built(result, "synthetic_humans/pifuhd_n1_s0_16px_50pts", data_dir)
    assert len(pipeline.open_source(folder, "train")) == 12
    assert os.path.isfile(os.path.join(folder, "bodies_train.json"))


@pytest.mark.parametrize("config", ["pifuhd", "twok2k"])
def test_scan_renders_command(tmp_path, config):
    """``scan_renders --config=pifuhd|twok2k --manual_dir=SCANS`` (README, build.py)."""
    from hdjax.data import subjects

    scans = tmp_path / "scans"
    os.makedirs(scans / "scan_a")
    subjects.load_embedded_body("body_03").mesh.export(str(scans / "scan_a" / "scan_a.ply"))
    data_dir = tmp_path / "tfds"
    result = _build("scan_renders", f"--config={config}", f"--manual_dir={scans}",
                    f"--data_dir={data_dir}", *TINY, cwd=tmp_path)  # fmt: skip
    folder = _built(result, f"scan_renders/{config}_16px_50pts", data_dir)
    views = 12 if config == "pifuhd" else 7
    assert len(pipeline.open_source(folder, "train")) == views


def test_beam_flag_without_apache_beam_is_one_clear_error(tmp_path):
    """``--beam`` (README's layout, docs/beam.md) where the `beam` extra is missing."""
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("apache_beam is installed (tests/datasets/test_builder.py -k beam)")
    result = _build("synthetic_humans", "--config=pifuhd", "--beam",
                    f"--data_dir={tmp_path / 'tfds'}", *TINY, cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: --beam needs Apache Beam")


def test_a_registered_name_takes_a_copy_that_only_builds_differently(tmp_path):
    """The builder takes a copy of a registered config that differs in how it builds
    (`BUILD_FIELDS`), and refuses one that would render other records under its name."""
    registered = synthetic_humans.Builder.builder_configs["pifuhd"]
    copy = dataclasses.replace(registered, num_workers=3, render_cache=False)
    builder = synthetic_humans.Builder(config=copy, data_dir=str(tmp_path))
    assert builder.builder_config is copy and builder.num_workers == 3
    assert builder.data_dir == str(tmp_path / "synthetic_humans" / "pifuhd" / VERSION)
    same = dataclasses.replace(registered)  # what `variant("pifuhd")` returns
    assert synthetic_humans.Builder(config=same, data_dir=str(tmp_path)).builder_config is same
    other = dataclasses.replace(registered, seed=4)
    with pytest.raises(HdjaxError, match="'pifuhd' differs from the registered one in seed"):
        synthetic_humans.Builder(config=other, data_dir=str(tmp_path))

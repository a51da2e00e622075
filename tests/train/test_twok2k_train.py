"""2K2K training: the schedule of rates, one step per phase, a whole resumed run and its eval."""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.configs.twok2k import get_config
from hdjax.models import twok2k as K
from hdjax.train import loop
from hdjax.train import twok2k as T

CANVAS, WIDTH = 128, 4


@pytest.fixture(autouse=True)
def fast_compiles():
    """Small programs compile several times faster without XLA's optimisation passes."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_cosine_restarts_by_hand():
    lr = T.cosine_restarts(1.0, cycle=10, warmup=2, decay=0.5)
    got = [float(lr(jnp.asarray(i))) for i in range(22)]
    # float32 pow / cos: exact here, a few ulps elsewhere.
    assert got[:3] == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)  # linear warm-up, the peak
    assert got[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)), abs=1e-6)  # half way
    assert got[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)), abs=1e-6)
    assert got[10:13] == pytest.approx([0.0, 0.25, 0.5], abs=1e-6)  # restart, peak halved
    assert got[20:22] == pytest.approx([0.0, 0.125], abs=1e-6)


def _standing_theta(batch: int) -> np.ndarray:
    """Twelve part transforms spread over the image (scale 0.3, offsets on a grid)."""
    th = np.zeros((batch, 12, 2, 3), np.float32)
    th[..., 0, 0] = th[..., 1, 1] = 0.3
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 3), np.linspace(-0.6, 0.6, 4)), -1)
    th[..., :, 2] = grid.reshape(12, 2)
    return th


def fake_batch(rng: np.random.Generator, batch: int = 2) -> dict[str, np.ndarray]:
    """A disc-shaped subject: depth d around 1024 (D ≈ 2) inside, 0 outside."""
    yy, xx = np.mgrid[:CANVAS, :CANVAS] / CANVAS - 0.5
    inside = (xx**2 + yy**2 < 0.12)[None, ..., None]
    front = np.where(inside, 1000.0 + 20 * xx[None, ..., None], 0.0)
    return {
        "image": rng.uniform(-1, 1, (batch, CANVAS, CANVAS, 3)).astype(np.float32),
        "depth_front": np.repeat(front, batch, 0).astype(np.float32),
        "depth_back": np.repeat(np.where(inside, front + 60.0, 0.0), batch, 0).astype(np.float32),
        "theta": _standing_theta(batch),
    }


def tiny_config(root: str | None = None):
    cfg = get_config("tiny")
    cfg.model.update(canvas=CANVAS, width=WIDTH)
    cfg.render.update(yaws=(0.0, 20.0), num_points=64)
    cfg.input.dataset.config = "test_twok2k"
    if root is not None:
        cfg.input.dataset.root = root
    cfg.train.update(steps=(2, 2), log_every=1, checkpoint_every=1, eval_at_end=False)
    cfg.eval.update(normal_size=64, iou_resolution=32, num_samples=500)
    return cfg


@pytest.mark.parametrize("phase", T.STAGES)
def test_a_step_trains_only_its_phase(phase):
    cfg = tiny_config()
    model, geom = K.TwoK2K(width=WIDTH), K.geometry(CANVAS)
    variables = K.init_variables(jax.random.PRNGKey(0), width=WIDTH)
    stage = loop.Stage(phase, 0, 0, 10)
    tx = T.make_optimizer(cfg, stage, variables, steps_per_epoch=1.0)
    state = loop.TrainState(jnp.asarray(0), variables, tx.init(variables))
    step = jax.jit(T.make_train_step(model, geom, phase, tx))
    new, metrics = step(state, fake_batch(np.random.default_rng(0)))
    assert math.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    prefix = "down" if phase == "phase1" else "full"
    assert {f"{prefix}_depth", f"{prefix}_con", f"{prefix}_mask"} <= set(metrics)
    if phase == "phase1":
        assert {f"part_{n}" for n in K.PART_NETS} | {"down_normal"} <= set(metrics)
    # The warm-up's first rate is 0: a second step moves the parameters.
    new, _ = step(new, fake_batch(np.random.default_rng(1)))
    for collection in ("params", "batch_stats"):
        for net in variables[collection]:
            before = jax.tree_util.tree_leaves(variables[collection][net])
            after = jax.tree_util.tree_leaves(new.params[collection][net])
            changed = any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
            # Phase 2 runs every net in train mode (official): all statistics move.
            moves = net in T.TRAINABLE[phase] or (collection, phase) == ("batch_stats", "phase2")
            assert changed == moves, (collection, net)


def test_run_resumes_exactly_and_evaluates(tmp_path):
    """A 2 + 2 step run; its last two checkpoints removed, the rerun resumes at step 2 and
    ends with the same variables, bit for bit; the eval job scores the last checkpoint."""
    from hdjax.eval import twok2k as tk_eval

    cfg = tiny_config(str(tmp_path / "tfds"))
    workdir = str(tmp_path / "w")
    first = T.train_and_evaluate(cfg, workdir)
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["stage"] for r in lines] == ["phase1"] * 2 + ["phase2"] * 2
    assert sorted(os.listdir(os.path.join(workdir, "previews"))) == ["phase1.png", "phase2.png"]
    ckpts = os.path.join(workdir, "checkpoints")
    for step in ("3", "4"):
        shutil.rmtree(os.path.join(ckpts, step))
    second = T.train_and_evaluate(cfg, workdir)
    for a, b in zip(
        jax.tree_util.tree_leaves(first.params),
        jax.tree_util.tree_leaves(second.params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    done = tk_eval.evaluate(cfg, workdir)
    assert list(done) == [4]
    saved = json.load(open(os.path.join(workdir, "eval", "step_4", "metrics.json")))
    for key in ("p2s_cm", "chamfer_cm", "normal_l2", "iou", "depth_l1_cm", "mask_iou"):
        assert key in saved and key in saved["subjects"][0]
    assert 0.0 <= saved["mask_iou"] <= 1.0
    # An untrained model may find no surface: then it is never kept as the best.
    kept = os.path.isfile(os.path.join(workdir, "best", "format.json"))
    assert kept == (saved["failed"] == 0)


_MULTI_DEVICE = r"""
import sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp, numpy as np, optax
jax.config.update("jax_disable_most_optimizations", True)
from test_twok2k_train import CANVAS, WIDTH, fake_batch
from hdjax.models import twok2k as K
from hdjax.train import loop
from hdjax.train import twok2k as T
assert jax.device_count() == 2
model, geom = K.TwoK2K(width=WIDTH), K.geometry(CANVAS)
# A host copy: the steps donate their state.
variables = jax.device_get(K.init_variables(jax.random.PRNGKey(0), width=WIDTH))
# Plain SGD: Adam would turn rounding noise in near-zero gradients into whole lr steps.
tx = optax.sgd(0.1)
out = []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = loop.device_mesh(devices)
    step = loop.jit_step(T.make_train_step(model, geom, "phase2", tx), mesh)
    state = loop.TrainState(jnp.asarray(0), variables, tx.init(variables))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    for i in range(2):
        state, _ = step(state, loop.global_batch(fake_batch(np.random.default_rng(i)), sharding))
    out.append(jax.tree_util.tree_leaves(jax.device_get(state.params)))
diff = max(float(np.abs(a - b).max()) for a, b in zip(*out))
scale = max(float(np.abs(a).max()) for a in out[0])
print("MAXDIFF", diff, scale)
"""


def test_two_devices_equal_one_device():
    """Phase 2 (BatchNorm in train mode) with the batch split over 2 devices trains the same
    variables as on 1: the statistics are those of the global batch."""
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    code = _MULTI_DEVICE.format(repo=os.path.dirname(os.path.dirname(tests)), tests=tests)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    diff, scale = (float(x) for x in out.stdout.split("MAXDIFF")[1].split())
    # Measured 6.5e-5 of the largest variable (2.6e-4 of 4.05) after 2 SGD steps, since the
    # frozen nets' BatchNorms also run on batch statistics in phase 2 (as official; 1.9e-5
    # before): the statistics summed in another order. Per-device statistics (the bug this
    # catches) differ by O(1).
    assert diff <= 4e-4 * scale, (diff, scale)

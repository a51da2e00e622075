"""Training: the schedule, one step per stage, data parallelism, exact resumption."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.pifuhd import get_config
from hdjax.errors import HdjaxError
from hdjax.models.pifuhd import init_params
from hdjax.train import loop, pifuhd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def fast_compiles():
    """Small programs compile several times faster without XLA's optimisation passes."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def tiny_config(root: str | None = None):
    """The tiny model at 32²/64² on a 2-body, 2-view dataset: seconds per stage."""
    cfg = get_config("tiny")
    cfg.model.arch.coarse_size = 32
    cfg.model.arch.fine_size = 64
    cfg.input.pipeline.update(crop_size=32, batch_size=2, num_points=256)
    cfg.render.update(yaws=(0.0, 90.0), num_points=2000)
    cfg.input.dataset.config = "test_tiny"
    if root is not None:
        cfg.input.dataset.root = root
    cfg.train.update(steps=(2, 3, 3), log_every=1, checkpoint_every=2, eval_at_end=False)
    return cfg


def fake_batch(cfg, stage: str, rng: np.random.Generator, batch: int = 2):
    return pifuhd.random_batch(cfg, stage, rng, batch)


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    from hdjax import configlib, main
    from hdjax.models import shipped
    from hdjax.models.pifuhd import PIFuHDArch

    cfg = tiny_config()
    arch = PIFuHDArch.from_config(cfg.model.arch)
    params = init_params(arch, 7)
    path = str(tmp_path / "start.npz")
    shipped.save(path, "pifuhd", configlib.to_dict(arch), params, dtype="float32")
    cfg.train.init_weights = path
    got = pifuhd.initial_params(cfg, arch)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    cfg.model.arch.coarse.mlp_dim = [33, 32, 16, 8, 4, 1]  # another model
    with pytest.raises(HdjaxError, match="another architecture"):
        pifuhd.initial_params(cfg, PIFuHDArch.from_config(cfg.model.arch))
    cfg = tiny_config()
    cfg.train.init_weights = "no_such_weights"  # neither a file nor a shipped name
    with pytest.raises(HdjaxError, match="init_weights: no such file"):
        main.check_inputs("train", cfg)


def test_schedule_ranges_and_rescaling():
    cfg = tiny_config()
    stages = loop.schedule(cfg, pifuhd.STAGES)
    assert [(s.name, s.start, s.end) for s in stages] == [
        ("normals", 0, 2),
        ("coarse", 2, 5),
        ("fine", 5, 8),
    ]
    assert loop.stage_at(stages, 4).name == "coarse" and loop.stage_at(stages, 8) is None
    cfg.train.num_steps = 80
    assert [s.steps for s in loop.schedule(cfg, pifuhd.STAGES)] == [20, 30, 30]
    cfg.train.num_steps = 0
    cfg.train.update(stages=("coarse", "fine", "coarse", "fine"), steps=(2, 2, 1, 1))
    stages = loop.schedule(
        cfg, pifuhd.STAGES
    )  # alternating: a stage may come back, with its own index
    assert [(s.name, s.index, s.start) for s in stages] == [
        ("coarse", 0, 0),
        ("fine", 1, 2),
        ("coarse", 2, 4),
        ("fine", 3, 5),
    ]
    assert loop.stage_at(stages, 4).index == 2
    assert [s.name for s in loop.schedule(get_config(), pifuhd.STAGES)] == ["normals"] + [
        "coarse",
        "fine",
    ] * 2
    cfg.train.steps = (1, 1, 1)
    cfg.train.stages = ("coarse", "bogus", "fine")
    with pytest.raises(HdjaxError, match="unknown stage 'bogus'"):
        loop.schedule(cfg, pifuhd.STAGES)


@pytest.mark.parametrize("stage", pifuhd.STAGES)
def test_a_step_trains_only_its_stage(stage):
    cfg = tiny_config()
    model = pifuhd.training_model(cfg)
    params = init_params(model.arch, 0)
    st = loop.schedule(cfg, pifuhd.STAGES)[pifuhd.STAGES.index(stage)]
    tx, state = pifuhd.stage_state(cfg, st, params)
    step = jax.jit(pifuhd.make_train_step(model, stage, tx, cfg))
    new, metrics = step(state, fake_batch(cfg, stage, np.random.default_rng(0)))
    assert int(new.step) == st.start + 1 and np.isfinite(float(metrics["loss"]))
    assert float(metrics["grad_norm"]) > 0
    flat_old = jax.tree_util.tree_leaves_with_path(params)
    flat_new = jax.tree_util.tree_leaves(new.params)
    changed = set()
    for (path, a), b in zip(flat_old, flat_new, strict=True):
        names = tuple(k.key for k in path)
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            changed.add(names[:2] if names[0] == "netG" else names[:1])
    assert changed == set(pifuhd.TRAINABLE[stage])


def test_bad_loss_stops_with_the_step_and_terms():
    with pytest.raises(
        HdjaxError, match=r"step 7: loss is nan \(.*stack0=0\.5.*last good checkpoint: step 6"
    ):
        loop._check_finite(7, {"loss": float("nan"), "stack0": 0.5}, 6)


_MULTI_DEVICE = r"""
import sys
sys.path.insert(0, {repo!r})
import jax, jax.numpy as jnp, numpy as np, optax
jax.config.update("jax_disable_most_optimizations", True)
sys.path.insert(0, {tests!r})
from test_train import fake_batch, tiny_config
from hdjax.models.pifuhd import init_params
from hdjax.train import loop, pifuhd
assert jax.device_count() == 4, jax.devices()
cfg = tiny_config()
cfg.input.pipeline.batch_size = 4
model = pifuhd.training_model(cfg)
arch = model.arch
out = {{}}
for n in (1, 4):
    params = init_params(arch, 0)
    # Plain SGD: RMSprop divides by the gradient's own size, which turns the float noise
    # of gradients that are zero in exact arithmetic (biases before a GroupNorm) into
    # full-size steps; the test is about the gradient, not the optimiser.
    tx = optax.sgd(0.1)
    mesh = loop.device_mesh(jax.devices()[:n])
    state = jax.device_put(loop.TrainState(jnp.asarray(0), params, tx.init(params)),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step = loop.jit_step(pifuhd.make_train_step(model, "coarse", tx, cfg), mesh)
    rng = np.random.default_rng(0)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    for _ in range(3):
        state, m = step(state, loop.global_batch(fake_batch(cfg, "coarse", rng, 4), sharding))
    out[n] = jax.tree_util.tree_leaves(jax.device_get(state.params))
diff = max(float(np.abs(a - b).max()) for a, b in zip(out[1], out[4]))
scale = max(float(np.abs(a).max()) for a in out[1])
print("MAXDIFF", diff, scale)
"""


def test_four_devices_equal_one_device():
    """The batch split over 4 (forced host) devices trains the same params as on 1."""
    code = _MULTI_DEVICE.format(repo=REPO, tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    diff, scale = (float(x) for x in out.stdout.split("MAXDIFF")[1].split())
    # Only the order of the batch-mean reductions differs: float32 rounding, measured
    # 3.7e-9 of the largest parameter (1.0) after 3 SGD steps.
    assert diff <= 1e-5 * scale, (diff, scale)


_RUN = r"""
import os, signal, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import jax
import numpy as np
jax.config.update("jax_disable_most_optimizations", True)  # as the fixture does here
from test_train import tiny_config
from hdjax.train import checkpointing, pifuhd
root, workdir, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
real_save = checkpointing.Manager.save

def save_then_die(self, step, *args):
    real_save(self, step, *args)
    if step == kill_at:  # the async write of this step may still be in flight
        os.kill(os.getpid(), signal.SIGKILL)

checkpointing.Manager.save = save_then_die
if __name__ == "__main__":  # the dataset build's worker processes import this file
    state = pifuhd.train_and_evaluate(tiny_config(root), workdir)
    np.savez(out, *[np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)])
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """A run killed with SIGKILL mid-stage (no handler, no cleanup, a save maybe half
    written) and rerun ends with the same params, bit for bit, as one that never stopped:
    data order, optimiser state and stage come back exactly. Every run is a fresh process,
    as a user's runs are."""
    script = tmp_path / "run.py"
    script.write_text(_RUN.format(repo=REPO, tests=os.path.dirname(os.path.abspath(__file__))))
    root = str(tmp_path / "tfds")

    def run(workdir: str, kill_at: int = -1) -> subprocess.CompletedProcess:
        out = str(tmp_path / f"{os.path.basename(workdir)}.npz")
        cmd = [sys.executable, str(script), root, workdir, out, str(kill_at)]
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    straight = run(str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    lines = [json.loads(x) for x in open(tmp_path / "straight" / "metrics.jsonl")]
    assert [r["stage"] for r in lines] == ["normals"] * 2 + ["coarse"] * 3 + ["fine"] * 3
    assert (tmp_path / "straight" / "loss_curve.png").stat().st_size > 1000
    assert sorted(os.listdir(tmp_path / "straight" / "previews")) == [
        "coarse.png",
        "fine.png",
        "normals.png",
    ]
    workdir = str(tmp_path / "resumed")
    killed = run(workdir, kill_at=6)  # in the fine stage
    assert killed.returncode == -9, killed.stderr[-3000:]
    left = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    resumed = run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want, got = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert want.files == got.files
    for k in want.files:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"leaf {k}; after the kill: {left}")


_PROCESS = r"""
import sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import jax
import numpy as np
process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{{port}}", num_processes, process_id)
jax.config.update("jax_disable_most_optimizations", True)
import jax.numpy as jnp
import optax
from test_train import fake_batch, tiny_config
from hdjax.models.pifuhd import init_params
from hdjax.train import loop, pifuhd
cfg = tiny_config()
model = pifuhd.training_model(cfg)
arch = model.arch
params = init_params(arch, 0)
tx = optax.sgd(0.1)  # as in the 4-device test: the gradient, not RMSprop's noise scaling
mesh = loop.device_mesh()
assert mesh.size == num_processes, mesh
repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
state = jax.device_put(loop.TrainState(jnp.asarray(0), params, tx.init(params)), repl)
step = loop.jit_step(pifuhd.make_train_step(model, "coarse", tx, cfg), mesh)
sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
rng = np.random.default_rng(0)
rows = 4 // num_processes
for _ in range(3):
    full = fake_batch(cfg, "coarse", rng, 4)
    mine = {{k: v[process_id * rows:(process_id + 1) * rows] for k, v in full.items()}}
    state, m = step(state, loop.global_batch(mine, sharding))
leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(
    jax.experimental.multihost_utils.process_allgather(state.params, tiled=True))]
if process_id == 0:
    np.savez(out, *leaves)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    """Two local processes joined by `jax.distributed` (each feeding half of the batch)
    train the same params as one process with the whole batch."""
    script = tmp_path / "proc.py"
    script.write_text(_PROCESS.format(repo=REPO, tests=os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    single = subprocess.run(
        [sys.executable, str(script), "0", "1", "0", str(tmp_path / "one.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), "2", port, str(tmp_path / "two.npz")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert one.files == two.files
    scale = max(float(np.abs(one[k]).max()) for k in one.files)
    diff = max(float(np.abs(one[k] - two[k]).max()) for k in one.files)
    # As with 4 local devices: only the reduction order differs (measured 3.7e-9 of 1.0).
    assert diff <= 1e-5 * scale, (diff, scale)

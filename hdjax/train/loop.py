"""The training loop every model shares: stages, state, mesh, jit, checkpoints, preemption.

`run_schedule(cfg, workdir, make_recipe)` runs the stages of ``cfg.train.stages`` one after
the other, each for its number of steps; a `Recipe` brings what differs between models
(stages and their pipeline modes, initial params, optimiser, step, previews): PIFuHD's is in
`hdjax.train.pifuhd`, 2K2K's in `hdjax.train.twok2k`.

Data parallelism: one `jax.jit` over a device `Mesh` with a ``data`` axis; the batch is
split over it (`NamedSharding(mesh, P("data"))`), parameters and optimiser state are
replicated. Each process reads its own shard of the records and contributes its rows of the
global batch (`jax.make_array_from_process_local_data`), so the same code runs on one CPU,
several local devices and many hosts (`jax.distributed.initialize()` before, see `main`).

Checkpoints (`checkpointing`): the state, the data iterator and the stage, every
``train.checkpoint_every`` steps, at the end of every stage and on SIGTERM. Rerunning the
same command continues from the latest one, bit for bit: the data order is fixed by the
seed and the iterator state, and nothing else is random.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hdjax.data import pipeline
from hdjax.datasets import core
from hdjax.errors import HdjaxError
from hdjax.train import checkpointing, input_pipeline, monitor


@flax.struct.dataclass
class TrainState:
    """What a step changes: the step counter, all params, the stage's optimiser state."""

    step: jax.Array
    params: Any  # the model's parameter pytree
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the schedule: global steps [start, end)."""

    name: str
    index: int
    start: int
    end: int

    @property
    def steps(self) -> int:
        return self.end - self.start


def step_counts(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The steps of each stage of ``cfg.train`` (``train.num_steps`` > 0 rescales them to
    that total, each stage keeping at least one step)."""
    names, counts = tuple(cfg.train.stages), tuple(int(n) for n in cfg.train.steps)
    if len(names) != len(counts) or not names:
        raise HdjaxError(
            f"config train.stages {names} and train.steps {counts} must be non-empty and of "
            "equal length"
        )
    if cfg.train.num_steps > 0:
        total = sum(counts)
        counts = tuple(max(1, round(n * cfg.train.num_steps / total)) for n in counts)
    for name, n in zip(names, counts, strict=True):
        if n < 1:
            raise HdjaxError(f"config train.steps: stage {name!r} needs at least 1 step")
    return counts


def total_steps(cfg: ml_collections.ConfigDict) -> int:
    """The global step at which the schedule of ``cfg`` ends."""
    return sum(step_counts(cfg))


def schedule(cfg: ml_collections.ConfigDict, known: tuple[str, ...]) -> list[Stage]:
    """The stages of ``cfg.train`` with their global step ranges; ``known``: the model's
    stage names."""
    out, start = [], 0
    for i, (name, n) in enumerate(zip(cfg.train.stages, step_counts(cfg), strict=True)):
        if name not in known:
            raise HdjaxError(f"config train.stages: unknown stage {name!r} (one of {known})")
        out.append(Stage(name, i, start, start + n))
        start += n
    return out


def stage_at(stages: list[Stage], step: int) -> Stage | None:
    """The stage that runs global step ``step`` (None once all are done)."""
    return next((s for s in stages if s.start <= step < s.end), None)


def first_state(stage: Stage, tx: optax.GradientTransformation, params: Any) -> TrainState:
    """The state at ``stage``'s first step: ``params`` and a fresh optimiser state."""
    return TrainState(jnp.asarray(stage.start, jnp.int32), params, tx.init(params))


def device_mesh(devices: Any = None) -> Mesh:
    """``devices`` (default: all devices of all processes) on one ``data`` axis."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def jit_step(step: Any, mesh: Mesh):
    """`make_train_step`'s function jitted for ``mesh``: the batch split over ``data``,
    state and metrics replicated, the old state's buffers donated."""
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, NamedSharding(mesh, P("data"))),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def global_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's rows -> one global array per key, split over the ``data`` axis."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class _Preemption:
    """SIGTERM (a preempted TPU VM, `scancel`) asks the loop to save and stop."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            del signum, frame
            self.requested = True

        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: no handler
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, metrics: Mapping[str, Any], last_saved: int | None) -> None:
    loss = float(metrics["loss"])
    if math.isfinite(loss):
        return
    terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
    kept = "no checkpoint yet" if last_saved is None else f"last good checkpoint: step {last_saved}"
    raise HdjaxError(f"training stopped at step {step}: loss is {loss} ({terms}); {kept}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a model brings to the training loop (`run_schedule`).

    modes: stage name -> the input pipeline mode that feeds it;
    params: the initial ``TrainState.params`` (any pytree);
    optimizer: (stage, params) -> the stage's optax transformation;
    step: (stage name, optimizer) -> a pure (state, batch) -> (state, metrics) step;
    previews: (stage name, params, host batch) -> uint8 RGB tiles of the first sample;
    batch_keys: the pipeline keys the step reads (None: all).
    """

    modes: Mapping[str, str]
    params: Any
    optimizer: Any
    step: Any
    previews: Any
    batch_keys: tuple[str, ...] | None = None


def run_schedule(cfg: ml_collections.ConfigDict, workdir: str, make_recipe) -> TrainState:
    """The training loop of every model: ``make_recipe(cfg, source)`` gives the `Recipe`;
    runs (or resumes) the schedule of ``cfg`` in ``workdir``; returns the last state."""
    source = core.dataset_source(cfg)
    recipe = make_recipe(cfg, source)
    stages = schedule(cfg, tuple(recipe.modes))
    mesh = device_mesh()
    replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    manager = checkpointing.Manager(os.path.join(workdir, "checkpoints"), cfg.train)
    writer = monitor.Writer(workdir, total=stages[-1].end, enabled=jax.process_index() == 0)
    resume = manager.latest()  # (step, stage index) of the newest checkpoint, or None
    if resume is not None and stage_at(stages, resume[0] - 1) != stages[resume[1]]:
        raise HdjaxError(
            f"checkpoint {resume[0]} does not fit this config's schedule {cfg.train.steps}",
            manager.directory,
        )
    params = recipe.params
    keys = recipe.batch_keys
    state = None
    with _Preemption() as preemption:
        for stage in stages:
            if resume is not None and stage.index != resume[1]:
                continue  # finished before the checkpoint: its params come with the restore
            tx = recipe.optimizer(stage, params)
            state = jax.device_put(first_state(stage, tx, params), replicated)
            config = input_pipeline.pipeline_config(cfg, recipe.modes[stage.name])
            data = iter(pipeline.make_loader(source, config, seed=cfg.seed + stage.index))
            if resume is not None:
                state, data_state = manager.restore(resume[0], state)
                data.set_state(data_state)
                logging.info("resumed at step %d (%s stage)", resume[0], stage.name)
                resume = None
            step_fn = jit_step(recipe.step(stage.name, tx), mesh)
            batch = None
            writer.start(int(state.step))
            # The step is counted here, not read back from the device, so that steps are
            # dispatched without waiting for the previous one (which matters on TPU/GPU).
            for step in range(int(state.step) + 1, stage.end + 1):
                host = next(data)
                if keys is not None:
                    host = {k: host[k] for k in keys}
                batch = global_batch(host, batch_sharding)
                state, metrics = step_fn(state, batch)
                log = step % cfg.train.log_every == 0 or step == stage.end
                save = step % cfg.train.checkpoint_every == 0 or step == stage.end
                save = save or preemption.requested
                if log or save:  # never save a state whose loss went bad
                    metrics = jax.device_get(metrics)
                    _check_finite(step, metrics, manager.latest_step())
                if log:
                    writer.log(step, stage.name, metrics)
                if save:
                    manager.save(step, state, data.get_state(), stage.index)
                if preemption.requested:
                    manager.close()
                    writer.close()
                    logging.warning("SIGTERM: saved step %d; rerun the command to resume", step)
                    return state
            params = state.params
            if batch is not None:
                images = recipe.previews(stage.name, params, jax.device_get(batch))
                writer.previews(stage.name, images, stage.end)
    manager.close()
    writer.close()
    return state

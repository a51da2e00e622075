"""PIFuHD training: the normal networks, the coarse level and the fine level, in stages.

    python -m hdjax.main --config=configs/pifuhd.py --workdir=W     # train is the default

`train_and_evaluate(config, workdir)` runs the stages of ``config.train.stages`` one after
the other (the paper's order: normal nets, then the coarse level, then the fine level with
the coarse level frozen), each for its number of steps, with only its own subtree trained
(`TRAINABLE`; the others get zero updates through `optax.multi_transform`):

* ``normals``: pix2pixHD front/back nets on the whole image (`losses.normal_loss`);
* ``coarse``: coarse filter + MLP, every hourglass stack supervised (`losses.occupancy_bce`),
  on the normal nets' predictions (or the rendered normals, ``train.coarse_normals``);
* ``fine``: fine filter + MLP on random crops (``input.pipeline.crop_size``) of the
  fine-size image, fed the frozen coarse level's phi of the whole image.

Data parallelism: one `jax.jit` over a device `Mesh` with a ``data`` axis; the batch is
split over it (`NamedSharding(mesh, P("data"))`), parameters and optimiser state are
replicated. Each process reads its own shard of the records and contributes its rows of the
global batch (`jax.make_array_from_process_local_data`), so the same code runs on one CPU,
several local devices and many hosts (`jax.distributed.initialize()` before, see `main`).

The loop itself (`run_schedule`) serves every model: a `Recipe` brings what differs (stages
and their pipeline modes, initial params, optimiser, step, previews); 2K2K's is in
`hdjax.train.twok2k`.

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
from hdjax.errors import HdjaxError
from hdjax.models.pifuhd import Params, PIFuHD, PIFuHDArch, init_params, numerics_from_config
from hdjax.train import checkpointing, input_pipeline, losses, monitor

STAGES = ("normals", "coarse", "fine")
# The subtrees each stage trains (official parameter names).
TRAINABLE = {
    "normals": (("netG", "netF"), ("netG", "netB")),
    "coarse": (("netG", "image_filter"), ("netG", "mlp")),
    "fine": (("image_filter",), ("mlp",)),
}
# The pipeline mode that feeds each stage.
MODES = {"normals": "pifuhd_coarse", "coarse": "pifuhd_coarse", "fine": "pifuhd_fine"}


@flax.struct.dataclass
class TrainState:
    """What a step changes: the step counter, all params, the stage's optimiser state."""

    step: jax.Array
    params: Params
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


def schedule(cfg: ml_collections.ConfigDict, known: tuple[str, ...] = STAGES) -> list[Stage]:
    """The stages of ``cfg.train`` with their global step ranges (``train.num_steps`` > 0
    rescales the stages' steps to that total, each stage keeping at least one step);
    ``known``: the model's stage names."""
    names, counts = tuple(cfg.train.stages), tuple(int(n) for n in cfg.train.steps)
    if len(names) != len(counts) or not names:
        raise HdjaxError(
            f"config train.stages {names} and train.steps {counts} must be non-empty and of "
            "equal length"
        )
    if cfg.train.num_steps > 0:
        total = sum(counts)
        counts = tuple(max(1, round(n * cfg.train.num_steps / total)) for n in counts)
    out, start = [], 0
    for i, (name, n) in enumerate(zip(names, counts, strict=True)):
        if name not in known:
            raise HdjaxError(f"config train.stages: unknown stage {name!r} (one of {known})")
        if int(n) < 1:
            raise HdjaxError(f"config train.steps: stage {name!r} needs at least 1 step")
        out.append(Stage(name, i, start, start + int(n)))
        start += int(n)
    return out


def stage_at(stages: list[Stage], step: int) -> Stage | None:
    """The stage that runs global step ``step`` (None once all are done)."""
    return next((s for s in stages if s.start <= step < s.end), None)


def _trainable(stage: str, path: tuple[str, ...]) -> bool:
    return any(path[: len(t)] == t for t in TRAINABLE[stage])


def make_optimizer(cfg: ml_collections.ConfigDict, stage: Stage, params: Params):
    """RMSprop (PyTorch's defaults: α = 0.99, ε = 1e-8 outside the root, no momentum) with
    the learning rate × 0.1 at the fractions ``train.lr_decay_at`` of the stage, on the
    stage's subtrees; zero updates elsewhere."""
    boundaries = {int(f * stage.steps): 0.1 for f in cfg.train.lr_decay_at if 0 < f < 1}
    lr = optax.piecewise_constant_schedule(cfg.train.lr, boundaries)
    inner = optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if _trainable(stage.name, tuple(k.key for k in path)) else "frozen",
        params,
    )
    return optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels)


def _normals_for(frozen: PIFuHD, v, batch, source: str):
    if source == "ground_truth":
        return [batch["normal_front"], batch["normal_back"]][: frozen.arch.num_normals]
    return jax.lax.stop_gradient(frozen.apply(v, batch["image"], method=PIFuHD.normals))


def stage_loss(
    model: PIFuHD,
    stage: str,
    params: Params,
    batch: Mapping[str, jax.Array],
    cfg: ml_collections.ConfigDict,
    vgg=None,
    frozen: PIFuHD | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss of one stage on one batch, and its terms (for logging). ``frozen`` (default
    ``model``) runs the networks the stage does not train, forward only (`frozen_model`)."""
    frozen = model if frozen is None else frozen
    v = {"params": params}
    if stage == "normals":
        total, terms = 0.0, {}
        for side, method in (("front", PIFuHD.front_normal), ("back", PIFuHD.back_normal)):
            if not getattr(model.arch, f"use_{side}_normal"):
                continue
            pred = model.apply(v, batch["image"], method=method)
            loss, t = losses.normal_loss(pred, batch[f"normal_{side}"], cfg.train.l1_weight, vgg)
            total += loss
            terms.update({f"{side}/{k}": x for k, x in t.items()})
        return total, terms
    if stage == "coarse":
        normals = _normals_for(frozen, v, batch, cfg.train.coarse_normals)
        feats = model.apply(v, batch["image"], normals, method=PIFuHD.coarse_features)
        logits, _, in_bb = model.apply(
            v,
            feats,
            batch["points"],
            calib_global=batch["calib_global"],
            method=PIFuHD.coarse_query,
        )
        loss, per_stack = losses.occupancy_bce(logits, batch["labels"], in_bb)
        return loss, {f"stack{i}": x for i, x in enumerate(per_stack)}
    # fine: the coarse level is frozen; its phi of the whole image feeds the fine MLP.
    glob = batch["image_global"]
    normals = jax.lax.stop_gradient(frozen.apply(v, glob, method=PIFuHD.normals))
    coarse = jax.lax.stop_gradient(
        frozen.apply(v, glob, normals, method=PIFuHD.coarse_features)[-1:]
    )
    fine = model.apply(
        v, batch["image"], normals, batch["crop_offset"], method=PIFuHD.fine_features
    )
    out = model.apply(
        v,
        coarse,
        fine,
        batch["points"],
        calib_global=batch["calib_global"],
        calib_local=batch["calib_local"],
        method=PIFuHD.query,
    )
    loss, per_stack = losses.occupancy_bce(out["fine_logits"], batch["labels"], out["in_bb_fine"])
    return loss, {f"stack{i}": x for i, x in enumerate(per_stack)}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def plane_points(calib: np.ndarray, resolution: int) -> np.ndarray:
    """(R², 3) points whose projection by an ortho ``calib`` is an R×R grid of uv in
    [−1, 1]² at depth 0 (row-major, top row first): the image's z = 0 plane."""
    u = np.linspace(-1.0, 1.0, resolution)
    uv = np.stack(np.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    q = np.concatenate([uv, np.zeros((len(uv), 1))], -1) - calib[:3, 3]
    return (q @ np.linalg.inv(calib[:3, :3]).T).astype(np.float32)


def preview_images(model: PIFuHD, stage: str, params: Params, batch) -> dict[str, np.ndarray]:
    """uint8 RGB tiles of the first sample: what the stage predicts beside what it should."""
    v = {"params": params}
    b = {k: np.asarray(x[:1]) for k, x in batch.items()}
    out = {"input": _to_uint8(b["image"][0])}
    if stage == "normals":
        pred = model.apply(v, b["image"], method=PIFuHD.normals)
        sides = [s for s in ("front", "back") if getattr(model.arch, f"use_{s}_normal")]
        for side, p in zip(sides, pred, strict=True):
            out[f"{side} rendered"] = _to_uint8(b[f"normal_{side}"][0])
            out[f"{side} predicted"] = _to_uint8(np.asarray(p[0]))
        return out
    res = b["image"].shape[1]
    if stage == "coarse":
        calib = b["calib_global"][0]
        pts = plane_points(calib, res)[None]
        normals = model.apply(v, b["image"], method=PIFuHD.normals)
        feats = model.apply(v, b["image"], normals, method=PIFuHD.coarse_features)
        logits, _, in_bb = model.apply(
            v, feats, pts, calib_global=b["calib_global"], method=PIFuHD.coarse_query
        )
        occ = jax.nn.sigmoid(logits[-1]) * in_bb
    else:
        calib = b["calib_local"][0]
        pts = plane_points(calib, res)[None]
        normals = model.apply(v, b["image_global"], method=PIFuHD.normals)
        coarse = model.apply(v, b["image_global"], normals, method=PIFuHD.coarse_features)
        fine = model.apply(v, b["image"], normals, b["crop_offset"], method=PIFuHD.fine_features)
        occ = model.apply(
            v,
            coarse[-1],
            fine[-1],
            pts,
            calib_global=b["calib_global"],
            calib_local=b["calib_local"],
            method=PIFuHD.occupancy,
        )
    grey = np.asarray(occ[0]).reshape(res, res)
    out["occupancy at z = 0"] = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, -1)
    out["mask"] = np.repeat((b["mask"][0] * 255).astype(np.uint8), 3, -1)
    return out


def training_model(cfg: ml_collections.ConfigDict) -> PIFuHD:
    """The model of ``cfg`` with its training numerics (`numerics_from_config`)."""
    arch = PIFuHDArch.from_config(cfg.model.arch)
    return PIFuHD(arch, numerics_from_config(cfg.model.numerics, training=True))


def frozen_model(arch: PIFuHDArch, cfg: ml_collections.ConfigDict) -> PIFuHD:
    """The model with inference numerics, for the networks a stage runs but does not train
    (the normal nets of the coarse and fine stages, the coarse level of the fine stage): no
    backward pass, so on CPU the forward-tuned kernels apply (one pix2pixHD net at 512²:
    2.7 s vs 7.6 s with XLA's conv, measured)."""
    return PIFuHD(arch, numerics_from_config(cfg.model.numerics, training=False))


def stage_state(
    cfg: ml_collections.ConfigDict, stage: Stage, params: Params
) -> tuple[optax.GradientTransformation, TrainState]:
    """The optimiser of ``stage`` and a fresh state at its first step."""
    tx = make_optimizer(cfg, stage, params)
    return tx, first_state(stage, tx, params)


def first_state(stage: Stage, tx: optax.GradientTransformation, params: Any) -> TrainState:
    """The state at ``stage``'s first step: ``params`` and a fresh optimiser state."""
    return TrainState(jnp.asarray(stage.start, jnp.int32), params, tx.init(params))


def random_batch(
    cfg: ml_collections.ConfigDict, stage: str, rng: np.random.Generator, batch: int
) -> dict[str, np.ndarray]:
    """Random values with the keys and shapes the pipeline gives ``stage`` (benchmarks and
    tests): images in [−1, 1], points in the box, ~40 % inside, the evaluation calib."""
    c, f = cfg.model.arch.coarse_size, cfg.model.arch.fine_size
    crop, n = cfg.input.pipeline.crop_size, cfg.input.pipeline.num_points
    calib = np.tile(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32), (batch, 1, 1))

    def img(s):
        return rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)

    out = dict(
        points=rng.uniform(-1, 1, (batch, n, 3)).astype(np.float32),
        labels=(rng.random((batch, n)) < 0.4).astype(np.float32),
        calib_global=calib,
    )
    if MODES[stage] == "pifuhd_fine":
        offset = rng.integers(0, f - crop + 1, (batch, 2)).astype(np.int32)
        return dict(
            out, image=img(crop), image_global=img(c), calib_local=calib, crop_offset=offset
        )
    return dict(out, image=img(c), normal_front=img(c), normal_back=img(c))


def make_train_step(model: PIFuHD, stage: str, tx, cfg, vgg=None):
    """A pure (state, batch) -> (state, metrics) step for one stage (jit it with shardings)."""

    frozen = frozen_model(model.arch, cfg)

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        def loss_fn(params):
            return stage_loss(model, stage, params, batch, cfg, vgg, frozen)

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(terms, loss=loss, grad_norm=optax.tree.norm(grads))
        return TrainState(state.step + 1, params, opt_state), metrics

    return step


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


def pifuhd_recipe(cfg: ml_collections.ConfigDict, source) -> Recipe:
    """PIFuHD's stages (`STAGES`) on ``source``, whose image size is checked first."""
    model = training_model(cfg)
    input_pipeline.check_sizes(cfg, model.arch, source)
    vgg = input_pipeline.vgg_features(cfg)
    return Recipe(
        modes=MODES,
        params=init_params(model.arch, cfg.seed),
        optimizer=lambda stage, params: make_optimizer(cfg, stage, params),
        step=lambda name, tx: make_train_step(model, name, tx, cfg, vgg),
        previews=lambda name, params, batch: preview_images(model, name, params, batch),
    )


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs (or resumes) the whole PIFuHD schedule of ``cfg`` in ``workdir``; returns the
    last state."""
    return run_schedule(cfg, workdir, pifuhd_recipe)


def run_schedule(cfg: ml_collections.ConfigDict, workdir: str, make_recipe) -> TrainState:
    """The training loop of every model: ``make_recipe(cfg, source)`` gives the `Recipe`;
    runs (or resumes) the schedule of ``cfg`` in ``workdir``; returns the last state."""
    source = input_pipeline.train_source(cfg)
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

"""2K2K training: phase 1 (the six normal nets and the low-res depth net), then phase 2 (the
high-resolution refiner, everything before it frozen), as the official ``train.py``.

    python -m hdjax.main --config=twok2k:tiny --workdir=W      # train is the default mode

The loop, data parallelism, checkpoints, resume and logging are PIFuHD's
(`hdjax.train.loop.run_schedule`); this module gives the 2K2K `Recipe`:

* targets (from the records' depth maps, D = d / 512, stretched to the official range on
  smaller canvases: `models.twok2k.canvas.network_depth`): normals `get_normal` of the depth
  (`depth_mesh.normal_targets`, front and back, 6 channels); low-res targets
  the depth subsampled ``[3::8, 3::8]`` and its normals; masks where the front depth > 0;
  part targets the full-size target normals cut by the same part windows as the input;
* phase 1: the down normal net and ``ImgNorm_to_Dep`` on the image downsampled 8x, the
  five part nets on their crops of [image, low-res front normal upsampled] (no gradient
  into the down net through the crops, as official); 12 normal pairs (5 part nets + down,
  front and back: each net's term is its front pair's plus its back pair's,
  `normal_pair_terms`), low-res depth, depth-normal consistency and mask terms;
* phase 2: the whole forward up to the refiner without gradients but, as the official
  (``train.py`` puts the whole model in train mode and only turns ``requires_grad`` off),
  with BatchNorm in train mode: the frozen nets normalise with the batch's statistics and
  their running statistics move (`pre_refine`); then the refiner with full-size depth,
  consistency and mask terms;
* Adam (lr 1e-4) with cosine annealing and warm restarts (`cosine_restarts`), stepped per
  iteration; BatchNorm statistics of the trained nets are updated by each step.

``TrainState.params`` holds the whole variables {'params', 'batch_stats'}: the optimiser
moves only the stage's parameters, the step writes the new statistics.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hdjax.data.codecs import record_camera
from hdjax.errors import HdjaxError
from hdjax.geometry.depth_mesh import get_normal, normal_targets
from hdjax.models import twok2k as K
from hdjax.train import losses
from hdjax.train.loop import Recipe, Stage, TrainState, run_schedule

log = logging.getLogger(__name__)

STAGES = ("phase1", "phase2")
# The networks each phase trains (official attribute names).
TRAINABLE = {
    "phase1": ("img2normal_face", "img2normal_upper", "img2normal_arm", "img2normal_leg",
               "img2normal_shoe", "img2normal_down", "ImgNorm_to_Dep"),
    "phase2": ("refine",),
}  # fmt: skip
BATCH_KEYS = ("image", "depth_front", "depth_back", "theta")
BACKGROUND_DEPTH = 6.0  # the front depth target's background (far), official


def cosine_restarts(peak: float, cycle: int, warmup: int, decay: float) -> optax.Schedule:
    """The official ``CosineAnnealingWarmUpRestarts``, in steps: each ``cycle`` starts with
    a linear ramp from 0 over ``warmup`` steps to its peak, then a half cosine to 0; the peak
    is ``peak`` · decay^k in cycle k."""
    cycle, warmup = max(int(cycle), 1), min(max(int(warmup), 0), max(int(cycle) - 1, 0))

    def lr(count):
        k = count // cycle
        t = (count % cycle).astype(jnp.float32)
        top = peak * decay ** k.astype(jnp.float32)
        ramp = top * t / max(warmup, 1)
        fall = top * 0.5 * (1 + jnp.cos(jnp.pi * (t - warmup) / max(cycle - warmup, 1)))
        return jnp.where(t < warmup, ramp, fall)

    return lr


def make_optimizer(
    cfg: ml_collections.ConfigDict, stage: Stage, variables: Any, steps_per_epoch: float
) -> optax.GradientTransformation:
    """Adam on the stage's networks (`TRAINABLE`), zero updates to every other parameter
    and to the BatchNorm statistics (the step writes those)."""
    schedule = cosine_restarts(
        cfg.train.lr,
        round(cfg.train.cycle_epochs * steps_per_epoch),
        round(cfg.train.warmup_epochs * steps_per_epoch),
        cfg.train.cycle_decay,
    )
    trained = TRAINABLE[stage.name]

    def label(path, _):
        keys = tuple(k.key for k in path)
        return "train" if keys[0] == "params" and keys[1] in trained else "frozen"

    labels = jax.tree_util.tree_map_with_path(label, variables)
    return optax.multi_transform(
        {"train": optax.adam(schedule), "frozen": optax.set_to_zero()}, labels
    )


def targets(batch: Mapping[str, jax.Array], geom: K.Geometry) -> dict[str, jax.Array]:
    """Depth (in the networks' units, `K.network_depth`), mask and normal targets (from the
    canvas's own depth) at full and low resolution (module docstring)."""
    front = batch["depth_front"] / 512.0
    back = batch["depth_back"] / 512.0
    low_f, low_b = front[:, 3::8, 3::8], back[:, 3::8, 3::8]
    return {
        "front": K.network_depth(front, geom),
        "back": K.network_depth(back, geom),
        "mask": (front > 0).astype(jnp.float32),
        "normal": normal_targets(front, back),
        "low_front": K.network_depth(low_f, geom),
        "low_back": K.network_depth(low_b, geom),
        "low_mask": (low_f > 0).astype(jnp.float32),
        "low_normal": normal_targets(low_f, low_b),
    }


def normal_pair_terms(pred: jax.Array, target: jax.Array) -> jax.Array:
    """A normal net's term: 6-channel (front 0-2, back 3-5) prediction and target, the
    official front pair's loss plus its back pair's (`losses.twok2k_normal_loss` each: one
    6-channel call would average the two, half the official weight)."""
    front = losses.twok2k_normal_loss(pred[..., :3], target[..., :3])
    return front + losses.twok2k_normal_loss(pred[..., 3:], target[..., 3:])


def depth_terms(
    prefix: str, geom, front, back, mask_prob, t_front, t_back, t_mask, t_normal
) -> dict[str, jax.Array]:
    """Depth, consistency and mask terms of one resolution (official weights); normals of
    the predicted depth in the canvas's own units, as the targets'."""
    far = jnp.where(t_mask > 0, t_front, BACKGROUND_DEPTH)
    con = losses.twok2k_consistency_loss

    def normals(d):
        return get_normal(K.native_depth(d, geom))

    return {
        f"{prefix}_depth": losses.twok2k_depth_loss(front, far)
        + losses.twok2k_depth_loss(back, t_back),
        f"{prefix}_con": con(normals(front), t_normal[..., :3], t_mask)
        + con(normals(back), t_normal[..., 3:], t_mask),
        f"{prefix}_mask": losses.twok2k_mask_loss(mask_prob, t_mask),
    }


class _Run:
    """`model.apply` with the statistics threaded through (train mode) or read (eval)."""

    def __init__(self, model: K.TwoK2K, params: Any, stats: Any):
        self.model, self.params, self.stats = model, params, stats

    def __call__(self, method, *args, train: bool):
        v = {"params": self.params, "batch_stats": self.stats}
        if not train:
            return self.model.apply(v, *args, False, method=method)
        out, new = self.model.apply(v, *args, True, method=method, mutable=["batch_stats"])
        self.stats = new["batch_stats"]
        return out


def phase1_loss(model, geom, params, stats, batch):
    """Phase 1's loss and terms, and the updated statistics."""
    t = targets(batch, geom)
    run = _Run(model, params, stats)
    d_n, raw = run(K.TwoK2K.low_res, K.downsample8_bilinear(batch["image"]), train=True)
    low = K.low_res_maps(raw)
    terms = {"down_normal": normal_pair_terms(d_n, t["low_normal"])}
    terms |= depth_terms(
        "down",
        geom,
        low["front"],
        low["back"],
        low["mask"],
        t["low_front"],
        t["low_back"],
        t["low_mask"],
        t["low_normal"],
    )
    image6 = K.part_net_input(batch["image"], jax.lax.stop_gradient(d_n))
    crops, _ = K.part_inputs(image6, batch["theta"], geom)
    part_targets, _ = K.part_inputs(t["normal"], batch["theta"], geom)
    for name in K.PART_NETS:
        out = run(K.TwoK2K.part, name, crops[name], train=True)
        terms[f"part_{name}"] = normal_pair_terms(out, part_targets[name])
    return sum(terms.values()), terms, run.stats


def pre_refine(model, geom, variables, image, theta, train: bool = False):
    """The frozen forward up to the refiner: its low-res depth input ``d_fb``, the blended
    part normals (full-frame warps: the batch's theta is traced) and the statistics
    (updated by the batch in ``train`` mode, where BatchNorm uses the batch's own)."""
    run = _Run(model, variables["params"], variables["batch_stats"])
    d_n, raw = run(K.TwoK2K.low_res, K.downsample8_bilinear(image), train=train)
    crops, ones = K.part_inputs(K.part_net_input(image, d_n), theta, geom)
    part_out = {name: run(K.TwoK2K.part, name, crops[name], train=train) for name in K.PART_NETS}
    boxes = K.full_frame_boxes(image.shape[0], geom.canvas)
    normal, _, _ = K.merge_part_normals(part_out, ones, theta, boxes, geom)
    return K.low_res_maps(raw)["d_fb"], normal, run.stats


def phase2_outputs(run: _Run, d_fb, normal, train: bool) -> dict[str, jax.Array]:
    """The refiner on the frozen inputs -> full-size depths and mask (B, S, S, 1)."""
    raw = run(
        K.TwoK2K.refine_all,
        d_fb,
        normal[:, 1::4, 1::4],
        normal[:, 0::2, 0::2],
        normal,
        train=train,
    )
    return {
        "front": jnp.clip(raw[..., 0:1], 0, 6),
        "back": jnp.clip(raw[..., 1:2], 0, 6),
        "mask": jax.nn.sigmoid(raw[..., 2:3]),
    }


def phase2_loss(model, geom, params, stats, batch):
    """Phase 2's loss and terms, and the updated statistics."""
    t = targets(batch, geom)
    frozen = jax.lax.stop_gradient({"params": params, "batch_stats": stats})
    d_fb, normal, stats = pre_refine(model, geom, frozen, batch["image"], batch["theta"], True)
    run = _Run(model, params, stats)
    out = phase2_outputs(run, jax.lax.stop_gradient(d_fb), jax.lax.stop_gradient(normal), True)
    terms = depth_terms(
        "full",
        geom,
        *(out[k] for k in ("front", "back", "mask")),
        *(t[k] for k in ("front", "back", "mask", "normal")),
    )
    return sum(terms.values()), terms, run.stats


def make_train_step(model: K.TwoK2K, geom: K.Geometry, stage: str, tx):
    """A pure (state, batch) -> (state, metrics) step of ``stage``."""
    loss_of = {"phase1": phase1_loss, "phase2": phase2_loss}[stage]

    def step(state: TrainState, batch):
        variables = state.params
        stats = variables["batch_stats"]

        def loss_fn(params):
            loss, terms, new_stats = loss_of(model, geom, params, stats, batch)
            return loss, (terms, new_stats)

        (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            variables["params"]
        )
        grads = {"params": grads, "batch_stats": jax.tree_util.tree_map(jnp.zeros_like, stats)}
        updates, opt_state = tx.update(grads, state.opt_state, variables)
        new = optax.apply_updates(variables, updates)
        new = {"params": new["params"], "batch_stats": new_stats}
        metrics = dict(terms, loss=loss, grad_norm=optax.tree.norm(grads["params"]))
        return TrainState(state.step + 1, new, opt_state), metrics

    return step


def _rgb(x, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    x = (np.asarray(x, np.float32) - lo) / (hi - lo)
    x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return np.repeat(x, 3, -1) if x.shape[-1] == 1 else x


def _depth_rgb(d, mask) -> np.ndarray:
    """A depth map (H, W, 1) as grey, near bright, the background black."""
    d = np.asarray(d, np.float32)
    inside = np.asarray(mask, bool)
    if not inside.any():
        return np.zeros((*d.shape[:2], 3), np.uint8)
    lo, hi = np.percentile(d[inside], [1, 99])
    grey = np.where(inside, 1.0 - (d - lo) / max(hi - lo, 1e-6) * 0.8, 0.0)
    return _rgb(grey)


def preview_images(
    model: K.TwoK2K, geom: K.Geometry, stage: str, variables: Any, batch
) -> dict[str, np.ndarray]:
    """uint8 RGB tiles of the first sample: predictions beside their targets."""
    b = {k: np.asarray(batch[k][:1]) for k in BATCH_KEYS}
    maps = jax.device_get(_preview_maps(model, geom, stage, variables, b))
    out = {"input": _rgb(b["image"][0], -1.0, 1.0)}
    if stage == "phase1":
        out["low-res front normal: predicted"] = _rgb(maps["normal"][0, ..., :3])
        out["target"] = _rgb(maps["t_normal"][0, ..., :3])
    else:
        out["blended part normals (front)"] = _rgb(maps["normal"][0, ..., :3])
    out["front depth: predicted"] = _depth_rgb(maps["front"][0], maps["mask"][0] > 0.5)
    out["target "] = _depth_rgb(maps["t_front"][0], maps["t_mask"][0] > 0)
    return out


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _preview_maps(model, geom, stage, variables, batch):
    t = targets(batch, geom)
    run = _Run(model, variables["params"], variables["batch_stats"])
    if stage == "phase1":
        normal, raw = run(K.TwoK2K.low_res, K.downsample8_bilinear(batch["image"]), train=False)
        pred, key = K.low_res_maps(raw), "low_"
    else:
        d_fb, normal, _ = pre_refine(model, geom, variables, batch["image"], batch["theta"])
        pred, key = phase2_outputs(run, d_fb, normal, False), ""
    return {
        "normal": normal,
        "front": pred["front"],
        "mask": pred["mask"],
        "t_normal": t[f"{key}normal"],
        "t_front": t[f"{key}front"],
        "t_mask": t[f"{key}mask"],
    }


def check_source(cfg: ml_collections.ConfigDict, source) -> None:
    """The records must be perspective renders at the model's canvas."""
    if len(source) == 0:
        raise HdjaxError("the training split holds no record")
    camera, size = record_camera(source[0]), source[0]["image"].shape[0]
    if camera != "persp" or size != cfg.model.canvas:
        raise HdjaxError(
            f"2K2K trains on perspective renders at model.canvas={cfg.model.canvas}, the "
            f"dataset holds {camera} renders at {size}² (build it with --config=twok2k, or "
            "set model.canvas)"
        )


def recipe(cfg: ml_collections.ConfigDict, source) -> Recipe:
    """The 2K2K `Recipe` for the training loop."""
    check_source(cfg, source)
    geom = K.geometry(cfg.model.canvas)
    model = K.TwoK2K(K.numerics_from_config(cfg.model.numerics), cfg.model.width)
    variables = K.init_variables(jax.random.PRNGKey(cfg.seed), width=cfg.model.width)
    # One epoch = the training split once, at the global batch.
    global_batch = cfg.input.pipeline.batch_size * jax.process_count()
    steps_per_epoch = max(len(source) / global_batch, 1.0)
    log.info("2K2K: %d records, %.1f steps per epoch", len(source), steps_per_epoch)
    return Recipe(
        modes={name: "twok2k" for name in STAGES},
        params=variables,
        optimizer=lambda stage, v: make_optimizer(cfg, stage, v, steps_per_epoch),
        step=lambda name, tx: make_train_step(model, geom, name, tx),
        previews=lambda name, v, batch: preview_images(model, geom, name, v, batch),
        batch_keys=BATCH_KEYS,
    )


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs (or resumes) the 2K2K schedule of ``cfg`` in ``workdir``."""
    return run_schedule(cfg, workdir, recipe)

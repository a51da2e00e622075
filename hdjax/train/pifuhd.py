"""PIFuHD training: the normal networks, the coarse level and the fine level, in stages.

    python -m hdjax.main --config=pifuhd --workdir=W     # train is the default

`train_and_evaluate(config, workdir)` runs the stages of ``config.train.stages`` one after
the other through the shared loop (`hdjax.train.loop.run_schedule`; the paper's order:
normal nets, then the coarse level, then the fine level with the coarse level frozen), each
for its number of steps, with only its own subtree trained (`TRAINABLE`; the others get zero
updates through `optax.multi_transform`):

* ``normals``: pix2pixHD front/back nets on the whole image (`losses.normal_loss`);
* ``coarse``: coarse filter + MLP, every hourglass stack supervised (`losses.occupancy_bce`),
  on the normal nets' predictions (or the rendered normals, ``train.coarse_normals``);
* ``fine``: fine filter + MLP on random crops (``input.pipeline.crop_size``) of the
  fine-size image, fed the frozen coarse level's phi of the whole image.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
import optax

from hdjax.errors import HdjaxError
from hdjax.models import shipped
from hdjax.models.pifuhd import Params, PIFuHD, PIFuHDArch, init_params, numerics_from_config
from hdjax.train import input_pipeline, losses
from hdjax.train.loop import Recipe, Stage, TrainState, first_state, run_schedule

STAGES = ("normals", "coarse", "fine")
# The subtrees each stage trains (official parameter names).
TRAINABLE = {
    "normals": (("netG", "netF"), ("netG", "netB")),
    "coarse": (("netG", "image_filter"), ("netG", "mlp")),
    "fine": (("image_filter",), ("mlp",)),
}
# The pipeline mode that feeds each stage.
MODES = {"normals": "pifuhd_coarse", "coarse": "pifuhd_coarse", "fine": "pifuhd_fine"}


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
    gamma = cfg.train.occupancy_gamma or None  # 0: the official per-sample γ
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
        loss, per_stack = losses.occupancy_bce(logits, batch["labels"], in_bb, gamma)
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
    # The coarse MLP runs again for phi: detached, as the official `z_feat.detach()`
    # (train_full_pifu=False), so no gradient reaches the frozen coarse level.
    frozen_coarse = {"params": dict(params, netG=jax.lax.stop_gradient(params["netG"]))}
    out = model.apply(
        frozen_coarse,
        coarse,
        fine,
        batch["points"],
        calib_global=batch["calib_global"],
        calib_local=batch["calib_local"],
        method=PIFuHD.query,
    )
    loss, per_stack = losses.occupancy_bce(
        out["fine_logits"], batch["labels"], out["in_bb_fine"], gamma
    )
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


def initial_params(cfg: ml_collections.ConfigDict, arch: PIFuHDArch) -> Params:
    """The seed's random init, or ``train.init_weights`` (fine-tuning): a shipped name, a
    shipped `.npz`, an official `.pt` or a converted directory, of the config's architecture."""
    source = cfg.train.get("init_weights", "")
    if not source:
        return init_params(arch, cfg.seed)
    from hdjax.reconstruction.weights import open_weights  # reads .pt files: only when asked

    path = shipped.weights_path(source)
    weights = open_weights(path, arch)
    if weights.arch != arch:
        raise HdjaxError(
            "train.init_weights: the weights are of another architecture than the config's "
            "model.arch",
            path,
        )
    return jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, "float32"), weights.get(()))


def pifuhd_recipe(cfg: ml_collections.ConfigDict, source) -> Recipe:
    """PIFuHD's stages (`STAGES`) on ``source``, whose image size is checked first."""
    model = training_model(cfg)
    input_pipeline.check_sizes(cfg, model.arch, source)
    vgg = losses.vgg_features(cfg)
    return Recipe(
        modes=MODES,
        params=initial_params(cfg, model.arch),
        optimizer=lambda stage, params: make_optimizer(cfg, stage, params),
        step=lambda name, tx: make_train_step(model, name, tx, cfg, vgg),
        previews=lambda name, params, batch: preview_images(model, name, params, batch),
    )


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs (or resumes) the whole PIFuHD schedule of ``cfg`` in ``workdir``; returns the
    last state."""
    return run_schedule(cfg, workdir, pifuhd_recipe)

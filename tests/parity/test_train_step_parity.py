"""One training step of each PIFuHD stage: hdjax's loss and gradients vs the official modules.

The same weights (a random official `HGPIFuMRNet`, converted to hdjax by
`convert_state_dict`) and the same batch go through both sides; the loss and the gradient
of every parameter the stage trains (`hdjax.train.pifuhd.TRAINABLE`) are compared.

* hdjax: ``jax.value_and_grad`` of `hdjax.train.pifuhd.stage_loss`, with the training
  numerics for the trained nets and the inference numerics for the frozen ones, as
  `make_train_step` runs it.
* official (`pifu-hd`, the peer of `bench/train.py`): the modules' forward with labels and
  `CustomBCELoss`, then ``.backward()``:
  - coarse: ``HGPIFuNetwNML`` in train mode (every stack supervised), normals predicted by
    its ``netF``/``netB`` under ``no_grad`` as at test time, ``filter`` + ``query(labels=)``
    + ``get_error(γ)`` with γ as ``HGPIFuMRNet.query`` computes it (the in-box fraction of
    outside points; the coarse γ is the training script's, never released);
  - fine: ``HGPIFuMRNet.forward(..., rect=)`` (``train_full_pifu=False``: the coarse level
    frozen under ``no_grad``, phi detached), ``Err(occ:fine)`` with the official γ and
    w = N / #points-in-crop; crops at (row, col) = the official rect's (y1, x1);
  - normals: the pix2pixHD training loss is not in `pifu-hd` (only the generator). What is
    compared is the generators' gradient of L = L_feat + λ_l1 · L1 (λ_l1 =
    ``train.l1_weight``), with ``F.l1_loss`` on the official ``netF``/``netB`` outputs and
    L_feat = pix2pixHD's ``VGGLoss`` structure (the weights 1/32 … 1 on L1 distances of five
    feature maps, the target detached) on a stand-in feature extractor (2×2 average pools),
    since no pretrained VGG19 is available here. Not compared: VGG19 itself, and hdjax's
    1 − SSIM fallback (used when ``train.vgg19`` is empty; no official counterpart).

Not compared either: the optimiser update (RMSprop, `make_optimizer`), elementwise
arithmetic on these gradients; and points outside the coarse box at the coarse stage. The
official ``HGPIFuNetwNML.get_error`` takes no w, so its BCE is a mean over all N points
(those outside the box contribute ~0), where hdjax's `occupancy_bce` averages over the
in-box points only (as the fine level's w does): per sample the official coarse loss is
hdjax's × (#in-box / N). Here every point is inside [−1, 1]³; the pipeline samples in that
cube, so the two differ only by the few noisy surface samples leaving it. Which reduction
the unreleased training script used (and its coarse γ) is unknown, so hdjax is unchanged.

Architecture: the official hourglass hard-codes 256 channels and GroupNorm(32), so the
`pifuhd:tiny` widths cannot be built; the levels keep those widths with fewer stacks and
levels and small MLPs, the normal nets take the tiny config's size (ngf 8, 2 downsamplings,
1 residual block; `define_G` is patched while ``HGPIFuNetwNML`` is built, its 64/4/9 being
hard-coded), images are 32² (coarse) and 64² (fine, 32² crops, about half of the points
outside each crop), 2 samples × 256 points; the normals stage one 16² image.

Weights are random and well scaled (as `official_pifuhd.build_official`), the MLPs' last
layers rescaled so the logits spread with std ~2: a nearly constant field or saturated
sigmoids would leave most gradients at zero and prove little.

ReLU kinks: a gradient jumps where a ReLU input crosses 0, and float32 puts the two sides'
ReLU inputs ~1e-6 of their spread apart. An input that close to 0 takes different branches
on the two sides and changes a whole GroupNorm group's gradient: with 8² maps one such
element gave leaf errors up to 6e-2 in trials (where 1e-5 is float noise), by chance and
differently on every CPU. So the GroupNorm and hidden-MLP biases are set to ± `MARGIN_SHIFT`
standard deviations (each channel mostly on or mostly off), the data seeds are chosen, and
the test asserts from the official forward that every ReLU input of the trained nets stays
`MIN_MARGIN` of its spread away from 0: then both sides follow the same branches and the
gradients agree to float32 noise.

Tolerances (float32, see `TOLERANCES`): per gradient leaf, max |g_hdjax − g_official| /
max |g_official|; the loss, relative. Each defect in `test_defects_fail` (four flipped
labels, four flipped target pixels) must exceed them more than 5-fold.
"""

from __future__ import annotations

import argparse
import functools
import importlib

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIFuHD")

from hdjax.configs.pifuhd import get_config  # noqa: E402
from hdjax.models.pifuhd import PIFuHD, numerics_from_config  # noqa: E402
from hdjax.models.pifuhd_official import (  # noqa: E402
    _to_flax_layout,
    arch_from_options,
    convert_state_dict,
    official_key,
)
from hdjax.train import losses  # noqa: E402
from hdjax.train.pifuhd import TRAINABLE, frozen_model, stage_loss  # noqa: E402

pytestmark = pytest.mark.xdist_group("train_parity")

COARSE, FINE, CROP = 32, 64, 32
BATCH, POINTS = 2, 256
NORMAL_SIZE = 16  # the normals stage: one 16² image (fewer ReLU inputs near 0, see SEEDS)
NGF, N_DOWN, N_BLOCKS = 8, 2, 1
# GroupNorm and hidden MLP biases: ± this many standard deviations of the ReLU inputs.
MARGIN_SHIFT = 3.5
# (row, col) of each sample's crop in the FINE² image.
OFFSETS = np.array([[8, 24], [30, 2]], np.int32)
# The data seed of each stage's batch (the weights and their calibration data have their
# own), chosen so that the official forward keeps every ReLU input at least MIN_MARGIN
# standard deviations from 0 (the normal nets' affine-free InstanceNorms cannot be shifted
# away from it; seeds 1-7 measured 1.3e-5 ... 8e-5 there).
SEEDS = {"normals": 7, "coarse": 1, "fine": 1}
# float32 puts hdjax's and the official ReLU inputs ~1e-6 of their spread apart.
MIN_MARGIN = 5e-5
# Relative errors (see `_compare`). Measured maxima on a 2-core x86-64 over data seeds 1-7
# (normals) and 1-4 (coarse, fine), none with a kink crossed (margins >= 1.3e-5, 1.3e-4,
# 3.8e-5), normals / coarse / fine: loss 2.5e-7 / 6.3e-7 / 3.4e-6, worst gradient leaf
# 6.8e-6 / 5.0e-5 / 2.0e-5; at the chosen seeds 1.3e-7 / 2.2e-7 / 1.8e-6 and 3.6e-6 /
# 2.4e-5 / 1.9e-6. Tolerances 7x-10x above the maxima.
TOLERANCES = {
    "normals": dict(loss=2e-6, grad=5e-5),
    "coarse": dict(loss=5e-6, grad=5e-4),
    "fine": dict(loss=2.5e-5, grad=2e-4),
}
# A leaf gradient below this fraction of the stage's largest is analytically zero.
ZERO_GRAD = 1e-5


def _options():
    common = dict(norm="group", mlp_norm="none", z_size=200.0, use_compose=False)
    opt_netG = argparse.Namespace(
        num_stack=2,
        hg_depth=1,
        hg_dim=16,
        hg_down="ave_pool",
        mlp_dim=[17, 32, 16, 8, 1],
        mlp_res_layers=[2],
        merge_layer=2,  # phi: 8-d
        use_front_normal=True,
        use_back_normal=True,
        loadSize=COARSE,
        hdjax_normal_ngf=NGF,
        hdjax_normal_n_down=N_DOWN,
        hdjax_normal_n_blocks=N_BLOCKS,
        **common,
    )
    opt = argparse.Namespace(
        num_stack=1,
        hg_depth=2,
        hg_dim=8,
        hg_down="no_down",
        mlp_dim=[16, 16, 8, 1],  # 8 image features + 8 phi
        mlp_res_layers=[1],
        merge_layer=-1,
        loadSize=FINE,
        loadSizeBig=FINE,
        loadSizeLocal=CROP,
        train_full_pifu=False,
        **common,
    )
    return opt, opt_netG


def _build_official(opt, opt_netG):
    from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML
    from PIFuHD.net_util import CustomBCELoss
    from PIFuHD.networks import define_G

    def tiny_generator(*_, **__):
        return define_G(3, 3, NGF, "global", N_DOWN, N_BLOCKS, 1, 3, "instance")

    torch.manual_seed(0)
    criteria = {"occ": CustomBCELoss()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            importlib.import_module("PIFuHD.model.HGPIFuNetwNML"), "define_G", tiny_generator
        )
        net_g = HGPIFuNetwNML(opt_netG, "orthogonal", criteria=criteria)
    assert net_g.netF.model[1].out_channels == NGF
    net = HGPIFuMRNet(opt, net_g, "orthogonal", criteria=criteria)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                gain = 3.0 if ".filters." in name else 1.4
                p.copy_(torch.randn(p.shape, generator=gen) * gain / np.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        # Every GroupNorm feeds a ReLU: a bias of ±MARGIN_SHIFT scales per channel keeps its
        # inputs away from the kink (each channel mostly on or mostly off, both kinds).
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                sign = torch.randint(0, 2, m.bias.shape, generator=gen) * 2.0 - 1.0
                m.bias.copy_(sign * MARGIN_SHIFT * m.weight)
    return net


def _crop_calib(row: int, col: int) -> np.ndarray:
    """The projection into the crop at (row, col) of the FINE² image: global NDC scaled by
    FINE / CROP and shifted (about half of the box falls outside the crop)."""
    s = FINE / CROP
    c = np.diag([s, -s, 1.0, 1.0])
    c[0, 3] = s - 2 * col / CROP - 1
    c[1, 3] = s - 2 * row / CROP - 1
    return c.astype(np.float32)


def _batch(stage: str, seed: int) -> dict[str, np.ndarray]:
    """An hdjax batch of ``stage`` (NHWC, points (B, N, 3); `random_batch`'s keys), every
    point inside the coarse box [−1, 1]³, about half of them inside each fine crop."""
    rng = np.random.default_rng(seed)

    def img(s, n=BATCH):
        return rng.uniform(-1, 1, (n, s, s, 3)).astype(np.float32)

    if stage == "normals":
        return dict(image=img(NORMAL_SIZE, 1), normal_front=img(NORMAL_SIZE, 1),
                    normal_back=img(NORMAL_SIZE, 1))  # fmt: skip
    calib = np.tile(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32), (BATCH, 1, 1))
    out = dict(
        points=rng.uniform(-1, 1, (BATCH, POINTS, 3)).astype(np.float32),
        labels=(rng.random((BATCH, POINTS)) < 0.4).astype(np.float32),
        calib_global=calib,
    )
    if stage == "coarse":
        return dict(out, image=img(COARSE))
    return dict(
        out,
        image=img(CROP),
        image_global=img(COARSE),
        crop_offset=OFFSETS,
        calib_local=np.stack([_crop_calib(r, c) for r, c in OFFSETS]),
    )


def _t(x, layout=None):
    x = np.asarray(x)
    if layout == "image":
        x = x.transpose(0, 3, 1, 2)
    elif layout == "points":
        x = x.transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(x))


def _official_logits(net, stage, b):
    """Pre-sigmoid predictions of the stage's stacks (the official query, last op off)."""
    mlp = net.netG.mlp if stage == "coarse" else net.mlp
    last, mlp.last_op = mlp.last_op, None
    try:
        with torch.no_grad():
            if stage == "coarse":
                net.netG.train()
                net.netG.filter(_t(b["image"], "image"))
                net.netG.query(_t(b["points"], "points"), _t(b["calib_global"]))
                return torch.stack(net.netG.intermediate_preds_list).numpy()
            net.train()
            net.filter_global(_t(b["image_global"], "image"))
            net.filter_local(_t(b["image"], "image")[:, None], _rect(b))
            pts = _t(b["points"], "points")[:, None]
            net.query(pts, _t(b["calib_local"])[:, None], _t(b["calib_global"]))
            return net.preds_interm.numpy()
    finally:
        mlp.last_op = last


def _rect(b) -> torch.Tensor:
    row, col = b["crop_offset"][:, 0], b["crop_offset"][:, 1]
    return torch.from_numpy(np.stack([col, row, col + CROP, row + CROP], -1)[:, None])


def _in_crop(b) -> np.ndarray:
    """(B, N) bool: the points inside each sample's crop (x, y of `calib_local` in [−1, 1])."""
    xyz = np.einsum("bij,bnj->bni", b["calib_local"][:, :3, :3], b["points"])
    xyz = xyz + b["calib_local"][:, None, :3, 3]
    return np.all(np.abs(xyz[..., :2]) <= 1, -1)


def _kink_inputs(net, stage):
    """The modules whose outputs enter a ReLU / leaky ReLU in the stage's trained nets."""
    if stage == "normals":  # the ReLU modules themselves (their inputs are recorded)
        nets = (net.netG.netF, net.netG.netB)
        return [m for n in nets for m in n.modules() if isinstance(m, torch.nn.ReLU)]
    level = net.netG if stage == "coarse" else net
    norms = [m for m in level.image_filter.modules() if isinstance(m, torch.nn.GroupNorm)]
    return norms + list(level.mlp.filters[:-1])


class _Capture:
    """Records (clones of) the outputs of ``modules`` while active."""

    def __init__(self, modules):
        self.modules, self.out = list(modules), {}

    def __enter__(self):
        def record(i, x):
            self.out.setdefault(i, []).append(x.detach().clone())

        def hook(i, m):
            if isinstance(m, torch.nn.ReLU):  # in place: record its input, before it runs
                return m.register_forward_pre_hook(lambda _, inp: record(i, inp[0]))
            return m.register_forward_hook(lambda _, inp, out: record(i, out))

        self.handles = [hook(i, m) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _points_kept(x: torch.Tensor, keep) -> np.ndarray:
    """(B, C, N) per-point values -> (C, n) of the points whose gradient counts."""
    x = x.double().numpy()
    if keep is None:
        return x.transpose(1, 0, 2).reshape(x.shape[1], -1)
    return np.concatenate([x[i][:, keep[i]] for i in range(len(x))], -1)


def _shift_mlps(net, batches) -> None:
    """Sets each hidden MLP layer's biases to ±MARGIN_SHIFT standard deviations of its
    pre-activation (centred, random sign per channel): leaky ReLUs away from their kink."""
    gen = torch.Generator().manual_seed(1)
    for stage, mlp in (("coarse", net.netG.mlp), ("fine", net.mlp)):
        keep = _in_crop(batches["fine"]) if stage == "fine" else None
        for layer in mlp.filters[:-1]:
            with _Capture([layer]) as cap:
                _official_logits(net, stage, batches[stage])
            x = np.concatenate([_points_kept(o, keep) for o in cap.out[0]], -1)
            sign = torch.randint(0, 2, layer.bias.shape, generator=gen) * 2.0 - 1.0
            with torch.no_grad():
                layer.bias.sub_(torch.from_numpy(x.mean(-1)).float())
                layer.bias.add_(sign * MARGIN_SHIFT * torch.from_numpy(x.std(-1)).float())


def _kink_margin(cap, stage, b) -> float:
    """min |x| / std(x) over every ReLU input recorded by ``cap`` (per module; for the MLPs
    per channel, over the points whose gradient counts)."""
    keep = _in_crop(b) if stage == "fine" else None
    margin = np.inf
    for i, outs in cap.out.items():
        if isinstance(cap.modules[i], (torch.nn.GroupNorm, torch.nn.ReLU)):
            for o in outs:
                x = o.double().numpy()
                margin = min(margin, np.abs(x).min() / x.std())
        else:
            x = np.concatenate([_points_kept(o, keep) for o in outs], -1)
            margin = min(margin, float((np.abs(x).min(-1) / x.std(-1)).min()))
    return float(margin)


def _calibrate(net, batches) -> None:
    """Rescales both MLPs' last layers so the (in-box) logits spread with std ~2."""
    for stage, mlp in (("coarse", net.netG.mlp), ("fine", net.mlp)):
        logits = _official_logits(net, stage, batches[stage])
        scale = 2.0 / float(logits[logits != 0].std())
        with torch.no_grad():
            mlp.filters[-1].weight.mul_(scale)
            mlp.filters[-1].bias.mul_(scale)


def _features(x, pool):
    """Stand-in for VGG19's five feature maps: the map and four 2×2 average pools of it."""
    out = [x]
    for _ in range(4):
        out.append(pool(out[-1]))
    return out


def _pool_nhwc(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


def _official_loss(net, stage, b, l1_weight):
    """The official forward + loss of one stage on batch ``b``, grads zeroed first."""
    net.zero_grad(set_to_none=True)
    if stage == "normals":
        image = _t(b["image"], "image")
        total = 0.0
        for gen, side in ((net.netG.netF, "front"), (net.netG.netB, "back")):
            pred, target = gen(image), _t(b[f"normal_{side}"], "image")
            fp = _features(pred, lambda x: torch.nn.functional.avg_pool2d(x, 2))
            ft = _features(target, lambda x: torch.nn.functional.avg_pool2d(x, 2))
            feat = sum(
                w * torch.nn.functional.l1_loss(p, t.detach())
                for w, p, t in zip(losses.VGG_LAYER_WEIGHTS, fp, ft, strict=True)
            )
            total = total + feat + l1_weight * torch.nn.functional.l1_loss(pred, target)
        return total
    pts, labels = _t(b["points"], "points"), _t(b["labels"])[:, None]
    calib_g = _t(b["calib_global"])
    if stage == "coarse":
        net_g = net.netG
        net_g.train()
        net_g.filter(_t(b["image"], "image"))  # the normal nets run under no_grad inside
        net_g.query(pts, calib_g, labels=labels)
        with torch.no_grad():  # γ as HGPIFuMRNet.query: the in-box fraction of outside points
            xyz = net_g.projection(pts, calib_g)
            in_bb = ((xyz >= -1) & (xyz <= 1)).all(1).float()
            gamma = 1 - (in_bb * labels[:, 0]).sum(1) / in_bb.sum(1)
        return net_g.get_error(gamma)["Err(occ)"]
    net.train()  # train_full_pifu=False: netG in eval mode, filter_global under no_grad
    err, _ = net.forward(
        _t(b["image"], "image")[:, None],
        _t(b["image_global"], "image"),
        pts[:, None],
        _t(b["calib_local"])[:, None],
        calib_g,
        labels[:, None],
        rect=_rect(b),
    )
    return err["Err(occ:fine)"]


@pytest.fixture(scope="module")
def case():
    opt, opt_netG = _options()
    net = _build_official(opt, opt_netG)
    calibration = {stage: _batch(stage, 0) for stage in ("coarse", "fine")}
    _shift_mlps(net, calibration)
    _calibrate(net, calibration)
    batches = {stage: _batch(stage, seed) for stage, seed in SEEDS.items()}
    arch = arch_from_options(vars(opt), vars(opt_netG))
    state_dict = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    params = convert_state_dict(state_dict, arch, to_device=np.asarray)
    cfg = get_config("tiny")
    cfg.train.coarse_normals = "predicted"
    model = PIFuHD(arch, numerics_from_config(cfg.model.numerics, training=True))
    frozen = frozen_model(arch, cfg)
    vgg = functools.partial(_features, pool=_pool_nhwc)

    @functools.cache
    def step(stage):
        def loss_fn(p, b):
            return stage_loss(model, stage, p, b, cfg, vgg if stage == "normals" else None, frozen)

        return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    return dict(net=net, arch=arch, params=params, batches=batches, cfg=cfg, step=step)


def _subtree(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _fine_clamp_term(b) -> float:
    """What the official fine loss adds for points outside the crop: their prediction is
    zeroed and clamped to 1e-5, costing −(1−γ)·log(1 − 1e-5) each, rescaled by w / N
    (hdjax leaves them out; `losses.occupancy_bce`)."""
    in_bb = _in_crop(b)
    count = in_bb.sum(-1)
    gamma = 1 - (b["labels"] * in_bb).sum(-1) / count
    per_point = -(1 - gamma) * np.log(np.float32(1 - 1e-5))
    return float(np.mean(per_point * (~in_bb).sum(-1) / count))


def _module(net, path):
    for k in path:
        net = getattr(net, k)
    return net


def _compare(case, stage, hdjax_batch=None) -> dict:
    """One step of ``stage`` on both sides: {"loss": relative error, "margin": the kink
    margin of the official forward, "grads": {official key: error}}.

    A leaf's error is max |g_hdjax − g_official| / max |g_official|; a leaf whose official
    gradient is below ZERO_GRAD of the stage's largest is analytically zero (the bias of a
    conv followed by an affine-free InstanceNorm) and is measured against that largest.
    """
    net, arch, b = case["net"], case["arch"], case["batches"][stage]
    (loss_h, _), grads = case["step"](stage)(
        case["params"], b if hdjax_batch is None else hdjax_batch
    )
    with _Capture(_kink_inputs(net, stage)) as cap:
        loss_t = _official_loss(net, stage, b, case["cfg"].train.l1_weight)
    loss_t.backward()
    loss_t = float(loss_t.detach())
    loss_h = float(loss_h) + (_fine_clamp_term(b) if stage == "fine" else 0.0)

    tensors = net.state_dict(keep_vars=True)
    trained = {id(p) for sub in TRAINABLE[stage] for p in _module(net, sub).parameters()}
    pairs, seen = {}, set()
    for sub in TRAINABLE[stage]:
        for path, g in jax.tree_util.tree_flatten_with_path(_subtree(grads, sub))[0]:
            key, kind = official_key(sub + tuple(k.key for k in path), arch)
            p = tensors[key]
            assert p.grad is not None, f"{key}: no official gradient"
            want = _to_flax_layout(p.grad.numpy().astype(np.float64), kind)
            pairs[key] = (np.asarray(g, np.float64), want)
            seen.add(id(p))
    # Every official parameter the stage trains has its hdjax gradient (the unused `bn4`
    # of blocks without a projection get none on either side).
    missing = [
        n for n, p in net.named_parameters() if id(p) in trained - seen and p.grad is not None
    ]
    assert not missing, missing
    # Nothing outside the stage's subtrees gets a gradient (official: no_grad / detach).
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        names = tuple(k.key for k in path)
        if not any(names[: len(s)] == s for s in TRAINABLE[stage]):
            assert not np.any(np.asarray(g)), f"{names} has a gradient"

    largest = max(np.abs(want).max() for _, want in pairs.values())
    errors = {}
    for key, (got, want) in pairs.items():
        scale = np.abs(want).max()
        scale = scale if scale > ZERO_GRAD * largest else largest
        errors[key] = float(np.abs(got - want).max() / scale)
    return dict(
        loss=abs(loss_h - loss_t) / abs(loss_t),
        losses=(loss_h, loss_t),
        margin=_kink_margin(cap, stage, b),
        grads=errors,
    )


def _failures(stage: str, err: dict) -> dict[str, float]:
    """Each quantity over its tolerance -> error / tolerance."""
    tol = TOLERANCES[stage]
    out = {k: v / tol["grad"] for k, v in err["grads"].items() if not v <= tol["grad"]}
    if not err["loss"] <= tol["loss"]:
        out["loss"] = err["loss"] / tol["loss"]
    return out


@pytest.mark.parametrize("stage", ["normals", "coarse", "fine"])
def test_step_matches_official(case, stage):
    err = _compare(case, stage)
    key = max(err["grads"], key=err["grads"].get)
    print(
        f"\n{stage}: loss hdjax {err['losses'][0]:.8g} official {err['losses'][1]:.8g} "
        f"(rel {err['loss']:.2g}); {len(err['grads'])} gradient leaves, worst {key} "
        f"{err['grads'][key]:.2g}; kink margin {err['margin']:.2g}"
    )
    # No ReLU input of the official forward lies within float32 noise of its kink, where
    # the two sides could take different branches (the gradient jumps there).
    assert err["margin"] >= MIN_MARGIN
    assert len(err["grads"]) > 30
    assert not _failures(stage, err), _failures(stage, err)


def _flip_labels(b):
    """Four points of the first sample (inside its crop) with the wrong label."""
    b = dict(b, labels=b["labels"].copy())
    inside = np.flatnonzero(_in_crop(b)[0]) if "calib_local" in b else np.arange(POINTS)
    b["labels"][0, inside[:4]] = 1 - b["labels"][0, inside[:4]]
    return b


def _flip_target(b):
    """Four pixels of the front target normal map with the wrong sign."""
    b = dict(b, normal_front=b["normal_front"].copy())
    b["normal_front"][0, 5, 3:7] *= -1
    return b


@pytest.mark.parametrize("stage", ["normals", "coarse", "fine"])
def test_defects_fail(case, stage):
    """The test can fail: a defect in a few of 256 points (labels) or of 256 pixels
    (targets) on the hdjax side misses the tolerances by a wide margin."""
    defect = _flip_target if stage == "normals" else _flip_labels
    failed = _failures(stage, _compare(case, stage, defect(case["batches"][stage])))
    assert failed, f"{defect.__name__} went unnoticed"
    print(f"\n{stage}: {len(failed)} quantities over tolerance, worst x{max(failed.values()):.3g}")
    assert max(failed.values()) > 5, failed

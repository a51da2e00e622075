"""The official side of the training parity checks: a small official PIFuHD, its batches, losses.

Shared by `test_train_step_parity.py` (one step: loss and gradients) and
`bench/train_curves.py` (300 steps of both sides' training), so both see the same nets.

Architecture: the official hourglass hard-codes 256 channels and GroupNorm(32), so the
`pifuhd:tiny` widths cannot be built; the levels keep those widths with fewer stacks and
levels and small MLPs, the normal nets take the tiny config's size (ngf 8, 2 downsamplings,
1 residual block; `define_G` is patched while ``HGPIFuNetwNML`` is built, its 64/4/9 being
hard-coded), images are 32² (coarse) and 64² (fine, 32² crops, about half of the points
outside each crop), 2 samples × 256 points; the normals stage one 16² image.

Weights are random and well scaled (as `official_pifuhd.build_official`), the MLPs' last
layers rescaled so the logits spread with std ~2 (`calibrate`): a nearly constant field or
saturated sigmoids would leave most gradients at zero and prove little. The GroupNorm and
hidden-MLP biases are set to ± `MARGIN_SHIFT` standard deviations of their ReLU inputs
(each channel mostly on or mostly off; `shift_mlps`), away from the kinks where float32
noise could send the two sides down different branches (see the test).

`build_case` gives the official net with those weights and its hdjax counterpart: the
converted params, the `pifuhd:tiny` config (predicted normals at the coarse stage), the
training model and the frozen one, as `make_train_step` runs them.
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import torch
from official_pifuhd import randomize_

from hdjax.configs.pifuhd import get_config
from hdjax.models.pifuhd import PIFuHD, numerics_from_config
from hdjax.models.pifuhd_official import arch_from_options, convert_state_dict
from hdjax.train import losses
from hdjax.train.pifuhd import frozen_model

COARSE, FINE, CROP = 32, 64, 32
BATCH, POINTS = 2, 256
NORMAL_SIZE = 16  # the normals stage: one 16² image (fewer ReLU inputs near 0, see SEEDS)
NGF, N_DOWN, N_BLOCKS = 8, 2, 1
# GroupNorm and hidden MLP biases: ± this many standard deviations of the ReLU inputs.
MARGIN_SHIFT = 3.5
# (row, col) of each sample's crop in the FINE² image.
OFFSETS = np.array([[8, 24], [30, 2]], np.int32)


def options():
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


def build_official(opt, opt_netG):
    from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML
    from PIFuHD.net_util import CustomBCELoss
    from PIFuHD.networks import define_G

    def tiny_generator(*_, **__):
        return define_G(3, 3, NGF, "global", N_DOWN, N_BLOCKS, 1, 3, "instance")

    torch.manual_seed(0)
    criteria = {"occ": CustomBCELoss()}
    module = importlib.import_module("PIFuHD.model.HGPIFuNetwNML")
    original, module.define_G = module.define_G, tiny_generator
    try:
        net_g = HGPIFuNetwNML(opt_netG, "orthogonal", criteria=criteria)
    finally:
        module.define_G = original
    assert net_g.netF.model[1].out_channels == NGF
    net = HGPIFuMRNet(opt, net_g, "orthogonal", criteria=criteria)
    gen = randomize_(net, 0)
    with torch.no_grad():
        # Every GroupNorm feeds a ReLU: a bias of ±MARGIN_SHIFT scales per channel keeps its
        # inputs away from the kink (each channel mostly on or mostly off, both kinds).
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                sign = torch.randint(0, 2, m.bias.shape, generator=gen) * 2.0 - 1.0
                m.bias.copy_(sign * MARGIN_SHIFT * m.weight)
    return net


def crop_calib(row: int, col: int) -> np.ndarray:
    """The projection into the crop at (row, col) of the FINE² image: global NDC scaled by
    FINE / CROP and shifted (about half of the box falls outside the crop)."""
    s = FINE / CROP
    c = np.diag([s, -s, 1.0, 1.0])
    c[0, 3] = s - 2 * col / CROP - 1
    c[1, 3] = s - 2 * row / CROP - 1
    return c.astype(np.float32)


def make_batch(stage: str, seed: int) -> dict[str, np.ndarray]:
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
        calib_local=np.stack([crop_calib(r, c) for r, c in OFFSETS]),
    )


def to_torch(x, layout=None):
    x = np.asarray(x)
    if layout == "image":
        x = x.transpose(0, 3, 1, 2)
    elif layout == "points":
        x = x.transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(x))


def official_logits(net, stage, b):
    """Pre-sigmoid predictions of the stage's stacks (the official query, last op off)."""
    mlp = net.netG.mlp if stage == "coarse" else net.mlp
    last, mlp.last_op = mlp.last_op, None
    try:
        with torch.no_grad():
            if stage == "coarse":
                net.netG.train()
                net.netG.filter(to_torch(b["image"], "image"))
                net.netG.query(to_torch(b["points"], "points"), to_torch(b["calib_global"]))
                return torch.stack(net.netG.intermediate_preds_list).numpy()
            net.train()
            net.filter_global(to_torch(b["image_global"], "image"))
            net.filter_local(to_torch(b["image"], "image")[:, None], crop_rect(b))
            pts = to_torch(b["points"], "points")[:, None]
            net.query(pts, to_torch(b["calib_local"])[:, None], to_torch(b["calib_global"]))
            return net.preds_interm.numpy()
    finally:
        mlp.last_op = last


def crop_rect(b) -> torch.Tensor:
    row, col = b["crop_offset"][:, 0], b["crop_offset"][:, 1]
    return torch.from_numpy(np.stack([col, row, col + CROP, row + CROP], -1)[:, None])


def in_crop(b) -> np.ndarray:
    """(B, N) bool: the points inside each sample's crop (x, y of `calib_local` in [−1, 1])."""
    xyz = np.einsum("bij,bnj->bni", b["calib_local"][:, :3, :3], b["points"])
    xyz = xyz + b["calib_local"][:, None, :3, 3]
    return np.all(np.abs(xyz[..., :2]) <= 1, -1)


class Capture:
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


def points_kept(x: torch.Tensor, keep) -> np.ndarray:
    """(B, C, N) per-point values -> (C, n) of the points whose gradient counts."""
    x = x.double().numpy()
    if keep is None:
        return x.transpose(1, 0, 2).reshape(x.shape[1], -1)
    return np.concatenate([x[i][:, keep[i]] for i in range(len(x))], -1)


def shift_mlps(net, batches) -> None:
    """Sets each hidden MLP layer's biases to ±MARGIN_SHIFT standard deviations of its
    pre-activation (centred, random sign per channel): leaky ReLUs away from their kink."""
    gen = torch.Generator().manual_seed(1)
    for stage, mlp in (("coarse", net.netG.mlp), ("fine", net.mlp)):
        keep = in_crop(batches["fine"]) if stage == "fine" else None
        for layer in mlp.filters[:-1]:
            with Capture([layer]) as cap:
                official_logits(net, stage, batches[stage])
            x = np.concatenate([points_kept(o, keep) for o in cap.out[0]], -1)
            sign = torch.randint(0, 2, layer.bias.shape, generator=gen) * 2.0 - 1.0
            with torch.no_grad():
                layer.bias.sub_(torch.from_numpy(x.mean(-1)).float())
                layer.bias.add_(sign * MARGIN_SHIFT * torch.from_numpy(x.std(-1)).float())


def calibrate(net, batches) -> None:
    """Rescales both MLPs' last layers so the (in-box) logits spread with std ~2."""
    for stage, mlp in (("coarse", net.netG.mlp), ("fine", net.mlp)):
        logits = official_logits(net, stage, batches[stage])
        scale = 2.0 / float(logits[logits != 0].std())
        with torch.no_grad():
            mlp.filters[-1].weight.mul_(scale)
            mlp.filters[-1].bias.mul_(scale)


def features(x, pool):
    """Stand-in for VGG19's five feature maps: the map and four 2×2 average pools of it."""
    out = [x]
    for _ in range(4):
        out.append(pool(out[-1]))
    return out


def pool_nhwc(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


def official_loss(net, stage, b, l1_weight):
    """The official forward + loss of one stage on batch ``b``, grads zeroed first."""
    net.zero_grad(set_to_none=True)
    if stage == "normals":
        image = to_torch(b["image"], "image")
        total = 0.0
        for gen, side in ((net.netG.netF, "front"), (net.netG.netB, "back")):
            pred, target = gen(image), to_torch(b[f"normal_{side}"], "image")
            fp = features(pred, lambda x: torch.nn.functional.avg_pool2d(x, 2))
            ft = features(target, lambda x: torch.nn.functional.avg_pool2d(x, 2))
            feat = sum(
                w * torch.nn.functional.l1_loss(p, t.detach())
                for w, p, t in zip(losses.VGG_LAYER_WEIGHTS, fp, ft, strict=True)
            )
            total = total + feat + l1_weight * torch.nn.functional.l1_loss(pred, target)
        return total
    pts, labels = to_torch(b["points"], "points"), to_torch(b["labels"])[:, None]
    calib_g = to_torch(b["calib_global"])
    if stage == "coarse":
        net_g = net.netG
        net_g.train()
        net_g.filter(to_torch(b["image"], "image"))  # the normal nets run under no_grad inside
        net_g.query(pts, calib_g, labels=labels)
        with torch.no_grad():  # γ as HGPIFuMRNet.query: the in-box fraction of outside points
            xyz = net_g.projection(pts, calib_g)
            in_bb = ((xyz >= -1) & (xyz <= 1)).all(1).float()
            gamma = 1 - (in_bb * labels[:, 0]).sum(1) / in_bb.sum(1)
        return net_g.get_error(gamma)["Err(occ)"]
    net.train()  # train_full_pifu=False: netG in eval mode, filter_global under no_grad
    err, _ = net.forward(
        to_torch(b["image"], "image")[:, None],
        to_torch(b["image_global"], "image"),
        pts[:, None],
        to_torch(b["calib_local"])[:, None],
        calib_g,
        labels[:, None],
        rect=crop_rect(b),
    )
    return err["Err(occ:fine)"]


def fine_clamp_term(b) -> float:
    """What the official fine loss adds for points outside the crop: their prediction is
    zeroed and clamped to 1e-5, costing −(1−γ)·log(1 − 1e-5) each, rescaled by w / N
    (hdjax leaves them out; `losses.occupancy_bce`)."""
    in_bb = in_crop(b)
    count = in_bb.sum(-1)
    gamma = 1 - (b["labels"] * in_bb).sum(-1) / count
    per_point = -(1 - gamma) * np.log(np.float32(1 - 1e-5))
    return float(np.mean(per_point * (~in_bb).sum(-1) / count))


def build_case() -> dict:
    """The official net (weights as described above, calibrated on seed-0 batches) and
    hdjax's side of it: ``net``, ``arch``, ``params``, ``cfg``, ``model`` (training
    numerics), ``frozen`` (inference numerics, for the nets a stage does not train)."""
    opt, opt_netG = options()
    net = build_official(opt, opt_netG)
    calibration = {stage: make_batch(stage, 0) for stage in ("coarse", "fine")}
    shift_mlps(net, calibration)
    calibrate(net, calibration)
    arch = arch_from_options(vars(opt), vars(opt_netG))
    state_dict = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    params = convert_state_dict(state_dict, arch, to_device=np.asarray)
    cfg = get_config("tiny")
    cfg.train.coarse_normals = "predicted"
    cfg.train.occupancy_gamma = 0.0  # the official per-sample λ (the tiny config fixes it)
    model = PIFuHD(arch, numerics_from_config(cfg.model.numerics, training=True))
    return dict(net=net, arch=arch, params=params, cfg=cfg, model=model,
                frozen=frozen_model(arch, cfg))  # fmt: skip

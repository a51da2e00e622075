"""Helpers that drive the official PIFuHD code (PyPI `pifu-hd`, torch) for parity tests."""

from __future__ import annotations

import argparse

import numpy as np


def official_options(small_images: bool) -> tuple[argparse.Namespace, argparse.Namespace]:
    """The option table of the released checkpoint (`spec/pifuhd.md` §1).

    small_images shrinks only loadSize/loadSizeBig (the networks are fully convolutional, so
    every weight keeps its official shape); the depth-feature scale follows loadSize.
    """
    coarse_size, fine_size = (128, 256) if small_images else (512, 1024)
    common = dict(norm="group", mlp_norm="none", z_size=200.0, use_compose=False)
    opt_netG = argparse.Namespace(
        num_stack=4,
        hg_depth=2,
        hg_dim=256,
        hg_down="ave_pool",
        mlp_dim=[257, 1024, 512, 256, 128, 1],
        mlp_res_layers=[2, 3, 4],
        merge_layer=2,
        use_front_normal=True,
        use_back_normal=True,
        loadSize=coarse_size,
        name="pifuhd_final_netG",
        **common,
    )
    opt = argparse.Namespace(
        num_stack=1,
        hg_depth=4,
        hg_dim=16,
        hg_down="no_down",
        mlp_dim=[272, 512, 256, 128, 1],
        mlp_res_layers=[1, 2],
        merge_layer=-1,
        loadSize=fine_size,
        loadSizeBig=fine_size,
        loadSizeLocal=fine_size // 2,
        train_full_pifu=False,
        name="pifuhd_final",
        crop_type="fullbody",
        **common,
    )
    return opt, opt_netG


def randomize_(net, seed: int):
    """Every parameter of ``net`` random and well scaled, in place (`build_official`);
    returns the generator, for draws that must follow these."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                # MLPs get more gain so that occupancies spread over (0, 1).
                gain = 3.0 if ".filters." in name else 1.4
                p.copy_(torch.randn(p.shape, generator=gen) * gain / np.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return gen


def build_official(opt, opt_netG, seed: int):
    """The official HGPIFuMRNet with every parameter random and well scaled.

    The official init (N(0, 0.02), GroupNorm 1/0) makes a nearly constant field, so parity
    would prove little: weights get std 1/sqrt(fan_in)·gain and norm affines and biases are
    random too, so a wrong scale/bias mapping or layout shows up.
    """
    import torch
    from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML

    torch.manual_seed(seed)
    net_g = HGPIFuNetwNML(opt_netG, "orthogonal")
    net = HGPIFuMRNet(opt, net_g, "orthogonal")
    randomize_(net, seed)
    net.eval()
    # Keep all coarse stacks (train mode changes nothing numerically: no BN, no dropout).
    net_g.train()
    return net


def calibrate_logits(net, img_coarse, img_fine, points, target_std: float = 4.0) -> None:
    """Rescales both MLPs' last layers so the logits spread with std ~target_std.

    Random deep MLPs give logits of magnitude ~100, where the sigmoid is saturated and float32
    rounding of the logit (~1e-5 relative) would dominate any occupancy comparison.
    """
    import torch

    out = run_official(net, img_coarse, img_fine, points)
    with torch.no_grad():
        for mlp, logits in ((net.mlp, out["fine_logit"]), (net.netG.mlp, out["coarse_logits"])):
            last = mlp.filters[-1]
            scale = target_std / float(np.std(logits))
            last.weight.mul_(scale)
            last.bias.mul_(scale)


def run_official(net, img_coarse: np.ndarray, img_fine: np.ndarray, points: np.ndarray):
    """Runs the official filters and queries; returns numpy arrays (NCHW as official).

    img_coarse (1, 3, S, S), img_fine (1, 3, 2S, 2S), points (1, 3, N) in the query frame.
    """
    import torch

    calib = torch.from_numpy(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32))[None]
    out = {}
    with torch.no_grad():
        net.filter_global(torch.from_numpy(img_coarse))
        net.filter_local(torch.from_numpy(img_fine)[:, None])
        pts = torch.from_numpy(points)
        net.query(pts, calib)
        out["occ"] = net.get_preds()[0, 0].numpy()
        out["coarse_occ"] = torch.stack(net.netG.intermediate_preds_list)[:, 0, 0].numpy()
        out["phi"] = net.netG.phi[0].numpy()
        # Logits: the same query with the sigmoids taken off.
        sig_fine, sig_coarse = net.mlp.last_op, net.netG.mlp.last_op
        net.mlp.last_op = net.netG.mlp.last_op = None
        net.query(pts, calib)
        out["fine_logit"] = net.preds_interm[0, 0, 0].numpy()
        out["coarse_logits"] = torch.stack(net.netG.intermediate_preds_list)[:, 0, 0].numpy()
        net.mlp.last_op, net.netG.mlp.last_op = sig_fine, sig_coarse
        out["nmlF"] = net.netG.nmlF[0].numpy()
        out["nmlB"] = net.netG.nmlB[0].numpy()
        out["coarse_feats"] = [f[0].numpy() for f in net.netG.im_feat_list]
        out["fine_feat"] = net.im_feat_list[-1][0].numpy()
    return out

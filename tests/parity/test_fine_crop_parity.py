"""The fine level on a training crop vs the official `HGPIFuMRNet.filter_local(images, rect)`.

Only the fine filter and the normal maps matter here, so the official net is built without
normal nets (their maps are set directly) at small sizes: fine_size (loadSizeBig) 64, crops
of 32², two samples with different rects.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIFuHD")

from hdjax.models.pifuhd import PIFuHD  # noqa: E402
from hdjax.models.pifuhd_official import arch_from_options, convert_state_dict  # noqa: E402

FINE, CROP, COARSE = 64, 32, 32
RECTS = [(16, 8, 16 + CROP, 8 + CROP), (32, 24, 32 + CROP, 24 + CROP)]  # (x1, y1, x2, y2)


def _options():
    common = dict(norm="group", mlp_norm="none", z_size=200.0, merge_layer=-1)
    opt_netG = argparse.Namespace(
        num_stack=1,
        hg_depth=1,
        hg_dim=8,
        hg_down="ave_pool",
        mlp_dim=[9, 8, 1],
        mlp_res_layers=[],
        use_front_normal=False,  # no normal nets built; switched on below
        use_back_normal=False,
        loadSize=COARSE,
        **common,
    )
    opt = argparse.Namespace(
        num_stack=1,
        hg_depth=4,
        hg_dim=16,
        hg_down="no_down",
        mlp_dim=[24, 8, 1],
        mlp_res_layers=[],
        loadSize=FINE,
        loadSizeBig=FINE,
        train_full_pifu=False,
        **common,
    )
    return opt, opt_netG


@pytest.fixture(scope="module")
def crop_case():
    from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML

    opt, opt_netG = _options()
    torch.manual_seed(0)
    net_g = HGPIFuNetwNML(opt_netG, "orthogonal")
    opt_netG.use_front_normal = opt_netG.use_back_normal = True
    net = HGPIFuMRNet(opt, net_g, "orthogonal")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.image_filter.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 1.4 / np.sqrt(p[0].numel()))
            else:
                p.copy_(
                    (0.5 if name.endswith("weight") else 0.0) + torch.rand(p.shape, generator=gen)
                )
    net.eval()
    rng = np.random.default_rng(0)
    nml_f = rng.uniform(-1, 1, (2, 3, COARSE, COARSE)).astype(np.float32)
    nml_b = rng.uniform(-1, 1, (2, 3, COARSE, COARSE)).astype(np.float32)
    crops = rng.uniform(-1, 1, (2, 1, 3, CROP, CROP)).astype(np.float32)
    net.netG.nmlF, net.netG.nmlB = torch.from_numpy(nml_f), torch.from_numpy(nml_b)
    with torch.no_grad():
        net.filter_local(torch.from_numpy(crops), torch.tensor(RECTS)[:, None])
        ref = net.im_feat_list[-1].numpy()

    arch = arch_from_options(vars(opt), vars(opt_netG))
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    params = convert_state_dict(sd, arch, ("image_filter",))
    nhwc = lambda x: jnp.asarray(np.moveaxis(x, -3, -1))  # noqa: E731
    return dict(
        ref=ref,
        model=PIFuHD(arch),
        params={"params": {"image_filter": params}},
        crops=nhwc(crops[:, 0]),
        normals=[nhwc(nml_f), nhwc(nml_b)],
    )


def _ours(case, offset):
    model = case["model"]
    fn = jax.jit(lambda v, x, n, o: model.apply(v, x, n, o, method=PIFuHD.fine_features))
    return np.moveaxis(
        np.asarray(fn(case["params"], case["crops"], case["normals"], offset)[-1]), -1, 1
    )


def test_fine_crop_matches_official_filter_local(crop_case):
    offset = jnp.array([(y1, x1) for x1, y1, _, _ in RECTS], jnp.int32)
    got, ref = _ours(crop_case, offset), crop_case["ref"]
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"fine crop features: max err {err:.3g} of range")
    assert err <= 1e-3


def test_whole_image_resize_is_not_the_crop(crop_case):
    """The pre-crop behaviour (normals squeezed to the crop's size) differs from the official."""
    got, ref = _ours(crop_case, None), crop_case["ref"]
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"normals resized to the crop instead: max err {err:.3g} of range")
    assert err > 0.05

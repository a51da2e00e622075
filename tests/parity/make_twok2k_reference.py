"""Regenerates `twok2k_reference.npz` with the official 2K2K code (run by hand, not in CI).

    python tests/parity/make_twok2k_reference.py /path/to/2K2K [--out tests/parity/...]

The official repository is not on PyPI: check it out (github.com/SangHunHan92/2K2K) and give
its root. This builds `Model_2K2K(phase=2)` on CPU (the demo hard-codes CUDA), loads the
random weights of `twok2k_recipe` (strict), runs the forward on the recipe's image and
transforms and stores the reduced outputs (`twok2k_recipe.reduce_outputs`), converted to
hdjax's names and NHWC layout. torchvision is only needed for its GaussianBlur: when it is
not installed, a stand-in with torchvision's documented semantics (normalised 1-D Gaussian
on taps -(k-1)/2..(k-1)/2, outer product, reflect padding, depthwise conv) is used.
Needs torch and about 9 GiB of RAM (the official forward at 2048^2).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import twok2k_recipe as recipe  # noqa: E402


def _install_blur_stub(torch) -> None:
    """A `torchvision.transforms.GaussianBlur` stand-in (when torchvision is missing)."""
    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        pass
    F = torch.nn.functional

    class GaussianBlur(torch.nn.Module):
        def __init__(self, kernel_size, sigma):
            super().__init__()
            self.k = kernel_size[0]
            self.sigma = float(sigma)

        def forward(self, img):
            half = (self.k - 1) * 0.5
            x = torch.linspace(-half, half, steps=self.k)
            pdf = torch.exp(-0.5 * (x / self.sigma).pow(2))
            k1 = pdf / pdf.sum()
            k2 = torch.mm(k1[:, None], k1[None, :]).to(img.dtype)
            c = img.shape[-3]
            k2 = k2.expand(c, 1, self.k, self.k)
            p = self.k // 2
            img = F.pad(img, [p, p, p, p], mode="reflect")
            return F.conv2d(img, k2, groups=c)

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.GaussianBlur = GaussianBlur
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tv.transforms


def official_module(repo: str, name: str, substitute: dict[str, str] | None = None):
    """The official ``models/<name>.py`` of the checkout at ``repo``, imported on its own
    (not through ``models/__init__``). ``substitute``: literal source replacements, each of
    which must occur exactly once (so a changed upstream file fails loudly)."""
    import torch

    _install_blur_stub(torch)
    path = os.path.join(repo, "models", f"{name}.py")
    with open(path) as f:
        source = f.read()
    for old, new in (substitute or {}).items():
        if source.count(old) != 1:
            raise SystemExit(f"{path}: expected {old!r} exactly once")
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = path
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def official_model(repo: str, state_dict: dict):
    import torch

    module = official_module(repo, "deep_human_models")
    model = module.Model_2K2K(phase=2)
    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def official_forward(repo: str) -> tuple[dict, float]:
    """The official outputs (hdjax names, NHWC numpy) and the forward's seconds."""
    import torch

    from hdjax.models.twok2k_official import official_shapes

    torch.set_grad_enabled(False)
    model = official_model(repo, recipe.random_state_dict(official_shapes()))
    x = torch.from_numpy(recipe.parity_image().transpose(0, 3, 1, 2).copy())
    theta = torch.from_numpy(recipe.parity_theta())
    t0 = time.perf_counter()
    res = model(x, theta, 0)
    seconds = time.perf_counter() - t0
    out = {}
    for name in recipe.PART_NETS:
        for side in ("front", "back"):
            out[f"{name}_normal_{side}"] = res[f"pred_{name}_normal_{side}"]
    for k in ("down_normal_front", "down_normal_back", "normal_front", "normal_back"):
        out[k] = res[f"pred_{k}"]
    for k in ("down_depth_front", "down_depth_back", "down_depth_mask"):
        out[k] = res[f"pred_{k}"][:, 0]
    for k in ("depth_front", "depth_back"):
        out[k] = res[f"pred_{k}"][:, 0]
    out["depth_mask"] = res["pred_depth_mask"][:, 0]
    out = {k: v.numpy() for k, v in out.items()}
    out = {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for k, v in out.items()}
    out["inv_theta"] = res["inv_z"].numpy()
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", help="root of a 2K2K checkout (holds models/deep_human_models.py)")
    ap.add_argument("--out", default=os.path.join(HERE, "twok2k_reference.npz"))
    ap.add_argument("--full", help="also save every full output here (large, for debugging)")
    ap.add_argument(
        "--from-full",
        help="reduce a file saved earlier with --full instead of running the official code",
    )
    args = ap.parse_args()
    if args.from_full:
        out, seconds = dict(np.load(args.from_full)), float("nan")
    else:
        out, seconds = official_forward(args.repo)
    if args.full:
        np.savez(args.full, **out)
    np.savez_compressed(args.out, **recipe.reduce_outputs(out), seed=np.int64(recipe.SEED))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"official forward {seconds:.1f} s, peak RSS {rss:.2f} GiB -> {args.out}")


if __name__ == "__main__":
    main()

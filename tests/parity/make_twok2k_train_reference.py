"""Regenerates `twok2k_train_reference.npz`: one official 2K2K training step of each phase
(loss and gradients), run by hand beside an official checkout, not in CI.

    python tests/parity/make_twok2k_train_reference.py /path/to/2K2K [--out ...]

What it runs is the official ``train.py``'s step: ``model.train()``, then
``LossBuilderHuman_2048.build_loss(model, image, front_depth, back_depth, mask,
init_affine, phase, epoch, path)`` and ``loss.backward()``:

* phase 1: ``Model_2K2K(phase=1)`` (no refiner) with every network trainable: 12 normal
  pairs (5 part nets + down, front and back), low-res depth, consistency and mask terms;
* phase 2: ``Model_2K2K(phase=2)`` with ``requires_grad`` off everywhere but ``refine`` (as
  ``train.py`` sets it): full-size depth, consistency and mask terms.

Size (`twok2k_recipe.TRAIN_CANVAS`, `TRAIN_WIDTH`): a 640^2 canvas (the official forward
takes the canvas from the image; the part crops stay the official sizes) and every hidden
width / 8 (base width 8, the hdjax ``tiny`` config's). Two things are changed in the
official code to get there, both sizes, not computations: (1) the literal
``ho, wo = [2048, 2048]`` in ``Refine_2048.forward`` becomes the canvas; (2) the
module's ``nn.Conv2d`` / ``nn.BatchNorm2d`` take channel counts >= 16 divided by 8 (the
counts below 16 are the fixed 1, 2, 3 and 6 of inputs and heads). The weights (the recipe's
random ones, loaded strict) must then have exactly hdjax's base-width-8 shapes.

Stored (`npz`, official key names and OIHW layouts): the loss, its four sums (``lossN``,
``lossD``, ``lossC``, ``lossM``) and, per normal pair in the official order, its L1 and
1 - SSIM; per trained parameter the gradient's norm and 8 sampled entries
(`twok2k_recipe.reduce_grads`); the BatchNorm running statistics after the step; phase 2's
low-res mask (to tell threshold ties). Needs torch, pytorch_msssim; ~1 GB, ~20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", "Default grid_sample", UserWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import twok2k_recipe as recipe  # noqa: E402
from make_twok2k_reference import official_module  # noqa: E402

SCALE = 64 // recipe.TRAIN_WIDTH


def _scaled_nn(torch):
    """A stand-in for the official module's ``nn``: Conv2d and BatchNorm2d with hidden
    channel counts (>= 16) divided by `SCALE`, everything else torch.nn's."""
    import types

    def s(c):
        return c // SCALE if c >= 16 else c

    class Conv2d(torch.nn.Conv2d):
        def __init__(self, cin, cout, *args, **kwargs):
            super().__init__(s(cin), s(cout), *args, **kwargs)

    class BatchNorm2d(torch.nn.BatchNorm2d):
        def __init__(self, c, *args, **kwargs):
            super().__init__(s(c), *args, **kwargs)

    ns = types.SimpleNamespace(**{k: getattr(torch.nn, k) for k in dir(torch.nn)})
    ns.Conv2d, ns.BatchNorm2d = Conv2d, BatchNorm2d
    return ns


def official_parts(repo: str):
    import torch

    canvas = recipe.TRAIN_CANVAS
    models = official_module(
        repo,
        "deep_human_models",
        {"ho, wo = [2048, 2048]": f"ho, wo = [{canvas}, {canvas}]"},
    )
    models.nn = _scaled_nn(torch)
    return models, official_module(repo, "loss_builder")


def train_shapes() -> dict[str, tuple[int, ...]]:
    """Official key -> PyTorch shape of hdjax's `TwoK2K` at the training width."""
    import jax

    from hdjax.models.twok2k_official import official_key, variable_shapes

    out = {}
    for collection, tree in variable_shapes(recipe.TRAIN_WIDTH).items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            key, kind = official_key(collection, tuple(k.key for k in path))
            shape = leaf.shape if kind != "conv" else tuple(np.array(leaf.shape)[[3, 2, 0, 1]])
            out[key] = tuple(int(n) for n in shape)
    return out


def batch(torch):
    """The official training batch (NCHW): image, front/back depth (D), mask, init_affine."""
    x = recipe.parity_image(canvas=recipe.TRAIN_CANVAS).transpose(0, 3, 1, 2)
    front, back = recipe.train_depths()
    return {
        "image": torch.from_numpy(x.copy()),
        "front": torch.from_numpy(front[:, None].copy()),
        "back": torch.from_numpy(back[:, None].copy()),
        "mask": torch.from_numpy((front[:, None] > 0).astype(np.float32)),
        "theta": torch.from_numpy(recipe.parity_theta()),
    }


def run_phase(models, loss_builder, phase: int, state_dict: dict) -> dict:
    import torch

    model = models.Model_2K2K(phase=phase)
    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
    if phase == 1:
        sd = {k: v for k, v in sd.items() if not k.startswith("refine.")}
    model.load_state_dict(sd, strict=True)
    if phase == 2:  # train.py
        for p in model.parameters():
            p.requires_grad = False
        for p in model.refine.parameters():
            p.requires_grad = True
    model.train()
    lb = loss_builder.LossBuilderHuman_2048(device=None)
    # Record each normal pair's L1 and 1 - SSIM in the order build_loss computes them.
    pairs = {"l1": [], "ssim": []}
    get_losses, get_ssim = lb.get_losses, lb.get_ssim_loss

    def losses_hook(pred, target, loss_type="l1", **kw):
        out = get_losses(pred, target, loss_type=loss_type, **kw)
        if loss_type == "l1":
            pairs["l1"].append(float(out))
        return out

    def ssim_hook(pred, target):
        out = get_ssim(pred, target)
        pairs["ssim"].append(float(out))
        return out

    lb.get_losses, lb.get_ssim_loss = losses_hook, ssim_hook
    b = batch(torch)
    t0 = time.perf_counter()
    loss, losses, _, pred, _ = lb.build_loss(
        model, b["image"], b["front"], b["back"], b["mask"], b["theta"], phase, 1, None
    )
    model.zero_grad()
    loss.backward()
    seconds = time.perf_counter() - t0
    p = f"p{phase}"
    out = {f"{p}/loss": np.float32(loss.item())}
    for k, v in losses.items():
        out[f"{p}/{k}"] = np.float32(float(v))
    if pairs["l1"]:
        out[f"{p}/normal_l1"] = np.asarray(pairs["l1"], np.float32)
        out[f"{p}/normal_ssim"] = np.asarray(pairs["ssim"], np.float32)
    grads = {k: v.grad.numpy() for k, v in model.named_parameters() if v.grad is not None}
    out |= {f"{p}/grad/{k}": v for k, v in recipe.reduce_grads(grads).items()}
    for k, v in model.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            out[f"{p}/stats/{k}"] = v.numpy().astype(np.float32)
    if phase == 2:
        out[f"{p}/down_depth_mask"] = pred["pred_down_depth_mask"][:, 0].detach().numpy()
    print(
        f"phase {phase}: loss {loss.item():.6f} "
        f"({', '.join(f'{k} {float(v):.6f}' for k, v in losses.items())}), "
        f"{len(grads)} gradients, {seconds:.1f} s"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", help="root of a 2K2K checkout (holds models/deep_human_models.py)")
    ap.add_argument("--out", default=os.path.join(HERE, "twok2k_train_reference.npz"))
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    models, loss_builder = official_parts(args.repo)
    state_dict = recipe.random_state_dict(train_shapes())
    out = {"seed": np.int64(recipe.SEED), "canvas": np.int64(recipe.TRAIN_CANVAS)}
    for phase in (1, 2):
        out |= run_phase(models, loss_builder, phase, state_dict)
    np.savez_compressed(args.out, **out)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    size = os.path.getsize(args.out) / 2**20
    print(f"peak RSS {rss:.2f} GiB -> {args.out} ({size:.2f} MiB)")


if __name__ == "__main__":
    main()

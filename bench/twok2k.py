"""2K2K phase-2 forward at 2048^2: hdjax vs the official code, time per stage and peak RSS.

    JAX_PLATFORMS=cpu python -m bench.twok2k                      # hdjax only (~3 min, 2 cores)
    JAX_PLATFORMS=cpu python -m bench.twok2k --official /path/to/2K2K   # + official (~4 min, 9 GiB)

Each side runs in its own subprocess (so each peak RSS is its own), on the parity test's
inputs (`tests/parity/twok2k_recipe.py`: smooth random image, a hand-made standing-person
set of 12 part transforms, seeded random weights). hdjax: the jitted `twok2k_forward`
(compile + first call, then the median of ``--repeat`` calls), peak RSS after it, then each
stage jitted alone. Official: `Model_2K2K(phase=2)` on CPU in eval mode under `no_grad`, its
per-module times from forward hooks ("glue" is what runs outside the networks: the 2048^2
resizes and warps of the low-res normal, the blur and warps of the weight maps, ...).
Numbers depend on the machine's free cores; the load average is printed with them.

Measured (2 shared CPU cores, same run, load average 3.7 -> 1.6):

    stage (hdjax)                                s     stage (official, hooks)      s
    img2normal_down + ImgNorm_to_Dep          1.01     stn (12 full warps)       1.71
    part crops + blend weights (windows)      0.07     transform (12 blurs)      2.66
    img2normal_face/upper/arm/leg/shoe        7.40     img2normal_* (6 nets)    10.67
    warp back + blend (boxes: 4% of 12 frames) 0.29    ImgNorm_to_Dep            0.65
    refine blocks 1 / 2 / 3             0.28/1.13/4.01  refine (warps + blocks)  17.15
                                                       glue (resizes, warps)     2.25
    forward                       hdjax 13.1 s, 2.58 GiB peak RSS (1.21 after weights)
                               official 35.1 s, 8.50 GiB peak RSS (0.94 after weights)
    compile + first call (hdjax) 23.9 s

Under heavier load (4.6): hdjax 24.8 s / 2.55 GiB, official 80.7 s / 8.22 GiB. What is left
is convolution: about 2 TFLOP, which XLA:CPU already runs at ~170 GFLOP/s here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from bench.common import PARITY, REPO, worker_command

sys.path.insert(0, PARITY)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _ours(repeat: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import twok2k_recipe as recipe

    from hdjax.models import twok2k as K
    from hdjax.models.twok2k_official import convert_state_dict, official_shapes

    variables = convert_state_dict(recipe.random_state_dict(official_shapes()))
    image, theta = recipe.parity_image(), recipe.parity_theta()
    res: dict = {"rss_weights_gib": _rss_gib()}
    t0 = time.perf_counter()
    jax.block_until_ready(K.twok2k_forward(variables, image, theta))
    res["first_call_s"] = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(K.twok2k_forward(variables, image, theta))
        times.append(time.perf_counter() - t0)
    res["forward_s"] = float(np.median(times))
    res["rss_gib"] = _rss_gib()

    model = K.TwoK2K()
    stages = {}

    def timed(name, fn, *args):
        fn = jax.jit(fn)
        out = jax.block_until_ready(fn(*args))
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        stages[name] = time.perf_counter() - t0
        return out

    img = jnp.asarray(image)
    th = jnp.asarray(theta)
    img256 = timed("resize 2048->256", K.downsample8_bilinear, img)
    d_n, _ = timed(
        "img2normal_down + ImgNorm_to_Dep",
        lambda v, x: model.apply(v, x, method=K.TwoK2K.low_res),
        variables,
        img256,
    )

    def crops_and_weights(img, d_n, th):
        image6 = jnp.concatenate([img, K.upsample_bilinear(d_n[..., :3], K.CANVAS)], -1)
        crops, ones = K.part_inputs(image6, th)
        return crops, {k: jax.vmap(K.blend_weight)(o) for k, o in ones.items()}

    crops, weights = timed("part crops + blend weights (windows)", crops_and_weights, img, d_n, th)
    part_out = {}
    for name in K.PART_NETS:
        part_out[name] = timed(
            f"img2normal_{name}",
            lambda v, c, name=name: model.apply(v, name, c, method=K.TwoK2K.part),
            variables,
            crops[name],
        )
    boxes = K.warp_boxes(theta)
    pn, wt = [], []
    for name, (_, parts) in K.PART_NETS.items():
        out = part_out[name].reshape(1, len(parts), *part_out[name].shape[1:])
        pn += [out[:, j] for j in range(len(parts))]
        wt += [weights[name][:, j] for j in range(len(parts))]
    normal, _ = timed(
        "warp back + blend (boxes)",
        lambda pn, wt, th: K.blend_part_normals(pn, wt, K.invert_affine(th), boxes),
        pn,
        wt,
        th,
    )

    def stage(k):
        return lambda d, n: model.apply(variables, k, d, n, method=K.TwoK2K.refine_stage)

    d1 = timed(
        "refine block 1 (512^2)", stage(1), jnp.zeros((1, 256, 256, 2)), normal[:, 1::4, 1::4]
    )
    d2 = timed(
        "refine block 2 (1024^2, strips)",
        lambda d, n: K.strip_apply(stage(2), d, n, K.STRIP_ROWS, K.STRIP_HALO),
        d1,
        normal[:, ::2, ::2],
    )
    timed(
        "refine block 3 (2048^2, strips)",
        lambda d, n: K.strip_apply(stage(3), d, n, K.STRIP_ROWS, K.STRIP_HALO),
        d2,
        normal,
    )
    res["stages"] = stages
    res["boxes_pixels"] = int(sum(h * w for h, w in boxes.sizes))
    return res


def _official(repo: str) -> dict:
    import torch
    import twok2k_recipe as recipe
    from make_twok2k_reference import official_model

    from hdjax.models.twok2k_official import official_shapes

    torch.set_grad_enabled(False)
    model = official_model(repo, recipe.random_state_dict(official_shapes()))
    res: dict = {"rss_weights_gib": _rss_gib()}
    stages: dict = {}
    starts: dict = {}
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()) and name not in ("stn", "transform"):
            continue

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - starts[name]

        child.register_forward_pre_hook(pre)
        child.register_forward_hook(post)
    x = torch.from_numpy(recipe.parity_image().transpose(0, 3, 1, 2).copy())
    theta = torch.from_numpy(recipe.parity_theta())
    t0 = time.perf_counter()
    model(x, theta, 0)
    res["forward_s"] = time.perf_counter() - t0
    res["rss_gib"] = _rss_gib()
    stages["glue (outside the modules)"] = res["forward_s"] - sum(stages.values())
    res["stages"] = stages
    return res


def _run_worker(which: str, args) -> dict:
    cmd = [*worker_command(__spec__.name), "--worker", which, "--repeat", str(args.repeat)]
    if args.official:
        cmd += ["--official", args.official]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", help="root of a 2K2K checkout to run beside hdjax")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--worker", choices=("ours", "official"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "ours":
        print(json.dumps(_ours(args.repeat)))
        return
    if args.worker == "official":
        print(json.dumps(_official(args.official)))
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ours = _run_worker("ours", args)
    print(f"hdjax: compile + first call {ours['first_call_s']:.1f} s")
    print(f"{'stage':42s} {'s':>8s}")
    for k, v in ours["stages"].items():
        print(f"  {k:40s} {v:8.2f}")
    box = ours["boxes_pixels"] / (12 * 2048**2)
    print(f"  warp-back boxes: {box:.0%} of twelve full frames")
    rows = [("hdjax", ours)]
    if args.official:
        off = _run_worker("official", args)
        print(f"official: per module (forward hooks)\n{'stage':42s} {'s':>8s}")
        for k, v in off["stages"].items():
            print(f"  {k:40s} {v:8.2f}")
        rows.append(("official", off))
    print(f"\n{'':10s} {'forward s':>10s} {'peak RSS GiB':>13s} {'(weights loaded) GiB':>21s}")
    for name, r in rows:
        print(
            f"{name:10s} {r['forward_s']:10.1f} {r['rss_gib']:13.2f} {r['rss_weights_gib']:21.2f}"
        )
    if args.official:
        off = rows[1][1]
        speed, mem = off["forward_s"] / ours["forward_s"], off["rss_gib"] / ours["rss_gib"]
        print(f"hdjax is {speed:.1f}x faster and needs {mem:.1f}x less memory")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

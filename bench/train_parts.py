"""Where a PIFuHD training step spends its time: its parts, hdjax vs the official code.

    python -m bench.train_parts               # batch 1, 3 timed runs per part (min)
    python -m bench.train_parts --batch 8     # the paper's batch (~8x the time and memory)

`bench/train.py` times whole steps; this splits them into the parts whose sum makes most of
a step, each jitted (hdjax) or run (torch) on its own, at the paper's sizes and random
weights, with the numerics each side trains with:

* normal nets, forward: both pix2pixHD nets on a 512² image (frozen in the coarse and fine
  stages; hdjax runs them with the inference kernels, as `pifuhd.frozen_model`);
* coarse / fine filter, forward and forward + backward: the 4-stack hourglass on a 512²
  9-channel input, and the fine filter on a 512² crop; the backward pass is the gradient of
  a fixed weighted sum of every stack's output w.r.t. the filter's parameters;
* coarse MLP, forward + backward: the 257-1024-512-256-128-1 MLP on ``--points`` features
  per stack, for the 4 stacks.

Each implementation runs in its own process, one after the other; the table gives each
part's time (the fastest of ``--repeat`` runs after a warm-up) and torch/hdjax (> 1: hdjax
faster). The load average is printed: compare ratios measured at the same, low load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from bench.common import REPO, best_time, worker_command

STACKS = 4


def _inputs(batch: int, points: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return dict(
        image=rng.uniform(-1, 1, (batch, 512, 512, 3)).astype(np.float32),
        filter_in=rng.uniform(-1, 1, (batch, 512, 512, 9)).astype(np.float32),
        mlp_in=rng.normal(size=(STACKS, batch, points, 257)).astype(np.float32),
    )


def _weights(shape) -> np.ndarray:
    """The fixed cotangent of a filter output: a weighted sum keeps every element in the
    backward pass (a plain sum would make the gradient of the last conv trivial)."""
    return np.sin(np.arange(int(np.prod(shape)), dtype=np.float32) * 0.37).reshape(shape)


def hdjax_parts(batch: int, points: int, repeat: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    from hdjax.configs.pifuhd import get_config
    from hdjax.models.pifuhd import PIFuHD, init_params
    from hdjax.train import pifuhd

    cfg = get_config()
    model = pifuhd.training_model(cfg)
    frozen = pifuhd.frozen_model(model.arch, cfg)
    params = init_params(model.arch, 0)
    x = {k: jnp.asarray(v) for k, v in _inputs(batch, points).items()}

    def run(fn, *args):
        compiled = jax.jit(fn)
        return best_time(compiled, *args, repeat=repeat)

    def with_sub(path, sub):
        if len(path) == 1:
            return {**params, path[0]: sub}
        return {**params, path[0]: {**params[path[0]], path[1]: sub}}

    out = {}
    out["normal nets, forward"] = run(
        lambda p, im: frozen.apply({"params": p}, im, method=PIFuHD.normals), params, x["image"]
    )
    for name, path in (("coarse", ("netG", "image_filter")), ("fine", ("image_filter",))):
        sub = params[path[0]] if len(path) == 1 else params[path[0]][path[1]]

        def outputs(sub, inp, path=path):
            def call(m, inp):
                return (m.netG.image_filter if len(path) == 2 else m.image_filter)(inp)[0]

            return model.apply({"params": with_sub(path, sub)}, inp, method=call)

        def loss(sub, inp, cotangents, outputs=outputs):
            return sum(jnp.sum(o * w) for o, w in zip(outputs(sub, inp), cotangents, strict=True))

        shapes = jax.eval_shape(outputs, sub, x["filter_in"])
        cotangents = [jnp.asarray(_weights(o.shape)) for o in shapes]
        out[f"{name} filter, forward"] = run(outputs, sub, x["filter_in"])
        out[f"{name} filter, forward + backward"] = run(
            jax.grad(loss), sub, x["filter_in"], cotangents
        )

    def mlp_loss(sub, feats):
        p = with_sub(("netG", "mlp"), sub)
        logits = [
            model.apply({"params": p}, f, method=lambda m, f: m.netG.mlp(f)[0]) for f in feats
        ]
        return sum(jnp.sum(lg * 0.1) for lg in logits)

    out["coarse MLP x4 stacks, forward + backward"] = run(
        jax.grad(mlp_loss), params["netG"]["mlp"], x["mlp_in"]
    )
    return out


def official_parts(batch: int, points: int, repeat: int) -> dict[str, float]:
    import torch

    from bench.common import official_nets

    net_g, net = official_nets()
    x = _inputs(batch, points)
    image = torch.from_numpy(np.ascontiguousarray(x["image"].transpose(0, 3, 1, 2)))
    filter_in = torch.from_numpy(np.ascontiguousarray(x["filter_in"].transpose(0, 3, 1, 2)))
    mlp_in = torch.from_numpy(np.ascontiguousarray(x["mlp_in"].transpose(0, 1, 3, 2)))

    def normals():
        with torch.no_grad():
            net_g.netF(image)
            net_g.netB(image)

    out = {"normal nets, forward": best_time(normals, repeat=repeat)}
    for name, filt in (("coarse", net_g.image_filter), ("fine", net.image_filter)):
        filt.train()

        def forward(filt=filt):
            with torch.no_grad():
                filt(filter_in)

        with torch.no_grad():  # NCHW outputs; the cotangents of hdjax's, transposed
            cotangents = [torch.from_numpy(_nchw_weights(o.shape)) for o in filt(filter_in)[0]]

        def backward(filt=filt, cotangents=cotangents):
            for p in filt.parameters():
                p.grad = None
            outs = filt(filter_in)[0]
            sum((o * w).sum() for o, w in zip(outs, cotangents, strict=True)).backward()

        out[f"{name} filter, forward"] = best_time(forward, repeat=repeat)
        out[f"{name} filter, forward + backward"] = best_time(backward, repeat=repeat)

    def mlp():
        for p in net_g.mlp.parameters():
            p.grad = None
        sum((net_g.mlp(mlp_in[s])[0] * 0.1).sum() for s in range(STACKS)).backward()

    out["coarse MLP x4 stacks, forward + backward"] = best_time(mlp, repeat=repeat)
    return out


def _nchw_weights(shape) -> np.ndarray:
    b, c, h, w = shape
    return np.ascontiguousarray(_weights((b, h, w, c)).transpose(0, 3, 1, 2))


IMPLS = {"official": official_parts, "hdjax": hdjax_parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--points", type=int, default=8000)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per part (fastest)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--worker", choices=list(IMPLS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        res = IMPLS[args.worker](args.batch, args.points, args.repeat)
        print("RESULT " + json.dumps(res), flush=True)
        return
    print(f"cores {os.cpu_count()}, batch {args.batch}, load before {os.getloadavg()}")
    results = {}
    for impl in args.impls:
        cmd = [*worker_command(__spec__.name), "--worker", impl]
        cmd += ["--batch", str(args.batch), "--points", str(args.points)]
        cmd += ["--repeat", str(args.repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"{impl} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        results[impl] = json.loads(line[len("RESULT ") :])
        print(f"{impl} done (load {os.getloadavg()[0]:.2f})", flush=True)
    parts = next(iter(results.values()))
    head = f"{'part':<42}" + "".join(f"{i + ' s':>12}" for i in results)
    ratio = "official" in results and "hdjax" in results
    rows = [head + (f"{'torch/hdjax':>13}" if ratio else ""), "-" * (len(head) + 13 * ratio)]
    for part in parts:
        row = f"{part:<42}" + "".join(f"{r[part]:>12.3f}" for r in results.values())
        if ratio:
            row += f"{results['official'][part] / results['hdjax'][part]:>13.2f}"
        rows.append(row)
    print(f"\nload after {os.getloadavg()}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""One PIFuHD training step (forward + backward + optimiser update): hdjax vs the official code.

    python -m bench.train                     # batch 1, both stages, both implementations
    python -m bench.train --batch 1 8         # also batch 8 (slow: ~8x the time and memory)
    python -m bench.train --steps 1 --stages coarse --impls hdjax   # smoke
    python -m bench.train --conv-grad matmul split  # hdjax once per conv gradient path

Paper sizes, random weights: coarse level at 512² (4-stack hourglass, normal nets frozen and
run on the image, as at test time), fine level on a 512² crop of a 1024² image (coarse level
frozen, its phi of the whole 512² image feeds the fine MLP); ``--points`` (8,000) labelled
points per sample. Both sides train the same subtrees with RMSprop (lr 1e-3):

* hdjax: `hdjax.train.pifuhd.make_train_step` of the full `configs/pifuhd.py`, jitted with the
  old state donated (as `loop.jit_step`), compiled ahead of the first step (reported apart);
  ``--conv-grad`` sets `model.numerics.conv_grad` (default "auto": what training takes on
  CPU, "split"), one row each, e.g. ``matmul split`` for both;
* official: `HGPIFuNetwNML` / `HGPIFuMRNet` of the `pifu-hd` package with the released option
  table, `CustomBCELoss` averaged over stacks with the official γ (fraction of in-box points
  outside) and, for the fine level, w (points / in-box points), `torch.optim.RMSprop` over the
  stage's image filter + MLP; ``torch.set_num_threads`` = the number of cores.

Each (implementation, stage, batch) runs in its own process: peak RSS is that process's
VmHWM (model, data, compile and steps). The processes of one (stage, batch) are built one
after another, then take their timed steps in turn, so that on a shared machine each meets
the same load (``--sequential``: one process at a time, less memory at once). Step time is
the median of ``--steps`` steps after a first (warm-up / compile) step; torch/hdjax > 1 means
hdjax is faster. Numbers depend on the machine's free cores and the load average is printed
with them: under oversubscription PyTorch's OpenMP threads slow down more than XLA's (a
coarse step at load ~5 on 2 cores: torch 4x its idle time, hdjax 2x), so compare ratios
measured at the same, low load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import REPO, official_nets, worker_command

COARSE, FINE, CROP = 512, 1024, 512


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def fake_batch(stage: str, batch: int, points: int, seed: int = 0) -> dict[str, np.ndarray]:
    """NHWC images in [-1, 1], points in the unit box, ~40% inside, identity-like calibs.

    `hdjax.train.pifuhd.random_batch` at full size, rewritten here so that the PyTorch
    subprocess never imports JAX (its peak RSS would count JAX's).
    """
    rng = np.random.default_rng(seed)
    calib = np.tile(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32), (batch, 1, 1))

    def img(s: int) -> np.ndarray:
        return rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)

    out = dict(
        points=rng.uniform(-1, 1, (batch, points, 3)).astype(np.float32),
        labels=(rng.random((batch, points)) < 0.4).astype(np.float32),
        calib_global=calib,
    )
    if stage == "fine":
        offset = rng.integers(0, FINE - CROP + 1, (batch, 2)).astype(np.int32)
        return dict(
            out, image=img(CROP), image_global=img(COARSE), calib_local=calib, crop_offset=offset
        )
    return dict(out, image=img(COARSE), normal_front=img(COARSE), normal_back=img(COARSE))


def make_hdjax(stage: str, batch: int, points: int, conv_grad: str = "auto"):
    """(compile seconds, a function running one training step and returning its loss)."""
    import jax
    import jax.numpy as jnp

    from hdjax.configs.pifuhd import get_config
    from hdjax.models.pifuhd import init_params
    from hdjax.train import loop, pifuhd

    cfg = get_config()
    cfg.train.coarse_normals = "predicted"
    if conv_grad != "auto":
        cfg.model.numerics.conv_grad = conv_grad
    model = pifuhd.training_model(cfg)
    params = init_params(model.arch, 0)
    st = loop.schedule(cfg, pifuhd.STAGES)[pifuhd.STAGES.index(stage)]
    tx, state = pifuhd.stage_state(cfg, st, params)
    data = {k: jnp.asarray(v) for k, v in fake_batch(stage, batch, points).items()}
    t0 = time.perf_counter()
    step = (
        jax.jit(pifuhd.make_train_step(model, stage, tx, cfg), donate_argnums=0)
        .lower(state, data)
        .compile()
    )
    compile_s = time.perf_counter() - t0
    holder = [state]

    def one_step() -> float:
        holder[0], metrics = step(holder[0], data)
        return float(jax.block_until_ready(metrics["loss"]))

    return compile_s, one_step


def make_official(stage: str, batch: int, points: int, conv_grad: str = ""):
    """As `make_hdjax`, for the official code (nothing to compile)."""
    import torch

    net_g, net = official_nets()
    b = fake_batch(stage, batch, points)

    def nchw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    pts = torch.from_numpy(np.ascontiguousarray(b["points"].transpose(0, 2, 1)))  # (B, 3, N)
    labels = torch.from_numpy(b["labels"])[:, None]  # (B, 1, N)
    calib_g = torch.from_numpy(b["calib_global"])
    if stage == "coarse":
        net_g.train()
        trained = [net_g.image_filter, net_g.mlp]
        image = nchw(b["image"])

        def loss_fn() -> torch.Tensor:
            net_g.filter(image)  # the normal nets run under no_grad inside
            net_g.query(pts, calib_g, labels=labels)
            with torch.no_grad():  # γ as HGPIFuMRNet.query: the in-box fraction outside
                xyz = net_g.projection(pts, calib_g)
                in_bb = ((xyz >= -1) & (xyz <= 1)).all(1).float()
                gamma = 1 - (in_bb * labels[:, 0]).sum(1) / in_bb.sum(1)
            return net_g.get_error(gamma)["Err(occ)"]

    else:
        net.train()  # train_full_pifu=False: netG in eval mode, filter_global under no_grad
        trained = [net.image_filter, net.mlp]
        image_local = nchw(b["image"])[:, None]  # (B, 1, 3, 512, 512)
        image_global = nchw(b["image_global"])
        row, col = b["crop_offset"][:, 0], b["crop_offset"][:, 1]
        rect = torch.from_numpy(np.stack([col, row, col + CROP, row + CROP], -1)[:, None])
        calib_l = torch.from_numpy(b["calib_local"])[:, None]

        def loss_fn() -> torch.Tensor:
            err, _ = net.forward(
                image_local, image_global, pts[:, None], calib_l, calib_g, labels[:, None],
                rect=rect,
            )  # fmt: skip
            return err["Err(occ:fine)"]

    params = [p for m in trained for p in m.parameters()]
    optim = torch.optim.RMSprop(params, lr=1e-3)

    def one_step() -> float:
        optim.zero_grad(set_to_none=True)
        out = loss_fn()
        out.backward()
        optim.step()
        return float(out.detach())

    return 0.0, one_step


IMPLS = {"hdjax": make_hdjax, "official": make_official}


def worker(args: argparse.Namespace) -> None:
    """Builds one implementation, runs a first step, then one timed step per "step" line on
    stdin (answering "TIME"), or ``--steps`` steps at once with ``--sequential``."""
    compile_s, one_step = IMPLS[args.worker](
        args.stages[0], args.batch[0], args.points, args.conv_grad[0]
    )

    def timed() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = one_step()
        return time.perf_counter() - t0, loss

    first_s, loss = timed()  # the first step pays one-off allocation; not counted
    times = []
    if args.sequential:
        for _ in range(args.steps):
            times.append(timed()[0])
    else:
        print("READY", flush=True)
        for line in sys.stdin:
            if line.strip() != "step":
                break
            t, loss = timed()
            times.append(t)
            print(f"TIME {t}", flush=True)
    res = dict(compile_s=compile_s, first_s=first_s, times=times, loss=loss, rss_mib=_hwm_mib())
    print("RESULT " + json.dumps(res), flush=True)


def _read_until(proc: subprocess.Popen, prefix: str) -> str | None:
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None


def measure(runs: list[tuple[str, str]], stage: str, batch: int, args) -> list[dict]:
    """One result dict per (impl, conv_grad) run. By default the workers are started one
    after another and then step in turn, so that every implementation meets the same load
    on a shared machine; ``--sequential`` runs each worker alone (less memory at once)."""
    procs = []
    for impl, conv_grad in runs:
        cmd = [*worker_command(__spec__.name), "--worker", impl, "--stages", stage]
        cmd += ["--batch", str(batch), "--points", str(args.points), "--steps", str(args.steps)]
        cmd += ["--conv-grad", conv_grad or "auto"] + (["--sequential"] * args.sequential)
        err = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO
        )
        procs.append((proc, err))
        if not args.sequential:
            _read_until(proc, "READY")
        else:
            proc.wait()
    for _ in range(0 if args.sequential else args.steps):
        for proc, _ in procs:
            if proc.poll() is None:
                proc.stdin.write("step\n")
                proc.stdin.flush()
                _read_until(proc, "TIME ")
    results = []
    for proc, err in procs:
        if proc.poll() is None:
            proc.stdin.close()
        line = _read_until(proc, "RESULT ")
        proc.wait()
        if proc.returncode != 0 or line is None:
            err.seek(0)
            results.append(dict(error=f"exit {proc.returncode}: {err.read()[-1500:]}"))
        else:
            results.append(json.loads(line))
        err.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stages", nargs="+", default=["coarse", "fine"], choices=["coarse", "fine"])
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--points", type=int, default=8000)
    p.add_argument("--steps", type=int, default=3, help="timed steps (median) after a first")
    p.add_argument(
        "--conv-grad",
        nargs="+",
        default=["auto"],
        choices=["auto", "xla", "matmul", "split"],
        help="hdjax's model.numerics.conv_grad, one row each (auto: as training on this backend)",
    )
    p.add_argument(
        "--sequential", action="store_true", help="run the implementations one at a time"
    )
    p.add_argument("--worker", choices=list(IMPLS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"cores {os.cpu_count()}, load before {os.getloadavg()}", flush=True)
    header = (
        f"{'stage':<7}{'B':>3} {'impl':<13}{'compile s':>10}{'first s':>9}{'step ms':>10}"
        f"{'samples/s':>10}{'peak RSS MiB':>13}{'loss':>8}{'torch/hdjax':>12}"
    )
    rows = [header, "-" * len(header)]
    for stage in args.stages:
        for batch in args.batch:
            torch_ms = None
            runs = [("official", "")] if "official" in args.impls else []
            runs += [("hdjax", g) for g in args.conv_grad if "hdjax" in args.impls]
            for (impl, conv_grad), r in zip(runs, measure(runs, stage, batch, args), strict=True):
                label = f"{impl}/{conv_grad}" if conv_grad not in ("", "auto") else impl
                if "error" in r:
                    rows.append(f"{stage:<7}{batch:>3} {label:<13} FAILED {r['error']}")
                    print(rows[-1], flush=True)
                    continue
                ms = 1000 * statistics.median(r["times"])
                torch_ms = ms if impl == "official" else torch_ms
                ratio = f"{torch_ms / ms:.2f}" if impl == "hdjax" and torch_ms else ""
                rows.append(
                    f"{stage:<7}{batch:>3} {label:<13}{r['compile_s']:>10.1f}{r['first_s']:>9.1f}"
                    f"{ms:>10.0f}{batch * 1000 / ms:>10.3f}{r['rss_mib']:>13.0f}"
                    f"{r['loss']:>8.4f}{ratio:>12}"
                )
                print(rows[-1], f"(load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"\nload after {os.getloadavg()}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

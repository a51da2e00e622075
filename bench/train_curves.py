"""Training curves: hdjax vs the official modules, and the official code against itself.

    python -m bench.train_curves              # both stages, 300 steps (~6 min on 2 busy cores)
    python -m bench.train_curves --stages coarse --float64 --init test

The small official PIFuHD of the training parity test (`tests/parity/official_train.py`:
the official architecture with fewer stacks and levels and small MLPs, 32² coarse images,
64² fine images with 32² crops, 2 samples × 256 points) is trained for ``--steps`` steps,
each stage (coarse, fine) on its own from the same initial weights, by four processes:

* hdjax: `hdjax.train.pifuhd.make_train_step` with `make_optimizer` (RMSprop, lr 1e-3,
  α = 0.99, ε = 1e-8, lr × 0.1 at 80 % of the stage), jitted;
* official, ``torch.set_num_threads(1)`` and ``(2)``: the official forward + `CustomBCELoss`
  (`official_train.official_loss`), ``torch.optim.RMSprop(lr=1e-3, alpha=0.99, eps=1e-8)``
  on the stage's modules (`TRAINABLE`), ``MultiStepLR`` at the same step;
* official in float64 (``--float64``, 1 thread): the same run in double precision, the
  reference both float32 implementations are measured against.

Weights: the test's net (built with one torch thread in every process: checksums compared),
then (``--init official``, the default) the trained levels re-initialised as the official
constructors do (conv weights N(0, 0.02), biases 0, GroupNorms 1 / 0), hdjax's params
converted from them. The fine stage starts from that untrained coarse level too.

Batches: a learnable toy target, the same sequence in every process (seeded per step). Each
sample is a sphere (centre in [−0.3, 0.3]² × [−0.2, 0.2], radius 0.35-0.65) under the
orthographic camera (`calib_global` = diag(1, −1, 1, 1)); the image's channels are its
silhouette and its front and back depth (−1 outside); points are half uniform in the box
and half within ~0.05 of the sphere, labelled inside / outside (inside iff the point's z is
between the two depths at its pixel). The fine stage crops its 64² image at a random offset
per sample and step (the official out-of-crop clamp term is added to hdjax's fine loss, as
in the parity test).

Output: one PNG (the loss curves, log y; below, the |loss differences| of the pairs per
step: faint, raw; bold, their running median over 11 steps) and a table: final losses, max
and median |gap| of each pair over the steps, their ratio, the first step where the gap
exceeds 1e-3 of the loss.

Measured (2 shared CPU cores, load average ~10, 382 s wall, `docs/train_curves.png`):

    coarse (loss 0.29 -> 0.15)      hdjax-off2  off1-off2  ratio  hdjax-off64  off2-off64
      max |gap|                         0.0527     0.0518   1.02       0.0346      0.0453
      median |gap|                     0.00149    0.00179   0.83      0.00127     0.00152
      first step > 1e-3 relative            18         18                18          22
    fine (loss, mean of 20: 0.29 -> 0.23)
      max |gap|                         0.0190     0.0232   0.82      0.00885      0.0165
      median |gap|                     0.00048   0.000659   0.73     0.000668    0.000685
      first step > 1e-3 relative             7         16                 9           7

Coarse: every pair stays within 1e-6 for 11 steps, then the differences grow chaotically
(ReLU branches, RMSprop's per-element normalisation) to the same plateau: hdjax is as far
from the official code as the official code from itself (other thread count) or from its
float64 run. Fine: hdjax − off2 reaches 5e-6 at step 4 while the thread counts stay within
3e-7 for 7 steps (they share most reduction orders), but off2 − off64 grows as fast as
hdjax − off2 (4.9e-6 at step 4): early on the thread spread underestimates float32 noise;
from step ~15 all pairs sit on the same plateau.

OpenMP threads are set to wait passively: spinning ones made 2 threads ~20x slower than 1
on the busy cores (15 s vs 0.7 s per coarse step); the numbers are the same.

With ``--init test`` (the parity test's weights: well-scaled, GroupNorm biases at ±3.5 σ)
the first RMSprop steps (≈ 10 × lr each) saturate the logits: the loss jumps 0.45 -> 2.3
and stays (clamped points get no gradient), and the official float32 runs differ from
hdjax by a constant 2.75e-4 (max 3.0e-4) while hdjax is within 7.7e-7 (median 2e-7) of the
official float64 run. The cause is `CustomBCELoss`'s clamp in float32: 1 − 1e-5 rounds to
0.99999 (1 − p = 1.00136e-5), so each point clamped on the wrong side costs (1 − γ) · 1.36e-3
less than the exact -log(1e-5); hdjax clamps the logit and evaluates log σ exactly. The two
thread counts differ by ≤ 1.5e-7 there (median 0): a much smaller spread than the chaos
above, where the loss does not saturate.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import PARITY, REPO, worker_command

sys.path.insert(0, PARITY)

SEED = 2026
RUNS = ("hdjax", "official1", "official2")
LABELS = {
    "hdjax": "hdjax",
    "official1": "official, 1 thread",
    "official2": "official, 2 threads",
    "official64": "official, float64",
}


# ------------------------------------------------------------------ batches


def _render(centre, radius, size: int, row: int = 0, col: int = 0, full: int | None = None):
    """(size, size, 3) in [−1, 1]: silhouette, front depth, back depth of the sphere in the
    window at (row, col) of the ``full``² image."""
    full = size if full is None else full
    x = (np.arange(size) + col + 0.5) * 2 / full - 1
    y = -((np.arange(size) + row + 0.5) * 2 / full - 1)
    d2 = (x[None, :] - centre[0]) ** 2 + (y[:, None] - centre[1]) ** 2
    inside = d2 < radius**2
    h = np.sqrt(np.maximum(radius**2 - d2, 0.0))
    front = np.where(inside, centre[2] + h, -1.0)
    back = np.where(inside, centre[2] - h, -1.0)
    return np.stack([inside * 2.0 - 1.0, front, back], -1).astype(np.float32)


def shape_batch(stage: str, step: int) -> dict[str, np.ndarray]:
    """The batch of ``stage`` at ``step`` (hdjax layout, `official_train.make_batch`'s keys)."""
    from official_train import BATCH, COARSE, CROP, FINE, POINTS, crop_calib

    rng = np.random.default_rng([SEED, step, stage == "fine"])
    centre = np.concatenate(
        [rng.uniform(-0.3, 0.3, (BATCH, 2)), rng.uniform(-0.2, 0.2, (BATCH, 1))], -1
    )
    radius = rng.uniform(0.35, 0.65, BATCH)
    half = POINTS // 2
    uniform = rng.uniform(-1, 1, (BATCH, half, 3))
    direction = rng.normal(size=(BATCH, POINTS - half, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    shell = radius[:, None, None] + rng.normal(0, 0.05, (BATCH, POINTS - half, 1))
    near = np.clip(centre[:, None] + direction * shell, -1, 1)
    points = np.concatenate([uniform, near], 1).astype(np.float32)
    labels = np.linalg.norm(points - centre[:, None], axis=-1) < radius[:, None]
    calib = np.tile(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32), (BATCH, 1, 1))
    out = dict(points=points, labels=labels.astype(np.float32), calib_global=calib)
    if stage == "coarse":
        image = np.stack([_render(c, r, COARSE) for c, r in zip(centre, radius, strict=True)])
        return dict(out, image=image)
    offsets = rng.integers(0, FINE - CROP + 1, (BATCH, 2)).astype(np.int32)
    crops = [
        _render(c, r, CROP, row, col, FINE)
        for c, r, (row, col) in zip(centre, radius, offsets, strict=True)
    ]
    return dict(
        out,
        image=np.stack(crops),
        image_global=np.stack([_render(c, r, COARSE) for c, r in zip(centre, radius, strict=True)]),
        crop_offset=offsets,
        calib_local=np.stack([crop_calib(row, col) for row, col in offsets]),
    )


# ------------------------------------------------------------------ workers


def _build(threads: int, init: str) -> dict:
    """`official_train.build_case` with one torch thread (the same weights in every
    process), then ``threads`` threads; the weights' checksum under "checksum".

    ``init="official"``: the trained levels (filters and MLPs) re-initialised as the official
    constructors do (`PIFuHD.net_util.init_weights`: conv weights N(0, 0.02), biases 0) and
    their GroupNorms at PyTorch's defaults (1, 0), torch seeded; "test": the parity test's
    weights as they are (their first RMSprop steps saturate the logits: see the docstring).
    """
    import torch
    from official_train import build_case
    from PIFuHD.net_util import init_weights

    from hdjax.models.pifuhd_official import convert_state_dict

    torch.set_num_threads(1)
    case = build_case()
    net = case["net"]
    if init == "official":
        torch.manual_seed(SEED)
        for module in (net.netG.image_filter, net.netG.mlp, net.image_filter, net.mlp):
            with contextlib.redirect_stdout(io.StringIO()):  # its "initialize network ..."
                init_weights(module)
            for m in module.modules():
                if isinstance(m, torch.nn.GroupNorm):
                    m.reset_parameters()
        state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        case["params"] = convert_state_dict(state, case["arch"], to_device=np.asarray)
    torch.set_num_threads(threads)
    digest = hashlib.sha256()
    for v in net.state_dict().values():
        digest.update(v.numpy().tobytes())
    case["checksum"] = digest.hexdigest()[:16]
    return case


def _train_hdjax(stage: str, steps: int, init: str) -> tuple[str, list[float], list[float]]:
    import jax
    from official_train import fine_clamp_term

    from hdjax.train.loop import Stage, first_state
    from hdjax.train.pifuhd import make_optimizer, make_train_step

    case = _build(1, init)
    cfg, params = case["cfg"], case["params"]

    tx = make_optimizer(cfg, Stage(stage, 0, 0, steps), params)
    state = first_state(Stage(stage, 0, 0, steps), tx, params)
    step = jax.jit(make_train_step(case["model"], stage, tx, cfg))
    out, times = [], [time.perf_counter()]
    for i in range(steps):
        b = shape_batch(stage, i)
        state, metrics = step(state, b)
        out.append(float(metrics["loss"]) + (fine_clamp_term(b) if stage == "fine" else 0.0))
        times.append(time.perf_counter())
    return case["checksum"], out, times


def _train_official(
    stage: str, steps: int, init: str, threads: int, float64: bool = False
) -> tuple[str, list[float], list[float]]:
    import torch
    from official_train import official_loss

    from hdjax.train.pifuhd import TRAINABLE

    case = _build(threads, init)
    net, cfg = case["net"], case["cfg"]
    if float64:
        net.double()
    params = []
    for path in TRAINABLE[stage]:
        module = net
        for k in path:
            module = getattr(module, k)
        params += list(module.parameters())
    opt = torch.optim.RMSprop(params, lr=cfg.train.lr, alpha=0.99, eps=1e-8)
    milestones = [int(f * steps) for f in cfg.train.lr_decay_at if 0 < f < 1]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    out, times = [], [time.perf_counter()]
    for i in range(steps):
        b = shape_batch(stage, i)
        if float64:
            b = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in b.items()}
        loss = official_loss(net, stage, b, cfg.train.l1_weight)
        loss.backward()
        opt.step()
        sched.step()
        out.append(float(loss.detach()))
        times.append(time.perf_counter())
    return case["checksum"], out, times


def _worker(run: str, stage: str, steps: int, init: str, path: str) -> None:
    t = time.perf_counter()
    if run == "hdjax":
        checksum, losses, times = _train_hdjax(stage, steps, init)
    elif run == "official64":
        checksum, losses, times = _train_official(stage, steps, init, 1, float64=True)
    else:
        checksum, losses, times = _train_official(stage, steps, init, int(run[-1]))
    # Per step: the median time of the steps after the first (which compiles, for hdjax).
    out = dict(checksum=checksum, losses=losses, seconds=time.perf_counter() - t,
               step_seconds=float(np.median(np.diff(times)[1:])))  # fmt: skip
    with open(path, "w") as f:
        json.dump(out, f)


# ------------------------------------------------------------------ report

# (name, run a, run b) of each |loss difference| the table and the lower panel show.
PAIRS = (
    ("hdjax - off2", "hdjax", "official2"),
    ("off1 - off2", "official1", "official2"),
)
PAIRS64 = (
    ("hdjax - off64", "hdjax", "official64"),
    ("off2 - off64", "official2", "official64"),
)


def _pairs(curves: dict) -> tuple:
    return PAIRS + (PAIRS64 if "official64" in curves else ())


def _table(stage: str, curves: dict[str, np.ndarray], seconds: dict) -> str:
    rows = [f"{stage} stage, {len(curves['hdjax'])} steps"]
    rows.append(f"  {'run':<22}{'final loss':>14}{'mean last 20':>14}{'s/step':>9}")
    for k, v in curves.items():
        rows.append(f"  {LABELS[k]:<22}{v[-1]:>14.7g}{v[-20:].mean():>14.7g}{seconds[k]:>9.3f}")
    pairs = _pairs(curves)
    for i in range(0, len(pairs), 2):
        (na, a0, a1), (nb, b0, b1) = pairs[i : i + 2]
        ga, gb = np.abs(curves[a0] - curves[a1]), np.abs(curves[b0] - curves[b1])
        rows.append(f"  {'|gap| over the steps':<22}{na:>14}{nb:>14}{'ratio':>9}")
        for name, f in (("max", np.max), ("median", np.median)):
            x, y = float(f(ga)), float(f(gb))
            ratio = f"{x / y:.3g}" if y > 0 else "inf"
            rows.append(f"  {name:<22}{x:>14.3g}{y:>14.3g}{ratio:>9}")
        first = [
            int(np.argmax(g > 1e-3 * np.abs(curves[b1])))
            if np.any(g > 1e-3 * np.abs(curves[b1]))
            else -1
            for g in (ga, gb)
        ]
        rows.append(f"  {'first step > 1e-3 rel':<22}{first[0]:>14}{first[1]:>14}")
    return "\n".join(rows)


def _plot(results: dict, out: str, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(results)
    fig, axes = plt.subplots(
        2, len(stages), figsize=(6.4 * len(stages), 6.4), squeeze=False, sharex=True
    )
    x = np.arange(1, steps + 1)
    styles = {
        "hdjax": ("C3", "-", 1.6),
        "official1": ("C0", "--", 1.0),
        "official2": ("k", ":", 1.0),
        "official64": ("C2", "-.", 0.8),
    }
    colors = {PAIRS[0][0]: "C3", PAIRS[1][0]: "C0", PAIRS64[0][0]: "C1", PAIRS64[1][0]: "C2"}
    for j, stage in enumerate(stages):
        curves = results[stage]
        top, bottom = axes[0, j], axes[1, j]
        for k, v in curves.items():
            color, ls, lw = styles[k]
            top.plot(x, v, color=color, ls=ls, lw=lw, label=LABELS[k])
        top.set_yscale("log")
        top.set_ylabel("loss")
        top.set_title(f"{stage} stage: training loss")
        top.legend(fontsize="small")
        for name, a, b in _pairs(curves):
            gap = np.abs(curves[a] - curves[b])
            if name in (PAIRS[0][0], PAIRS[1][0]):  # the raw gaps, faint
                bottom.plot(x, gap + 1e-12, color=colors[name], lw=0.5, alpha=0.35)
            # their running median over 11 steps (+ 1e-12: exact zeros on a log axis)
            pad = np.pad(gap, 5, mode="edge")
            median = np.median(np.lib.stride_tricks.sliding_window_view(pad, 11), -1)
            bottom.plot(x, median + 1e-12, color=colors[name], lw=1.4, label=f"|{name}|")
        bottom.set_yscale("log")
        bottom.set_xlabel("step")
        bottom.set_ylabel("|loss difference| (running median of 11)")
        bottom.legend(fontsize="small")
        for ax in (top, bottom):
            ax.axvline(int(0.8 * steps), color="0.7", lw=0.8)
            ax.grid(alpha=0.3, which="both", lw=0.4)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=72)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--stages", nargs="+", default=["coarse", "fine"], choices=["coarse", "fine"])
    p.add_argument("--out", default=os.path.join(REPO, "docs", "train_curves.png"))
    p.add_argument("--float64", nargs="*", default=["coarse", "fine"], choices=["coarse", "fine"],
                   help="stages also run by the official code in float64 (1 thread)")  # fmt: skip
    p.add_argument("--init", default="official", choices=["official", "test"],
                   help="the trained levels' initial weights (see `_build`)")  # fmt: skip
    p.add_argument("--curves", help="also save the loss curves here (.npz)")
    p.add_argument("--sequential", action="store_true", help="one process at a time (default: all)")
    p.add_argument("--worker", nargs=3, metavar=("RUN", "STAGE", "JSON"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        run, stage, path = a.worker
        return _worker(run, stage, a.steps, a.init, path)

    t0 = time.perf_counter()
    # Waiting OpenMP threads sleep: spinning ones make 2 threads ~20x slower than 1 on busy
    # cores (15 s vs 0.7 s per coarse step measured); the numbers are the same.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    results, tables = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {}
        for stage in a.stages:
            for run in RUNS + (("official64",) if stage in a.float64 else ()):
                path = os.path.join(tmp, f"{stage}-{run}.json")
                args = ("--steps", str(a.steps), "--init", a.init, "--worker", run, stage, path)
                cmd = worker_command(__spec__.name, *args)
                jobs[stage, run] = (subprocess.Popen(cmd, cwd=REPO, env=env), path)
                if a.sequential:
                    jobs[stage, run][0].wait()
        data = {}
        for (stage, run), (proc, path) in jobs.items():
            if proc.wait():
                raise SystemExit(f"{run} ({stage}) failed: exit {proc.returncode}")
            with open(path) as f:
                data.setdefault(stage, {})[run] = json.load(f)
    for stage, runs in data.items():
        sums = {run: d["checksum"] for run, d in runs.items()}
        assert len(set(sums.values())) == 1, f"different initial weights: {sums}"
        results[stage] = {run: np.asarray(d["losses"]) for run, d in runs.items()}
        seconds = {run: d["step_seconds"] for run, d in runs.items()}
        tables.append(_table(stage, results[stage], seconds))
    _plot(results, a.out, a.steps)
    if a.curves:
        np.savez(a.curves, **{f"{st}/{k}": v for st, c in results.items() for k, v in c.items()})
    print("\n\n".join(tables))
    print(f"\nPNG: {a.out} ({os.path.getsize(a.out) / 1024:.0f} KB); wall time "
          f"{time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()

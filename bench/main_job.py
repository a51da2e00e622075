"""The README's main job, timed from nothing, and how much the model learned, per seed.

    python -m bench.main_job                       # fresh dataset root and workdir in /tmp
    python -m bench.main_job --seeds 0 1 2         # the run-to-run spread
    python -m bench.main_job --root ~/tensorflow_datasets   # reuse a built dataset

Scores the untrained model (the first seed, `init_params`) on the held-out subjects with the
eval job's own code, runs ``python -m hdjax.main --config=configs/pifuhd.py:tiny`` once per
seed in a subprocess, one after the other (the first builds the dataset into ``--root`` when
it is not there: a fresh root includes the build in its time), then prints the table from
each run's last ``eval/step_<S>/metrics.json`` with the wall times, and the spread. The
``depth`` column is the predicted mesh's mean thickness along the view axis over the true
body's (`depth_ratio`; > 1: deeper than the body, the extruded-silhouette failure).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench.common import REPO

KEYS = ("p2s_cm", "chamfer_cm", "normal_l2", "iou", "depth")


def _views(config: str, root: str, workdir: str):
    from hdjax.configs.pifuhd import get_config
    from hdjax.eval import job

    cfg = get_config(config.partition(":")[2])
    cfg.input.dataset.root = root
    return cfg, [v for s in job.eval_subjects(cfg, workdir) for v in job.render_views(cfg, s)]


def depth_ratio(views, folder: str, resolution: int = 64) -> float:
    """Mean over views of the predicted mesh's mean thickness along the view axis over the
    true body's: inside cells (winding number > 0.5, a grid over the cube) per occupied
    pixel column. Robust to a stray bump, unlike the extent."""
    import numpy as np
    import trimesh

    from hdjax.data.point_sampling import winding_number

    g = (np.arange(resolution) + 0.5) * 2.0 / resolution - 1.0
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)

    def thickness(mesh) -> float:
        inside = (winding_number(mesh, grid) > 0.5).reshape((resolution,) * 3)
        return inside.sum() / max(inside.any(2).sum(), 1)

    ratios = []
    for view in views:
        path = os.path.join(folder, f"{view.name}.obj")
        if not os.path.isfile(path):
            return float("nan")
        pred = trimesh.load(path, force="mesh", process=False)
        ratios.append(thickness(pred) / thickness(view.gt))
    return float(np.mean(ratios))


def before(config: str, root: str, workdir: str) -> dict:
    from hdjax.eval import pifuhd as pifuhd_eval
    from hdjax.models.pifuhd import PIFuHDArch, init_params

    cfg, views = _views(config, root, workdir)
    params = init_params(PIFuHDArch.from_config(cfg.model.arch), cfg.seed)
    out = os.path.join(workdir, "eval_init")
    summary = pifuhd_eval.evaluate_params(cfg, params, out, views)
    return {**summary, "depth": depth_ratio(views, out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/pifuhd.py:tiny")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--root", help="dataset root (default: a fresh folder, so the build counts)")
    p.add_argument("--workdir", help="default: a fresh folder (one sub-folder per seed)")
    args = p.parse_args()
    from hdjax.eval import job

    root = args.root or tempfile.mkdtemp(prefix="hdjax_root_")
    base = args.workdir or tempfile.mkdtemp(prefix="hdjax_main_")
    rows, views = [], None
    for seed in args.seeds:
        workdir = os.path.join(base, f"seed{seed}")
        cmd = [
            sys.executable, "-m", "hdjax.main", f"--config={args.config}",
            f"--workdir={workdir}", f"--config.input.dataset.root={root}",
            f"--config.seed={seed}",
        ]  # fmt: skip
        print(" ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        wall, load = time.perf_counter() - t0, os.getloadavg()[0]
        step, after = list(job.eval_history(workdir).items())[-1]
        folder = os.path.join(workdir, "eval", f"step_{step}")
        # The held-out views once: the first run has built the dataset that names them.
        views = views or _views(args.config, root, workdir)[1]
        after = {**after, "depth": depth_ratio(views, folder)}
        rows.append((f"seed {seed}, {step} steps ({wall / 60:.1f} min, load {load:.1f})", after))
    init = before(args.config, root, base)  # after a run: the test subjects exist by now
    print("\n| | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for name, row in [("before training", init), *rows]:
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in KEYS) + " |")
    if len(rows) > 1:
        for label, fn in (("min", min), ("max", max)):
            values = [fn(r[k] for _, r in rows) for k in KEYS]
            print(f"| {label} over seeds | " + " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    main()

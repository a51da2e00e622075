"""The README's main job, timed from nothing, and how much the model learned.

    python -m bench.main_job                       # fresh dataset root and workdir in /tmp
    python -m bench.main_job --root ~/tensorflow_datasets   # reuse a built dataset

Scores the untrained model (the config's seed, `init_params`) on the held-out subjects with
the eval job's own code, runs ``python -m hdjax.main --config=configs/pifuhd.py:tiny`` in a
subprocess (building the dataset into ``--root`` when it is not there: a fresh root
includes the build in the time), then prints the before / after table from the run's
``eval/step_<S>/metrics.json`` and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import REPO

KEYS = ("p2s_cm", "chamfer_cm", "normal_l2", "iou")


def before(config: str, root: str, workdir: str) -> dict:
    from hdjax.configs.pifuhd import get_config
    from hdjax.eval import job
    from hdjax.eval import pifuhd as pifuhd_eval
    from hdjax.models.pifuhd import PIFuHDArch, init_params

    cfg = get_config(config.partition(":")[2])
    cfg.input.dataset.root = root
    params = init_params(PIFuHDArch.from_config(cfg.model.arch), cfg.seed)
    views = [v for s in job.eval_subjects(cfg, workdir) for v in job.render_views(cfg, s)]
    return pifuhd_eval.evaluate_params(cfg, params, os.path.join(workdir, "eval_init"), views)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/pifuhd.py:tiny")
    p.add_argument("--root", help="dataset root (default: a fresh folder, so the build counts)")
    p.add_argument("--workdir", help="default: a fresh folder")
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="hdjax_root_")
    workdir = args.workdir or tempfile.mkdtemp(prefix="hdjax_main_")
    cmd = [
        sys.executable, "-m", "hdjax.main", f"--config={args.config}", f"--workdir={workdir}",
        f"--config.input.dataset.root={root}",
    ]  # fmt: skip
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    wall = time.perf_counter() - t0
    steps = sorted(int(d.split("_")[1]) for d in os.listdir(os.path.join(workdir, "eval")))
    with open(os.path.join(workdir, "eval", f"step_{steps[-1]}", "metrics.json")) as f:
        after = json.load(f)
    init = before(args.config, root, workdir)  # after the run: the test subjects exist by now
    print(f"\nmain job: {wall / 60:.1f} min wall (load {os.getloadavg()[0]:.1f}), step {steps[-1]}")
    print("| | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for name, row in (("before training", init), (f"after {steps[-1]} steps", after)):
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in KEYS) + " |")


if __name__ == "__main__":
    main()

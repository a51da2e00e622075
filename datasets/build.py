"""Builds a dataset of this folder without TensorFlow (the `tfds build` CLI imports it).

    python datasets/build.py synthetic_humans --config=pifuhd --data_dir=~/tensorflow_datasets
    python datasets/build.py scan_renders --config=twok2k --manual_dir=/path/to/scans

(or ``python -m datasets.build ...`` from the repository root).

Rerunning an interrupted build reuses the records it already rendered (see the builders).
Apache Beam: a builder config with `beam=True` renders subjects in parallel through TFDS's
Beam support (`tests/data/test_builder.py` builds one with the DirectRunner).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

if __package__ in (None, ""):  # run as a script: the repository root holds `datasets`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATASETS = ("synthetic_humans", "scan_renders")


def load_builder(name: str):
    """The `Builder` class of `datasets/<name>/<name>_dataset_builder.py`."""
    if name not in DATASETS:
        raise SystemExit(f"error: no dataset {name!r} (one of {', '.join(DATASETS)})")
    return importlib.import_module(f"datasets.{name}.{name}_dataset_builder").Builder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", help="synthetic_humans | scan_renders")
    p.add_argument("--config", default="pifuhd", help="pifuhd | twok2k")
    p.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    p.add_argument("--manual_dir", default=None, help="scan_renders: the folder of scans")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)

    import tensorflow_datasets as tfds

    builder_cls = load_builder(args.dataset)
    names = [c.name for c in builder_cls.BUILDER_CONFIGS]
    if args.config not in names:
        raise SystemExit(f"error: {args.dataset} has configs {names}, not {args.config!r}")
    builder = builder_cls(config=args.config, data_dir=os.path.expanduser(args.data_dir))
    download = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    from hdjax.errors import HdjaxError

    try:
        builder.download_and_prepare(download_config=download)
    except (HdjaxError, AssertionError) as e:  # TFDS reports a bad manual_dir by assertion
        raise SystemExit(f"error: {str(e).splitlines()[0]}") from None
    print(f"built {builder.name}/{args.config} in {builder.data_dir}")


if __name__ == "__main__":
    main()

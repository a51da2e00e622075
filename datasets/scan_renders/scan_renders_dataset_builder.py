"""TFDS builder `scan_renders`: renders of your own textured scans (manual download).

    tfds build datasets/scan_renders --config=pifuhd --manual_dir=/path/to/scans

``manual_dir`` holds one folder per scan: THuman2.0 ``<id>/<id>.obj`` (+ ``material0.mtl``
and its texture) or RenderPeople ``<name>/<name>_100k.obj`` (+ ``tex/``); any folder with
one OBJ/PLY/GLB works (see `hdjax.data.builder_lib.find_scan_file`). Scans must be +y up.
Unusable scans (fail to load, no faces, NaN vertices, absurdly large) are skipped; the
reasons go to ``build_report_<split>.json`` next to the shards and the counts to the log.
Every 10th scan (sorted by name) goes to `test`, the rest to `train`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import ClassVar

import tensorflow_datasets as tfds

from hdjax.data import builder_lib
from hdjax.errors import HdjaxError


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
    """A camera convention; ``test_every``: every n-th scan goes to `test` (0: no test split)."""

    render: builder_lib.RenderConfig = dataclasses.field(default_factory=builder_lib.RenderConfig)
    test_every: int = 10
    seed: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """Scan renders: PIFuHD (ortho 1024²) and 2K2K (persp 2048²) configs."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put one folder per scan in manual_dir: THuman2.0 `<id>/<id>.obj` with its MTL and
    texture, or RenderPeople OBJ + texture folders (+y up, any unit).
    """
    BUILDER_CONFIGS: ClassVar[list[Config]] = [
        Config(
            name="pifuhd",
            description="Orthographic 1024², 12 yaws, PIFu normalisation.",
            render=builder_lib.pifuhd_config(),
        ),
        Config(
            name="twok2k",
            description="Perspective 2048² (FOV 50°), yaw −30..30 step 10.",
            render=builder_lib.twok2k_config(),
        ),
    ]

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=builder_lib.tfds_features(self.builder_config.render),
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        if not os.path.isdir(root):
            raise HdjaxError("manual_dir is not a folder of scan folders", root)
        names = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
        if not names:
            raise HdjaxError("manual_dir holds no scan folders", root)
        every = self.builder_config.test_every
        test = set(names[every - 1 :: every]) if every > 0 else set()
        splits = {"train": self._generate_examples(root, sorted(set(names) - test), "train")}
        if test:
            splits["test"] = self._generate_examples(root, sorted(test), "test")
        return splits

    def _generate_examples(self, root, names, split):
        cfg = self.builder_config
        report = builder_lib.BuildReport()
        subjects = builder_lib.scan_subjects(root, cfg.render, report, names=names)
        yield from builder_lib.generate_records(subjects, cfg.render, report, cfg.seed)
        report.write(os.path.join(self.data_dir, f"build_report_{split}.json"))
        logging.warning("scan_renders/%s %s: %s", cfg.name, split, report.summary())
        for name, reason in report.skipped:
            logging.warning("skipped scan %s: %s", name, reason)

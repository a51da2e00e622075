"""TFDS builder `synthetic_humans`: renders of the anny bodies embedded in hdjax.

    tfds build datasets/synthetic_humans --config=pifuhd --data_dir=~/tensorflow_datasets

No download, no TensorFlow: the bodies are `hdjax/data/assets/bodies/*.npz` (see its NOTICE)
and all logic is `hdjax.data.builder_lib`. Splits: the last body is `test`, the rest `train`.
Caveat: naked-ish, hairless procedural bodies; numbers measured on them are not comparable
to clothed-scan benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import ClassVar

import tensorflow_datasets as tfds

from hdjax.data import builder_lib


@dataclasses.dataclass
class Config(tfds.core.BuilderConfig):
    """A camera convention plus the bodies to render (default: all embedded ones)."""

    render: builder_lib.RenderConfig = dataclasses.field(default_factory=builder_lib.RenderConfig)
    bodies: tuple[str, ...] | None = None
    seed: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """Synthetic human renders: PIFuHD (ortho 1024²) and 2K2K (persp 2048²) configs."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Eight anny bodies, procedural poses and colours."
    }
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
            homepage="https://github.com/naver/anny",
            citation=CITATION,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        names = self.builder_config.bodies or tuple(builder_lib.embedded_body_names())
        if len(names) < 2:
            return {"train": self._generate_examples(names, "train")}
        return {
            "train": self._generate_examples(names[:-1], "train"),
            "test": self._generate_examples(names[-1:], "test"),
        }

    def _generate_examples(self, names, split):
        report = builder_lib.BuildReport()
        subjects = (builder_lib.load_embedded_body(n) for n in names)
        cfg = self.builder_config
        yield from builder_lib.generate_records(subjects, cfg.render, report, cfg.seed)
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

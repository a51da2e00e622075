"""TFDS builder `synthetic_humans`: renders of anny bodies, embedded or generated.

    python -m hdjax.datasets.build synthetic_humans --config=pifuhd --data_dir=~/tensorflow_datasets
    python -m hdjax.datasets.build synthetic_humans --config=pifuhd --num_bodies=1000 --seed=0

No download, no TensorFlow. Without ``num_bodies`` the bodies are the eight embedded in
`hdjax/data/assets/bodies/*.npz` (see its NOTICE); splits: the last body is `test`, the rest
`train`. With ``num_bodies=N`` (config field, or `hdjax.datasets.build --num_bodies`) N
bodies are generated while building, deterministically from ``seed`` (`bodies` of this
package: Anny through body-models' numpy port, no torch; needs the `bodies` extra); the last
max(1, N // 10) are `test`. Generated bodies are untextured (random flat albedo); their
phenotype, pose and self-intersection rejections go to ``bodies_<split>.json`` beside the
build report, with the licences (this folder's NOTICE). The logic is in `hdjax.data`
(`subjects`, `records`) and this package (`bodies`, `garments`).
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
import functools
import json
import logging
import os
import shutil
from typing import ClassVar

import tensorflow_datasets as tfds

from hdjax.data import records, render_cache, subjects
from hdjax.datasets import tfds_base
from hdjax.datasets.synthetic_humans import bodies as bodies_lib
from hdjax.errors import HdjaxError


@dataclasses.dataclass
class Config(tfds_base.RenderBuilderConfig):
    """The bodies to render: embedded ones (``bodies``, default all) or ``num_bodies``
    generated from ``seed`` (Anny's parsed assets cached in ``body_cache_dir``, default
    `bodies`' own)."""

    # Where Anny's parsed assets are cached does not change the bodies.
    BUILD_FIELDS: ClassVar[tuple[str, ...]] = (
        *tfds_base.RenderBuilderConfig.BUILD_FIELDS,
        "body_cache_dir",
    )

    bodies: tuple[str, ...] | None = None
    num_bodies: int | None = None
    body_cache_dir: str | None = None
    clothed: bool = True  # generated bodies wear garments and hair (`garments`)


class Builder(tfds_base.RenderBuilder):
    """Synthetic human renders: PIFuHD (ortho 1024²) and 2K2K (persp 2048²) configs."""

    VERSION = tfds.core.Version("1.5.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Eight anny bodies, procedural poses and colours.",
        "1.1.0": "Keypoints in 2K2K's 31-joint layout: finger knuckles derived from the hands.",
        "1.2.0": "Clothed generated bodies, SH lighting with AO, camera jitter, hand points.",
        "1.3.0": "A subject's views share one labelled surface-point pool per level; points stored "
        "as raw bytes.",
        "1.4.0": "Orthographic renders turn each body about the median of its surface, not of "
        "its vertices (`RenderConfig.center`).",
        "1.5.0": "Labels from the closed pieces of a clothed body; no face of its outer surface "
        "hidden (no see-through holes); no garment fragments; keypoint visibility 2 seen / 1 "
        "hidden / 0 outside the image.",
    }
    BUILDER_CONFIGS: ClassVar[list[Config]] = tfds_base.camera_configs(Config)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._info_for(__doc__, homepage="https://github.com/naver/anny", citation=CITATION)

    @property
    def render_cache_dir(self) -> str | None:
        """`RenderBuilder.render_cache_dir`; for generated bodies one per generator code and
        package versions (``<version>-bodies<digest>``), so a resumed build never mixes
        bodies of two versions."""
        cfg = self.builder_config
        if cfg.num_bodies is None or not cfg.render_cache:
            return super().render_cache_dir
        version = f"{self.version}-bodies{bodies_lib.generator_digest()}"
        return render_cache.builder_cache_dir(self.data_dir_root, self.name, cfg.name, version)

    def _split_generators(self, dl_manager):
        del dl_manager
        cfg = self.builder_config
        if cfg.num_bodies is None:
            names = cfg.bodies or tuple(subjects.embedded_body_names())
            num_test = 1
        else:
            check_num_bodies(cfg.num_bodies)
            bodies_lib.check_installed()  # before TFDS starts writing anything
            names = tuple(bodies_lib.body_name(cfg.seed, i) for i in range(cfg.num_bodies))
            num_test = max(1, cfg.num_bodies // 10)
        if len(names) < 2:
            return {"train": self._generate_examples(names, "train")}
        return {
            "train": self._generate_examples(names[:-num_test], "train"),
            "test": self._generate_examples(names[-num_test:], "test"),
        }

    def _load(self):
        """``name -> Subject`` of this config's bodies (picklable, for build workers)."""
        cfg = self.builder_config
        if cfg.num_bodies is None:
            return subjects.load_embedded_body
        return functools.partial(
            bodies_lib.generated_subject, cache_dir=cfg.body_cache_dir, clothed=cfg.clothed
        )

    def _generate_examples(self, names, split):
        cfg = self.builder_config
        if cfg.beam:
            cache = self.render_cache_dir
            return tfds_base.beam_records(self._load(), names, cfg.render, cfg.seed, cache)
        return self._generate_locally(names, split)

    def _generate_locally(self, names, split):
        report = subjects.BuildReport()
        cfg = self.builder_config
        if cfg.num_bodies is not None:
            # Parse Anny's assets once before the workers start, so they only read the cache.
            bodies_lib.load_body_model(cfg.body_cache_dir)
        yield from records.generate_records(
            names, self._load(), cfg.render, report, cfg.seed, self.render_cache_dir,
            self.num_workers,
        )  # fmt: skip
        report.write(os.path.join(self.data_dir, f"build_report_{split}.json"))
        if cfg.num_bodies is not None:
            self._write_bodies(report, split)
        logging.info("synthetic_humans/%s %s: %s", cfg.name, split, report.summary())

    def _write_bodies(self, report: subjects.BuildReport, split: str) -> None:
        """``bodies_<split>.json`` (every body's draws, rejection counts) and the NOTICE."""
        shutil.copy(os.path.join(os.path.dirname(__file__), "NOTICE"), self.data_dir)
        made = report.meta
        rejected = sum(m["rejected"] for m in made)
        fallbacks = sum(m["pose"] != m["drawn_pose"] for m in made)
        summary = {
            "rejected_pose_draws": rejected,
            "a_pose_fallbacks": fallbacks,
            "skipped_bodies": len(report.skipped),
        }
        with open(os.path.join(self.data_dir, f"bodies_{split}.json"), "w") as f:
            json.dump(summary | {"bodies": made}, f, indent=1)
        logging.info(
            "%d bodies generated, %d pose draws rejected for self-intersection, "
            "%d fell back to the A-pose, %d skipped",
            len(made),
            rejected,
            fallbacks,
            len(report.skipped),
        )


def variant(
    base: str,
    name: str | None = None,
    num_bodies: int | None = None,
    seed: int | None = None,
    body_cache_dir: str | None = None,
    clothed: bool = True,
    **changes,
) -> Config:
    """Builder config ``base`` ("pifuhd" | "twok2k") renamed ``name`` (default ``base``),
    with ``num_bodies`` bodies generated from ``seed`` and any other field ``changes``.

    Generated variants are named ``<name>_n<N>_s<seed>`` (``<name>_s<seed>`` for a seed
    alone), so a variant's dataset folder never mixes with another's.
    """
    config = next((c for c in Builder.BUILDER_CONFIGS if c.name == base), None)
    if config is None:
        names = [c.name for c in Builder.BUILDER_CONFIGS]
        raise HdjaxError(f"synthetic_humans has configs {names}, not {base!r}")
    name = name or base
    if not clothed and num_bodies is None:
        raise HdjaxError("clothed=False (--naked) applies to generated bodies (num_bodies)")
    if num_bodies is not None:
        check_num_bodies(num_bodies)
        bodies_lib.check_installed()
        changes["num_bodies"] = num_bodies
        name += f"_n{num_bodies}_s{config.seed if seed is None else seed}"
        if not clothed:
            name += "_naked"
            changes["clothed"] = False
    elif seed is not None:
        name += f"_s{seed}"
    if seed is not None:
        changes["seed"] = seed
    if body_cache_dir is not None:
        changes["body_cache_dir"] = os.path.expanduser(body_cache_dir)
    return dataclasses.replace(config, name=name, **changes)


def check_num_bodies(num_bodies: int) -> None:
    """Raise `HdjaxError` unless ``num_bodies`` is a positive integer."""
    if isinstance(num_bodies, bool) or not isinstance(num_bodies, int) or num_bodies < 1:
        raise HdjaxError(f"num_bodies must be a positive integer, got {num_bodies!r}")


CITATION = r"""@inproceedings{anny,
  title={Human Mesh Modeling for {A}nny {B}ody},
  author={Romain Br{\'e}gier and Gu{\'e}nol{\'e} Fiche and Laura Bravo-S{\'a}nchez and
          Thomas Lucas and Matthieu Armando and Philippe Weinzaepfel and Gr{\'e}gory Rogez
          and Fabien Baradel},
  booktitle={Computer Vision -- ECCV 2026},
  year={2026},
  pages={170--188}
}"""

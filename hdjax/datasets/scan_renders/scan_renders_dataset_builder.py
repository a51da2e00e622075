"""TFDS builder `scan_renders`: renders of your own textured scans (manual download).

    python -m hdjax.datasets.build scan_renders --config=pifuhd --manual_dir=/path/to/scans

``manual_dir`` holds one folder per scan: THuman2.0 ``<id>/<id>.obj`` (+ ``material0.mtl``
and its texture) or RenderPeople ``<name>/<name>_100k.obj`` (+ ``tex/``); any folder with
one OBJ/PLY/GLB works (see `hdjax.data.subjects.find_scan_file`). Scans must be +y up.
Unusable scans (fail to load, no faces, NaN vertices, absurdly large) are skipped; the
reasons go to ``build_report_<split>.json`` next to the shards and the counts to the log.
Every 10th scan (sorted by name) goes to `test`, the rest to `train`.

Resuming: every rendered record is also saved to
``<data_dir>/scan_renders/<config>/render_cache/<version>/`` (one ``.npz`` per record, named
by its key and a hash of the render config and seed), so rerunning an interrupted build
renders only the missing records. The cache is deleted after a successful build (config
``keep_render_cache=True`` keeps it; ``render_cache=False`` disables it) and can be deleted
by hand at any time; a changed render config or seed never reuses its files. The scans
themselves are not hashed: after editing a scan in place, delete the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import ClassVar

import tensorflow_datasets as tfds

from hdjax.data import records, subjects
from hdjax.datasets import tfds_base
from hdjax.errors import HdjaxError


@dataclasses.dataclass
class Config(tfds_base.RenderBuilderConfig):
    """``test_every``: every n-th scan goes to `test` (0: no test split)."""

    test_every: int = 10


class Builder(tfds_base.RenderBuilder):
    """Scan renders: PIFuHD (ortho 1024²) and 2K2K (persp 2048²) configs."""

    VERSION = tfds.core.Version("1.5.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Keypoints (31, 3) in 2K2K's layout (all 0 for scans without joints).",
        "1.2.0": "SH lighting with AO, camera jitter, hand points (all 0 for scans).",
        "1.3.0": "A scan's views share one labelled surface-point pool per level; points stored "
        "as raw bytes.",
        "1.4.0": "Orthographic renders turn each scan about the median of its surface, not of "
        "its vertices (`RenderConfig.center`).",
        "1.5.0": "Keypoint visibility 2 seen / 1 hidden by the scan / 0 outside the image.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put one folder per scan in manual_dir: THuman2.0 `<id>/<id>.obj` with its MTL and
    texture, or RenderPeople OBJ + texture folders (+y up, any unit).
    """
    BUILDER_CONFIGS: ClassVar[list[Config]] = tfds_base.camera_configs(Config)

    def _info(self) -> tfds.core.DatasetInfo:
        return self._info_for(__doc__)

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
        if cfg.beam:
            load = functools.partial(subjects.load_named_scan, root, cfg.render)
            cache = self.render_cache_dir
            return tfds_base.beam_records(load, names, cfg.render, cfg.seed, cache)
        return self._generate_locally(root, names, split)

    def _generate_locally(self, root, names, split):
        cfg = self.builder_config
        report = subjects.BuildReport()
        load = functools.partial(subjects.load_named_scan, root, cfg.render)
        yield from records.generate_records(
            names, load, cfg.render, report, cfg.seed, self.render_cache_dir, self.num_workers
        )
        report.write(os.path.join(self.data_dir, f"build_report_{split}.json"))
        logging.warning("scan_renders/%s %s: %s", cfg.name, split, report.summary())
        for name, reason in report.skipped:
            logging.warning("skipped scan %s: %s", name, reason)

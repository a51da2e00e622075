"""What the TFDS builders in `hdjax.datasets` share: config fields, the two camera configs,
array_record output, the resumable render cache and the Apache Beam route. Imports TFDS (not
TensorFlow)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence

import tensorflow_datasets as tfds

from hdjax.data import records, render_cache, render_config
from hdjax.data.subjects import Subject


@dataclasses.dataclass
class RenderBuilderConfig(tfds.core.BuilderConfig):
    """A camera convention plus how to build (fields shared by every render dataset)."""

    render: render_config.RenderConfig = dataclasses.field(
        default_factory=render_config.RenderConfig
    )
    seed: int = 0
    beam: bool = False  # render subjects in parallel with Apache Beam (tfds beam support)
    # Local builds: processes rendering subjects in parallel (0: one per CPU core). The
    # records do not depend on it.
    num_workers: int = 0
    render_cache: bool = True  # cache rendered records so an interrupted build resumes
    keep_render_cache: bool = False  # keep the cache after a successful build


def camera_configs(config_cls: type[RenderBuilderConfig]) -> list[RenderBuilderConfig]:
    """The `pifuhd` (orthographic 1024²) and `twok2k` (perspective 2048²) configs."""
    return [
        config_cls(
            name="pifuhd",
            description="Orthographic 1024², 12 yaws, PIFu normalisation.",
            render=render_config.pifuhd_config(),
        ),
        config_cls(
            name="twok2k",
            description="Perspective 2048² (FOV 50°), yaw −30..30 step 10.",
            render=render_config.twok2k_config(),
        ),
    ]


class RenderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """array_record shards, and a render cache kept until the build succeeds."""

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @property
    def num_workers(self) -> int:
        """The config's ``num_workers``, 0 resolved to the number of CPU cores."""
        return self.builder_config.num_workers or os.cpu_count() or 1

    @property
    def render_cache_dir(self) -> str | None:
        """``<data_dir>/<name>/<config>/render_cache/<version>``, None if disabled."""
        if not self.builder_config.render_cache:
            return None
        return render_cache.builder_cache_dir(
            self.data_dir_root, self.name, self.builder_config.name, self.version
        )

    def download_and_prepare(self, **kwargs) -> None:
        """TFDS's build, then removal of the render cache (unless ``keep_render_cache``)."""
        super().download_and_prepare(**kwargs)
        # Only reached when TFDS has written and renamed the complete dataset folder.
        if self.render_cache_dir and not self.builder_config.keep_render_cache:
            render_cache.remove_cache_dir(self.render_cache_dir)

    def _info_for(self, description: str, **kwargs) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=records.tfds_features(self.builder_config.render),
            **kwargs,
        )


def beam_records(
    load: Callable[[str], Subject],
    names: Sequence[str],
    config: render_config.RenderConfig,
    seed: int = 0,
    cache_dir: str | None = None,
):
    """The Beam version of `records.generate_records`: a PTransform of ``(key, record)``.

    One Beam element per subject (``load(name) -> Subject``), so workers render subjects in
    parallel. Skipped subjects are counted in the Beam metrics ``hdjax/skipped_subjects``
    and logged with their reason (no report file: workers do not share one). ``cache_dir``
    is `records.generate_records`'s; every worker must see it (local runner or a shared
    mount).
    """
    import apache_beam as beam

    def one(name: str):
        result = records.render_subject(load, config, seed, cache_dir, name)
        if result.error is not None:
            logging.warning("skipped subject %s: %s", name, result.error)
            beam.metrics.Metrics.counter("hdjax", "skipped_subjects").inc()
        beam.metrics.Metrics.counter("hdjax", "records").inc(len(result.records))
        beam.metrics.Metrics.counter("hdjax", "cached_records").inc(result.cached)
        yield from result.records

    return beam.Create(list(names)) | beam.FlatMap(one)

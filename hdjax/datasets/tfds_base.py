"""What the TFDS builders in `hdjax.datasets` share: config fields, the two camera configs,
array_record output, the resumable render cache and the Apache Beam route. Imports TFDS (not
TensorFlow)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import struct
from collections.abc import Callable, Sequence
from typing import ClassVar

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import example_serializer, shuffle

from hdjax.data import records, render_cache, render_config
from hdjax.data.subjects import Subject
from hdjax.errors import HdjaxError


class _FileBucket(shuffle._Bucket):
    """TFDS's temporary shuffle bucket on `epath` files instead of ``tf.io.gfile``.

    A split over TFDS's in-memory limit (1 GB: ~1,400 records of 256², ~300 of 1024²) is
    spilled to bucket files written through TensorFlow, which hdjax does not install, so every
    large build failed after rendering with "No module named 'tensorflow'". Same file format
    as TFDS's (key, '=Q' size, bytes).
    """

    def add(self, key, data: bytes) -> None:
        if not self._fobj:
            epath.Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._fobj = epath.Path(self._path).open("wb")
        self._fobj.write(shuffle._hkey_to_bytes(key))
        self._fobj.write(struct.pack("=Q", len(data)))
        self._fobj.write(data)
        self._length += 1
        self._size += len(data)

    def read_values(self):
        self.flush()
        path = epath.Path(self._path)
        if not path.exists():  # a bucket that got no record
            return
        with path.open("rb") as f:
            while key := f.read(shuffle.HKEY_SIZE_BYTES):
                (size,) = struct.unpack("=Q", f.read(8))
                yield shuffle._read_hkey(key), f.read(size)

    def del_file(self) -> None:
        epath.Path(self._path).unlink(missing_ok=True)


if importlib.util.find_spec("tensorflow") is None:
    shuffle._Bucket = _FileBucket


class _SortedSerializer(example_serializer.ExampleSerializer):
    """TFDS's serializer with the record's fields in a fixed (sorted) order.

    A tf.train.Example keeps its fields in a protobuf map, which serializes in an order that
    changes with the process's string hashing: two builds of the same config wrote the same
    records as different bytes (issue #24).
    """

    def serialize_example(self, example) -> bytes:
        return self.get_tf_example(example).SerializeToString(deterministic=True)


example_serializer.ExampleSerializer = _SortedSerializer


@dataclasses.dataclass
class RenderBuilderConfig(tfds.core.BuilderConfig):
    """A camera convention plus how to build (fields shared by every render dataset).

    The config's name names the dataset's folder; `BUILD_FIELDS` only say how a build runs,
    so a copy of a registered config that changes only them keeps its name (see
    `RenderBuilder._create_builder_config`).
    """

    BUILD_FIELDS: ClassVar[tuple[str, ...]] = (
        "num_workers",
        "beam",
        "render_cache",
        "keep_render_cache",
    )

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

    def _create_builder_config(self, builder_config, version):
        """TFDS's config lookup, which also takes a copy of a registered config that differs
        from it in `RenderBuilderConfig.BUILD_FIELDS` alone.

        TFDS accepts a config named like one of `BUILDER_CONFIGS` only if it *is* that
        object: a copy, even an equal one (``dataclasses.replace(config, num_workers=8)``,
        or a builder config made again from a run's config), raises "Cannot name a custom
        BuilderConfig the same as an available BuilderConfig". A copy that renders
        something else under a registered name would share its dataset folder, and is
        refused with the fields that differ.

        Raises:
          HdjaxError: ``builder_config`` has a registered name but other records.
        """
        if isinstance(builder_config, RenderBuilderConfig):
            registered = self.get_builder_config(builder_config.name, builder_config.version)
            if registered is not None and registered is not builder_config:
                differ = [
                    f.name
                    for f in dataclasses.fields(builder_config)
                    if f.name not in builder_config.BUILD_FIELDS
                    and getattr(builder_config, f.name) != getattr(registered, f.name, None)
                ]
                if differ:
                    raise HdjaxError(
                        f"{self.name} config {builder_config.name!r} differs from the "
                        f"registered one in {', '.join(differ)}: give it another name"
                    )
                return builder_config
        return super()._create_builder_config(builder_config, version=version)

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

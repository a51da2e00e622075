"""One config tree: sections build the dataclasses modules take; choices fail in one line."""

import pytest

from configs.pifuhd import get_config
from hdjax import configlib
from hdjax.errors import HdjaxError
from hdjax.main import validate_config
from hdjax.models.layers import Numerics
from hdjax.models.pifuhd import LevelArch, PIFuHDArch, numerics_from_config


@pytest.mark.parametrize("variant", [None, "tiny", "parity"])
def test_variants_build_and_hash(variant):
    cfg = get_config(variant)
    validate_config(cfg)
    arch, numerics = (
        PIFuHDArch.from_config(cfg.model.arch),
        numerics_from_config(cfg.model.numerics),
    )
    assert isinstance(arch.coarse, LevelArch) and isinstance(arch.coarse.mlp_dim, tuple)
    assert hash(arch) == hash(PIFuHDArch.from_config(cfg.model.arch))
    assert numerics.conv_impl in ("xla", "cpu")  # "auto" resolved by backend
    assert configlib.build(PIFuHDArch, configlib.to_dict(arch)) == arch


def test_sections_mirror_the_data_dataclasses():
    """A field added to PipelineConfig or RenderConfig must appear in the config tree."""
    pytest.importorskip("grain")
    from hdjax.data.pipeline import PipelineConfig
    from hdjax.data.render_config import RenderConfig

    for variant in (None, "tiny"):
        cfg = get_config(variant)
        pipe = configlib.build(PipelineConfig, cfg.input.pipeline, "input.pipeline")
        render = configlib.build(RenderConfig, cfg.render, "render")
        assert pipe.coarse_size == cfg.model.arch.coarse_size
        assert render.size == cfg.model.arch.fine_size
        assert set(cfg.input.pipeline) == {f for f in PipelineConfig.__dataclass_fields__}
        assert set(cfg.render) == {f for f in RenderConfig.__dataclass_fields__}


def test_pipeline_sizes_follow_the_architecture():
    cfg = get_config()
    cfg.model.arch.coarse_size = 256
    assert cfg.input.pipeline.coarse_size == 256


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("model.arch.coarse.hg_down", "conv64", r"model\.arch\.coarse\.hg_down='conv64': expected"),
        ("model.numerics.dtype", "float64", r"model\.numerics\.dtype='float64': expected"),
        ("model.numerics.conv_impl", "gpu", r"config model\.numerics\.conv_impl='gpu': expected"),
        ("reconstruct.octree", "dense", r"config reconstruct\.octree='dense': expected"),
        ("reconstruct.colors", "rgb", r"config reconstruct\.colors='rgb': expected"),
        ("train.occupancy_gamma", 1.0, r"train\.occupancy_gamma=1\.0: must be in \[0, 1\)"),
        ("input.pipeline.free_background", -0.1, r"free_background=-0\.1: must be in"),
    ],
)
def test_bad_choice_is_one_line_naming_the_field(field, value, message):
    cfg = get_config()
    *parents, leaf = field.split(".")
    node = cfg
    for k in parents:
        node = node[k]
    node[leaf] = value  # as --config.<field>=<value> does, after get_config
    with pytest.raises(HdjaxError, match=message) as e:
        validate_config(cfg)
    assert "\n" not in str(e.value)


def test_unknown_and_missing_fields_are_named():
    with pytest.raises(HdjaxError, match=r"^arch\.coarse\.hg_dimm: unknown field"):
        configlib.build(PIFuHDArch, dict(coarse=dict(hg_dimm=1), fine={}), "arch")
    with pytest.raises(HdjaxError, match=r"^arch\.fine: missing"):
        configlib.build(PIFuHDArch, dict(coarse={}), "arch")
    assert configlib.build(Numerics, {"dtype": "bfloat16"}).dtype == "bfloat16"


def test_defaults_section_is_the_dataclass_at_its_defaults():
    from hdjax.data.render_config import RenderConfig

    section = configlib.defaults(RenderConfig, size=64)
    built = configlib.build(RenderConfig, section, "render")
    assert built == RenderConfig(size=64)
    section.scan_unit_cm = 100.0  # an optional field stays typed: a placeholder, not None
    assert configlib.build(RenderConfig, section, "render").scan_unit_cm == 100.0
    with pytest.raises(HdjaxError, match="RenderConfig has no field 'sise'"):
        configlib.defaults(RenderConfig, sise=64)

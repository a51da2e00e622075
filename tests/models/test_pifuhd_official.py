"""Official checkpoint layout: options <-> architecture, key names, converted round trip."""

import jax
import numpy as np
import pytest

from configs.pifuhd import get_config
from hdjax.errors import HdjaxError
from hdjax.models.pifuhd import PIFuHDArch, init_params
from hdjax.models.pifuhd_official import (
    arch_from_options,
    arch_to_options,
    convert_state_dict,
    load,
    load_converted,
    official_key,
    params_to_state_dict,
    save_converted,
)


@pytest.fixture(scope="module")
def tiny():
    arch = PIFuHDArch.from_config(get_config("tiny").model.arch)
    return arch, init_params(arch, 3)


@pytest.mark.parametrize("variant", [None, "tiny"])
def test_options_round_trip(variant):
    arch = PIFuHDArch.from_config(get_config(variant).model.arch)
    opt, opt_netG = arch_to_options(arch)
    assert arch_from_options(opt, opt_netG) == arch
    assert opt_netG["loadSize"] == arch.coarse_size and opt["loadSizeBig"] == arch.fine_size


def test_bad_options_name_the_field():
    opt, opt_netG = arch_to_options(PIFuHDArch.from_config(get_config().model.arch))
    with pytest.raises(HdjaxError, match=r"^x\.pt: checkpoint options\.coarse\.hg_down='conv'"):
        arch_from_options(opt, dict(opt_netG, hg_down="conv"), "x.pt")
    with pytest.raises(HdjaxError, match=r"option opt_netG\.loadSize is missing"):
        arch_from_options(opt, {k: v for k, v in opt_netG.items() if k != "loadSize"})


def test_official_keys_and_layouts(tiny):
    arch, _ = tiny
    assert official_key(("netG", "netF", "conv_in", "kernel"), arch) == (
        "netG.netF.model.1.weight",
        "conv",
    )
    assert official_key(("netG", "netB", "up0", "conv", "kernel"), arch)[1] == "conv_transpose"
    assert official_key(("mlp", "filters_2", "kernel"), arch) == ("mlp.filters.2.weight", "dense")
    key = ("image_filter", "conv2", "downsample", "kernel")
    assert official_key(key, arch)[0] == "image_filter.conv2.downsample.2.weight"


def test_state_dict_round_trip(tiny):
    arch, params = tiny
    sd = params_to_state_dict(params, arch)
    back = convert_state_dict(sd, arch)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_converted_checkpoint_round_trip(tmp_path, tiny):
    arch, params = tiny
    save_converted(tmp_path / "conv", params, arch)
    arch2, params2 = load_converted(tmp_path / "conv")
    assert arch2 == arch
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
    assert load(tmp_path / "conv")[0] == arch
    with pytest.raises(HdjaxError, match="not a converted hdjax checkpoint"):
        load_converted(tmp_path)
    before = sorted(p.name for p in (tmp_path / "conv").iterdir())
    with pytest.raises(HdjaxError, match="refusing to overwrite"):
        save_converted(tmp_path / "conv", params, arch)
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == before

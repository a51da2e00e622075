"""VGG19 features from a torchvision-layout weights file, against torch."""

import jax
import numpy as np
import pytest

from hdjax.errors import HdjaxError
from hdjax.models.vgg import VGG19Features, load_vgg19

torch = pytest.importorskip("torch")


def _torch_vgg19_features():
    """torchvision's ``vgg19().features`` layout (configuration E), random weights."""
    layers, cin = [], 3
    for v in (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ):
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU(inplace=False)]
            cin = v
    return torch.nn.Sequential(*layers)


def test_features_match_torch(tmp_path):
    torch.manual_seed(0)
    features = _torch_vgg19_features().eval()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        h, want = torch.from_numpy(x.transpose(0, 3, 1, 2)), []
        for i, layer in enumerate(features[:30]):
            h = layer(h)
            if i in (1, 6, 11, 20, 29):  # relu1_1 ... relu5_1
                want.append(h.numpy().transpose(0, 2, 3, 1))
    got = jax.jit(VGG19Features().apply)(load_vgg19(path), x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want, strict=True):
        # Measured 3.3e-7 of the activations' range; 1e-5 is far from any layout error.
        assert np.abs(np.asarray(g) - w).max() <= 1e-5 * max(np.abs(w).max(), 1.0)


def test_wrong_file_is_one_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(HdjaxError, match=r"other\.pth: not torchvision's VGG19: features\.0"):
        load_vgg19(path)


def test_training_reads_the_file_named_in_the_config(tmp_path):
    """`train.vgg19` -> the normals stage's loss has a `vgg` term equal to pix2pixHD's
    perceptual loss computed by torch on the same prediction and target."""
    from configs.pifuhd import get_config
    from hdjax.models.pifuhd import PIFuHD, init_params
    from hdjax.train import losses, pifuhd

    torch.manual_seed(0)
    features = _torch_vgg19_features().eval()
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    cfg = get_config("tiny")
    cfg.train.vgg19 = str(path)
    model = pifuhd.training_model(cfg)
    params = init_params(model.arch, 0)
    batch = pifuhd.random_batch(cfg, "normals", np.random.default_rng(0), 1)
    _, terms = pifuhd.stage_loss(model, "normals", params, batch, cfg, losses.vgg_features(cfg))
    pred = np.asarray(model.apply({"params": params}, batch["image"], method=PIFuHD.front_normal))
    hp, ht = (torch.tensor(a.transpose(0, 3, 1, 2)) for a in (pred, batch["normal_front"]))
    want, weights = 0.0, {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}
    with torch.no_grad():
        for i, layer in enumerate(features[:30]):
            hp, ht = layer(hp), layer(ht)
            if i in weights:  # relu1_1 ... relu5_1
                want += weights[i] * float((hp - ht).abs().mean())
    got = float(terms["front/vgg"])
    # Measured 1.3e-7 relative (float32 sums of many terms); a layout error is O(1).
    assert abs(got - want) <= 1e-4 * abs(want), (got, want)

"""The inputs of the 2K2K parity test: random weights, image and part transforms.

Shared by `make_twok2k_reference.py` (which runs the official code on them, manually) and
`test_twok2k_parity.py` (which runs hdjax on them in CI), so both sides see the same numbers.

Weights: one numpy Generator per state-dict key, seeded by (SEED, crc32(key)), so the draw
does not depend on key order. Conv filters are He-scaled normal draws with each filter's mean
removed (the maps then respond to structure, not to the input's offset); conv biases
N(0, 0.1); BatchNorm gamma U(0.8, 1.2), beta N(0, 0.1), running mean N(0, 0.1), running var
U(0.5, 1.5). The output biases put the heads in their working range: normal heads +0.5 (ReLU
outputs mostly positive), depth heads (2.0, 2.5, 0.0) so front/back depth sit inside
ReLU6's linear range and the mask is on both sides of 0.5.
"""

from __future__ import annotations

import zlib

import numpy as np

SEED = 20231125
CANVAS = 2048
_HEAD_BIAS = {
    "ImgNorm_to_Dep.Conv_1x1.bias": np.array([2.0, 2.5, 0.0]),
    "refine.merge3_2.bias": np.array([2.0, 2.5, 0.0]),
}


def _draw(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    leaf = key.rsplit(".", 1)[1]
    if key in _HEAD_BIAS:
        return _HEAD_BIAS[key].astype(np.float32)
    if key.endswith("Conv_1x1.conv.0.bias"):
        return np.full(shape, 0.5, np.float32)
    if leaf == "weight" and len(shape) == 4:
        fan_in = int(np.prod(shape[1:]))
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        if fan_in > 1:
            w -= w.mean(axis=(1, 2, 3), keepdims=True)
        return w.astype(np.float32)
    if leaf == "bias" and _is_conv_bias(key):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf == "weight":
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if leaf == "bias":
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf == "running_mean":
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if leaf == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    raise KeyError(key)


def _is_conv_bias(key: str) -> bool:
    """Biases of convs, not of BatchNorms, in the official naming."""
    inner = key.rsplit(".", 2)
    index = inner[1] if len(inner) == 3 else ""
    if not index.isdigit():  # e.g. refine.merge3_2.bias, ImgNorm_to_Dep.Conv_1x1.bias
        return True
    module = key.rsplit(".", 3)[1]
    if module in ("W_g", "W_x", "psi"):
        return index == "0"
    if module == "up":
        return index == "1"
    return index in ("0", "3")  # conv_block / single_conv / conv_block_1x1


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict:
    """Official-layout state dict (numpy) for `shapes` (key -> PyTorch shape), plus the
    `num_batches_tracked` buffer of each BatchNorm."""
    out = {}
    for key, shape in shapes.items():
        out[key] = _draw(key, tuple(shape), seed)
        if key.endswith(".running_mean"):
            out[key.replace(".running_mean", ".num_batches_tracked")] = np.zeros((), np.int64)
    return out


# A standing person, arms slightly spread: per part (centre x, centre y) in pixels, rotation
# in degrees and canonical -> image scale. The head and the right foot stick out of the image,
# so the crops and the warp back meet the image border.
PARTS = (
    ((1024, 150), 5.0, 1.00),  # head
    ((1024, 620), -2.0, 1.35),  # torso
    ((1300, 560), 20.0, 1.20),  # L upper arm
    ((1420, 860), 10.0, 1.10),  # L lower arm
    ((748, 560), -20.0, 1.20),  # R upper arm
    ((628, 860), -12.0, 1.10),  # R lower arm
    ((1110, 1150), 3.0, 1.45),  # L thigh
    ((1130, 1560), 0.5, 1.50),  # L shin
    ((938, 1150), -3.0, 1.45),  # R thigh
    ((918, 1560), -2.0, 1.50),  # R shin
    ((1160, 1900), 80.0, 1.00),  # L foot
    ((880, 1990), -80.0, 1.00),  # R foot
)


def parity_theta() -> np.ndarray:
    """(1, 12, 2, 3) float32 canonical -> image similarity transforms (normalised coords)."""
    out = []
    for (cx, cy), deg, s in PARTS:
        a = np.deg2rad(deg)
        out.append(
            [
                [s * np.cos(a), -s * np.sin(a), 2 * cx / CANVAS - 1],
                [s * np.sin(a), s * np.cos(a), 2 * cy / CANVAS - 1],
            ]
        )
    return np.asarray(out, np.float32)[None]


def _smooth(rng: np.random.Generator, lo: float, hi: float, channels: int, canvas: int):
    """A 17 x 17 grid of uniform random values, bilinearly interpolated to canvas^2."""
    coarse = rng.uniform(lo, hi, (17, 17, channels))
    t = np.linspace(0, 16, canvas)
    hat = np.maximum(0, 1 - np.abs(t[:, None] - np.arange(17)[None]))  # (canvas, 17) taps
    return np.einsum("ij,jkc,lk->ilc", hat, coarse, hat)


def silhouette(canvas: int = CANVAS) -> np.ndarray:
    """(canvas, canvas) bool: the union of one ellipse per part (`PARTS`, scaled)."""
    f = canvas / CANVAS
    y, x = np.mgrid[0:canvas, 0:canvas]
    inside = np.zeros((canvas, canvas), bool)
    for (cx, cy), _, s in PARTS:
        inside |= ((x - cx * f) / (110 * s * f)) ** 2 + ((y - cy * f) / (190 * s * f)) ** 2 < 1
    return inside


def parity_image(seed: int = SEED, canvas: int = CANVAS) -> np.ndarray:
    """(1, canvas, canvas, 3) float32 in [-1, 1]: smooth random colours (a 17 x 17 grid
    of random values, bilinearly interpolated) inside a body-like silhouette, -1 (black)
    outside, as the demo blackens the background."""
    img = _smooth(np.random.default_rng(seed), -0.9, 0.9, 3, canvas)
    return np.where(silhouette(canvas)[..., None], img, -1.0).astype(np.float32)[None]


# The training-step parity (`make_twok2k_train_reference.py`, `test_twok2k_train_parity.py`):
# the official code's part crops are fixed (368 x 320 ... 176 x 128) and its refiner
# output is fixed at 2048^2 (one literal the reference script substitutes); 640^2 is the
# smallest canvas (a multiple of 128) that holds the 528-row torso crop. Base width 8
# (`--config=twok2k:tiny`'s) instead of 64 keeps both sides' step to seconds on a CPU.
TRAIN_CANVAS = 640
TRAIN_WIDTH = 8


def train_depths(seed: int = SEED, canvas: int = TRAIN_CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic ground truth (1, canvas, canvas) float32 in network units (D = d / 512),
    0 outside the image's silhouette: front D in [1.7, 2.3] (smooth), back = front + a
    smooth thickness in [0.1, 0.4]."""
    rng = np.random.default_rng([seed, 1])
    front = 2.0 + _smooth(rng, -0.3, 0.3, 1, canvas)[..., 0]
    back = front + _smooth(rng, 0.1, 0.4, 1, canvas)[..., 0]
    inside = silhouette(canvas)
    return tuple(np.where(inside, d, 0.0).astype(np.float32)[None] for d in (front, back))


def reduce_grads(grads: dict, samples: int = 8) -> dict:
    """Per official key: the gradient's L2 norm (``<key>:norm``) and ``samples`` entries at
    indices drawn from (SEED, crc32(key)) over the flat official (OIHW) layout
    (``<key>:at``)."""
    red = {}
    for key, g in grads.items():
        flat = np.asarray(g, np.float64).ravel()
        rng = np.random.default_rng([SEED, zlib.crc32(key.encode())])
        idx = rng.choice(flat.size, min(samples, flat.size), replace=False)
        red[f"{key}:norm"] = np.float32(np.sqrt((flat**2).sum()))
        red[f"{key}:at"] = flat[np.sort(idx)].astype(np.float32)
    return red


PART_NETS = ("face", "upper", "arm", "leg", "shoe")
# Full-resolution windows kept in the reference: the left forearm, the neck (head / torso
# blend), as (row slice, column slice).
WINDOWS = {
    "arm": (slice(800, 896), slice(1380, 1476)),
    "neck": (slice(300, 396), slice(976, 1072)),
}


def reduce_outputs(out: dict) -> dict:
    """The parts of the forward's outputs (hdjax names, NHWC numpy) the reference keeps:
    subsampled grids and a few full-resolution windows, to stay small."""
    red = {}
    for name in PART_NETS:
        for side in ("front", "back"):
            red[f"{name}_normal_{side}"] = out[f"{name}_normal_{side}"][:, 1::6, 2::6]
    for side in ("front", "back"):
        red[f"down_normal_{side}"] = out[f"down_normal_{side}"][:, ::4, ::4]
    for k in ("down_depth_front", "down_depth_back"):
        red[k] = out[k][:, ::2, ::2]
    # Whole: the test needs every pixel's mask to tell threshold ties (mask within float
    # noise of 0.5, which the refiner's input masking turns into 0-vs-6 depth jumps).
    red["down_depth_mask"] = out["down_depth_mask"]
    for k in ("depth_front", "depth_back", "depth_mask", "normal_front", "normal_back"):
        red[k] = out[k][:, 3::16, 5::16]
        for w, (rows, cols) in WINDOWS.items():
            red[f"{k}_{w}"] = out[k][:, rows, cols]
    red["inv_theta"] = out["inv_theta"]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in red.items()}

"""Training losses: PIFuHD's occupancy BCE and normal-network losses, and 2K2K's terms.

`occupancy_bce` is the official ``CustomBCELoss`` as ``HGPIFuMRNet.query`` feeds it
(``lib/net_util.py`` of the PIFuHD code): predictions clamped to [1e-5, 1 − 1e-5], each
sample's positive term weighted by γ = its fraction of outside points among the points in
the image box (the paper's λ) and the negative term by 1 − γ, points outside the box left
out (the official code zeroes their prediction and rescales by N / #in-box, which is the
same mean up to the clamp's 1e-5), averaged over points, samples and hourglass stacks.

`normal_loss` is pix2pixHD's objective as PIFuHD trains its normal networks,
L = λ_VGG · L_VGG + λ_l1 · L1 (the paper: λ_l1 = 5), with the VGG perceptual term when a
feature function is given (`vgg_features`: torchvision's VGG19 file); without one (no
pretrained VGG19 here) it falls back to
L1 + (1 − SSIM), the usual structure term, and says so where the trainer logs.

2K2K (``models/loss_builder.py`` of the official code): every L1 / smooth-L1 / BCE term is a
mean per sample summed over the batch, the SSIM term one batch mean (`twok2k_normal_loss`,
`twok2k_depth_loss`, `twok2k_consistency_loss`, `twok2k_mask_loss`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

_P_MIN = 1e-5  # the official clamp of the predicted occupancy
_LOGIT_MAX = float(jnp.log((1.0 - _P_MIN) / _P_MIN))


def occupancy_bce(
    logits: jax.Array,
    labels: jax.Array,
    valid: jax.Array | None = None,
    gamma: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """PIFuHD's γ-weighted BCE.

    Args:
      logits: (S, B, N) pre-sigmoid predictions of S hourglass stacks.
      labels: (B, N) 1 inside, 0 outside.
      valid: (B, N) bool, points inside the image box (default: all).
      gamma: a fixed γ instead of the official per-sample fraction of outside points. The
        per-sample γ balances the two classes, so a point whose chance of being inside is p
        ends up predicted inside when p > 1 − γ: with PIFu's half-inside samples that is the
        0.5 level, but free-space points (all outside) raise γ to ~0.65 and the mesh
        swells wherever depth is uncertain. 0.5 keeps the level at p = 0.5 for any mix.

    Returns:
      the scalar loss (mean over stacks) and (S,) per-stack losses.
    """
    labels = labels.astype(jnp.float32)
    valid = jnp.ones_like(labels) if valid is None else valid.astype(jnp.float32)
    count = jnp.maximum(valid.sum(-1), 1.0)  # (B,)
    if gamma is None:
        gamma = 1.0 - (labels * valid).sum(-1) / count  # fraction outside, per sample
    else:
        gamma = jnp.full_like(count, gamma)
    # Clamping p to [1e-5, 1 - 1e-5] is clamping the logit (same values, same gradients).
    z = jnp.clip(logits.astype(jnp.float32), -_LOGIT_MAX, _LOGIT_MAX)
    g = gamma[None, :, None]
    point = -(g * labels * jax.nn.log_sigmoid(z) + (1 - g) * (1 - labels) * jax.nn.log_sigmoid(-z))
    per_stack = ((point * valid).sum(-1) / count).mean(-1)  # (S,)
    return per_stack.mean(), per_stack


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> jax.Array:
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable 'valid' Gaussian filter of (B, H, W, C) maps, per channel."""
    c = x.shape[-1]
    k = window.shape[0]
    kh = jnp.tile(window.reshape(k, 1, 1, 1), (1, 1, 1, c))
    kw = jnp.tile(window.reshape(1, k, 1, 1), (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(
        x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c
    )
    return jax.lax.conv_general_dilated(
        x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c
    )


def ssim(
    a: jax.Array,
    b: jax.Array,
    data_range: float = 2.0,
    window: int = 11,
    nonnegative: bool = False,
) -> jax.Array:
    """Mean SSIM (Wang et al. 2004: ``window``-tap Gaussian σ = 1.5, K1 = 0.01, K2 = 0.03).

    Args:
      a, b: (B, H, W, C) maps, values spanning ``data_range`` (2 for [−1, 1] normals).
      nonnegative: each (sample, channel) SSIM clipped at 0 before the mean (the
        ``nonnegative_ssim`` of pytorch_msssim, which 2K2K uses).
    """
    w = _gaussian_window(window)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur(a, w), _blur(b, w)
    var_a = _blur(a * a, w) - mu_a**2
    var_b = _blur(b * b, w) - mu_b**2
    cov = _blur(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    if nonnegative:
        return jax.nn.relu(s.mean((1, 2))).mean()
    return s.mean()


# pix2pixHD's VGGLoss weights for relu1_1 ... relu5_1.
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def vgg_loss(
    features: Callable[[jax.Array], Sequence[jax.Array]], pred: jax.Array, target: jax.Array
) -> jax.Array:
    """pix2pixHD's perceptual loss: weighted L1 between VGG19 features (target constant)."""
    fp, ft = features(pred), features(jax.lax.stop_gradient(target))
    return sum(
        w * jnp.abs(p - jax.lax.stop_gradient(t)).mean()
        for w, p, t in zip(VGG_LAYER_WEIGHTS, fp, ft, strict=True)
    )


def normal_loss(
    pred: jax.Array,
    target: jax.Array,
    l1_weight: float = 5.0,
    features: Callable[[jax.Array], Sequence[jax.Array]] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of a normal network: (B, H, W, 3) prediction and target in [−1, 1].

    Returns the scalar loss and its terms (``l1``, and ``vgg`` or ``ssim``).
    """
    l1 = jnp.abs(pred - target).mean()
    if features is not None:
        vgg = vgg_loss(features, pred, target)
        return vgg + l1_weight * l1, {"l1": l1, "vgg": vgg}
    s = ssim(pred, target)
    return (1.0 - s) + l1_weight * l1, {"l1": l1, "ssim": s}


def _batch_sum(x: jax.Array) -> jax.Array:
    """Mean per sample (leading axis), summed over samples."""
    return x.reshape(x.shape[0], -1).mean(-1).sum()


def smooth_l1(pred: jax.Array, target: jax.Array, beta: float = 1.0) -> jax.Array:
    """Element-wise smooth L1 (Huber / β)."""
    d = jnp.abs(pred - target)
    return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def twok2k_normal_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """One (prediction, target) normal pair, (B, H, W, C) in [0, 1]:
    0.5 · (0.85 · L1 + 0.15 · (1 − SSIM)), SSIM with a 5-tap window, data range 1,
    non-negative (pytorch_msssim's options in the official code)."""
    s = ssim(pred, target, data_range=1.0, window=5, nonnegative=True)
    return 0.5 * (0.85 * _batch_sum(jnp.abs(pred - target)) + 0.15 * (1.0 - s))


def twok2k_depth_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """0.85 · smooth L1 (β = 1) of a depth map (B, H, W, 1) in network units."""
    return 0.85 * _batch_sum(smooth_l1(pred, target))


def twok2k_consistency_loss(
    pred_normal: jax.Array, target_normal: jax.Array, mask: jax.Array
) -> jax.Array:
    """0.15 · smooth L1 between the normals of the predicted depth and the ground-truth
    normals, both zeroed outside the ground-truth ``mask`` (B, H, W, 1)."""
    return 0.15 * _batch_sum(smooth_l1(pred_normal * mask, target_normal * mask))


def twok2k_mask_loss(mask_prob: jax.Array, target: jax.Array) -> jax.Array:
    """The official mask term: ``BCEWithLogitsLoss`` applied to the already-sigmoided mask
    (a double sigmoid: the networks were trained with it, so it is kept)."""
    z = mask_prob
    bce = jnp.maximum(z, 0) - z * target + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return _batch_sum(bce)


def vgg_features(cfg: ml_collections.ConfigDict):
    """pix2pixHD's VGG19 feature function from ``train.vgg19`` (a torchvision ``.pth``), or
    None: the normal nets then train on L1 + (1 − SSIM), which the log says."""
    path = cfg.train.vgg19
    if not path:
        logging.warning(
            "no train.vgg19 weights file: normal nets use L1 + (1 - SSIM) instead of the "
            "paper's VGG perceptual loss"
        )
        return None
    from hdjax.models.vgg import VGG19Features, load_vgg19

    params = load_vgg19(path)
    net = VGG19Features()
    return lambda x: net.apply(params, x)

"""Training losses against hand-computed values, the official BCE and scikit-image's SSIM."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hdjax.train import losses


def test_occupancy_bce_by_hand():
    # One sample, two points, one inside: γ = 1/2, both terms −½·log σ(0) = ½·log 2.
    loss, per_stack = losses.occupancy_bce(jnp.zeros((1, 1, 2)), jnp.array([[1.0, 0.0]]))
    assert float(loss) == pytest.approx(0.5 * math.log(2), rel=1e-6)
    # Three of four outside: γ = 3/4 weights the inside point, 1/4 the outside ones.
    z = jnp.array([[[2.0, -1.0, 0.5, -3.0]]])
    y = jnp.array([[1.0, 0.0, 0.0, 0.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(0.75 * math.log(sig(2.0)) + 0.25 * sum(math.log(1 - sig(v)) for v in (-1, 0.5, -3)))
    assert float(losses.occupancy_bce(z, y)[0]) == pytest.approx(want / 4, rel=1e-6)
    # Stacks are averaged; points outside the box are left out.
    z2 = jnp.concatenate([z, 2 * z])
    loss, per_stack = losses.occupancy_bce(z2, y)
    assert per_stack.shape == (2,) and float(loss) == pytest.approx(float(per_stack.mean()))
    masked = losses.occupancy_bce(z, y, jnp.array([[True, True, False, True]]))[0]
    gamma = 2 / 3
    want = -(gamma * math.log(sig(2.0)) + (1 - gamma) * sum(math.log(1 - sig(v)) for v in (-1, -3)))
    assert float(masked) == pytest.approx(want / 3, rel=1e-6)


def test_a_fixed_gamma_puts_the_level_at_one_half_whatever_the_mix():
    """Three outside points to one inside: the per-sample γ = 3/4 weights the inside point
    3:1, so the loss-optimal constant prediction is inside-leaning (σ = 1/2 where a quarter
    is inside); a fixed γ = 1/2 is the plain BCE, optimal at σ = 1/4, the true fraction."""
    y = jnp.array([[1.0, 0.0, 0.0, 0.0]])

    def best(gamma):
        zs = jnp.linspace(-4.0, 4.0, 8001)
        f = jax.vmap(lambda z: losses.occupancy_bce(jnp.full((1, 1, 4), z), y, gamma=gamma)[0])
        return float(jax.nn.sigmoid(zs[jnp.argmin(f(zs))]))

    assert best(None) == pytest.approx(0.5, abs=2e-3)
    assert best(0.5) == pytest.approx(0.25, abs=2e-3)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    z = jnp.array([[[2.0, -1.0, 0.5, -3.0]]])
    want = -(math.log(sig(2.0)) + sum(math.log(1 - sig(v)) for v in (-1, 0.5, -3))) / 2
    assert float(losses.occupancy_bce(z, y, gamma=0.5)[0]) == pytest.approx(want / 4, rel=1e-6)


def test_occupancy_bce_clamps_like_the_official_loss():
    # p is clamped to [1e-5, 1 − 1e-5]: a confidently wrong point costs −log(1e-5) at most
    # and passes no gradient.
    y = jnp.array([[1.0, 0.0]])
    loss, _ = losses.occupancy_bce(jnp.array([[[-50.0, -50.0]]]), y)
    assert float(loss) == pytest.approx(0.5 * 0.5 * -math.log(1e-5), rel=1e-5)
    grad = jax.grad(lambda z: losses.occupancy_bce(z, y)[0])(jnp.array([[[-50.0, 0.0]]]))
    assert float(grad[0, 0, 0]) == 0.0 and float(grad[0, 0, 1]) != 0.0


def test_occupancy_bce_matches_the_official_custom_bce():
    torch = pytest.importorskip("torch")
    net_util = pytest.importorskip("PIFuHD.net_util")
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (3, 2, 500)).astype(np.float32)
    labels = (rng.random((2, 500)) < 0.3).astype(np.float32)
    in_bb = rng.random((2, 500)) < 0.8
    ours = losses.occupancy_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(in_bb))[0]
    # The official query: predictions and labels zeroed outside the box, γ and w per sample.
    m = torch.from_numpy(in_bb.astype(np.float32))[:, None]
    y = torch.from_numpy(labels)[:, None] * m
    gamma = 1 - y.view(2, -1).sum(1) / m.view(2, -1).sum(1)
    w = m.size(2) / m.view(2, -1).sum(1)
    crit = net_util.CustomBCELoss()
    theirs = sum(
        float(crit(torch.sigmoid(torch.from_numpy(s))[:, None] * m, y, gamma, w)) for s in logits
    ) / len(logits)
    # Out-of-box points cost the official loss −(1−γ)·log(1 − 1e-5) ≈ 1e-5 each.
    assert float(ours) == pytest.approx(theirs, abs=5e-5)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (1, 40, 48, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    ref = structural_similarity(
        a[0],
        b[0],
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=2.0,
    )
    assert float(losses.ssim(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(ref, abs=1e-4)
    assert float(losses.ssim(jnp.asarray(a), jnp.asarray(a))) == pytest.approx(1.0, abs=1e-6)


def test_normal_loss_terms():
    rng = np.random.default_rng(2)
    t = jnp.asarray(rng.uniform(-1, 1, (2, 24, 24, 3)).astype(np.float32))
    loss, terms = losses.normal_loss(t, t)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and set(terms) == {"l1", "ssim"}
    p = t + 0.1
    loss, terms = losses.normal_loss(p, t)
    # float32 means over 3,456 values: measured 4.2e-6 and 1.7e-6 relative.
    assert float(terms["l1"]) == pytest.approx(0.1, rel=1e-4)
    assert float(loss) == pytest.approx(1 - float(terms["ssim"]) + 0.5, rel=1e-4)
    # With a feature function: pix2pixHD's weighted L1 of features plus 5·L1.
    feats = lambda x: [x * (i + 1) for i in range(5)]  # noqa: E731
    loss, terms = losses.normal_loss(p, t, features=feats)
    want = sum(w * 0.1 * (i + 1) for i, w in enumerate(losses.VGG_LAYER_WEIGHTS))
    assert float(terms["vgg"]) == pytest.approx(want, rel=1e-4)  # measured 6e-7
    assert float(loss) == pytest.approx(want + 0.5, rel=1e-4)  # measured 2e-6


def test_twok2k_terms_by_hand():
    # Smooth L1 (β = 1): quadratic inside |d| < 1, linear outside.
    d = losses.smooth_l1(jnp.array([0.5, -2.0]), jnp.zeros(2))
    np.testing.assert_allclose(d, [0.125, 1.5], rtol=1e-6)
    # Depth: 0.85 · per-sample mean, summed over the batch.
    pred = jnp.array([[[[0.5]], [[0.0]]], [[[3.0]], [[1.0]]]])  # (2, 2, 1, 1)
    want = 0.85 * ((0.125 + 0.0) / 2 + (2.5 + 0.5) / 2)
    got = float(losses.twok2k_depth_loss(pred, jnp.zeros_like(pred)))
    assert got == pytest.approx(want, rel=1e-5)  # float32 sums
    # Mask: BCE-with-logits of the sigmoided mask (the official double sigmoid).
    p, y = 0.8, 1.0
    want = math.log1p(math.exp(-p))  # -log σ(p) for target 1
    got = losses.twok2k_mask_loss(jnp.full((1, 2, 2, 1), p), jnp.full((1, 2, 2, 1), y))
    assert float(got) == pytest.approx(want, rel=1e-5)
    # Consistency: 0.15 · smooth L1 of masked normals; outside the mask nothing counts.
    a = jnp.zeros((1, 1, 2, 3)).at[0, 0, 1].set(10.0)
    mask = jnp.array([[[[1.0], [0.0]]]])
    assert float(losses.twok2k_consistency_loss(a, jnp.zeros_like(a), mask)) == 0.0
    # Normals: 0 for a perfect prediction; 0.5 · 0.85 · L1 + 0.5 · 0.15 · (1 − SSIM).
    n = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 6)), jnp.float32)
    assert float(losses.twok2k_normal_loss(n, n)) == pytest.approx(0.0, abs=1e-6)
    off = n + 0.1
    s = losses.ssim(off, n, data_range=1.0, window=5, nonnegative=True)
    want = 0.5 * (0.85 * 2 * 0.1 + 0.15 * (1 - float(s)))
    assert float(losses.twok2k_normal_loss(off, n)) == pytest.approx(want, rel=1e-5)


def test_twok2k_ssim_matches_pytorch_msssim():
    torch = pytest.importorskip("torch")
    msssim = pytest.importorskip("pytorch_msssim")
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (2, 40, 36, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    b[1] = rng.uniform(0, 1, b[1].shape)  # an unrelated pair: SSIM near 0 or below
    ours = float(losses.ssim(jnp.asarray(a), jnp.asarray(b), 1.0, window=5, nonnegative=True))
    t = [torch.from_numpy(x.transpose(0, 3, 1, 2)) for x in (a, b)]
    ref = float(msssim.ssim(*t, data_range=1, win_size=5, nonnegative_ssim=True))
    # Measured |diff| 3e-8 (float32 sums in another order).
    assert ours == pytest.approx(ref, abs=1e-6)

"""The colours of the garments and the skin (`garments`): solid 3D patterns evaluated at
vertex positions (`pattern_colours`) and blotchy skin (`skin_colours`)."""

from __future__ import annotations

import numpy as np

from hdjax.datasets.synthetic_humans.garments import GarmentSpec


def value_noise(p: np.ndarray, scale, seed: int) -> np.ndarray:
    """(N,) smooth noise in [0, 1] at points (N, 3); ``scale`` (metres) per axis or scalar."""
    q = np.asarray(p, np.float64) / np.asarray(scale, np.float64)
    i = np.floor(q).astype(np.int64)
    t = q - i
    t = t * t * (3 - 2 * t)
    out = np.zeros(len(q))
    for c in range(8):
        o = np.array([(c >> 2) & 1, (c >> 1) & 1, c & 1])
        k = i + o
        h = (k[:, 0] * 73856093) ^ (k[:, 1] * 19349663) ^ (k[:, 2] * 83492791) ^ seed
        h = (h * 2654435761) & 0xFFFFFF
        w = np.prod(np.where(o == 1, t, 1 - t), axis=1)
        out += w * (h / float(0xFFFFFF))
    return out


def _soft_stripes(t: np.ndarray, period: float, duty: float, edge: float = 0.008) -> np.ndarray:
    """(N,) stripe weight in [0, 1] at coordinates ``t`` (metres): 1 on the first ``duty``
    of every period, ramping over ``edge`` metres (no jagged edges between vertices)."""
    f = np.mod(t / period, 1.0)
    inside = np.minimum(f, duty - f) * period
    outside = np.minimum(f - duty, 1.0 - f) * period
    signed = np.where(f < duty, inside, -outside)
    return np.clip(0.5 + signed / edge, 0.0, 1.0)


def pattern_colours(spec: GarmentSpec, p: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours of the garment's pattern at points ``p`` (N, 3), metres."""
    pp = spec.pattern_params
    seed = int(pp.get("seed", 0))
    c = np.asarray(spec.colours, np.float64)
    base = np.broadcast_to(c[0], p.shape).copy()
    if spec.pattern == "hair":
        streak = value_noise(p, (0.01, 0.06, 0.01), seed)
        out = base * (0.75 + 0.5 * streak[:, None])
    elif spec.pattern in ("stripes", "checks"):
        tilt, period, duty = pp["tilt"], pp["period"], pp["duty"]
        d1 = np.array([np.sin(tilt), np.cos(tilt), 0.0])
        band = _soft_stripes(p @ d1, period, duty)
        if spec.pattern == "checks":
            d2 = np.array([np.cos(tilt), -np.sin(tilt), 0.0])
            band = 0.5 * (band + _soft_stripes(p @ d2 + p[:, 2], period, duty))
        out = base + band[:, None] * (c[1] - c[0])
    elif spec.pattern == "print":
        cell = 1.5 * pp["period"] + 0.02
        q = p / cell
        i = np.floor(q).astype(np.int64)
        h = ((i[:, 0] * 73856093) ^ (i[:, 1] * 19349663) ^ (i[:, 2] * 83492791) ^ seed) & 0xFFFFFF
        rng_u = [((h * m) & 0xFFFF) / 65535.0 for m in (2654435761, 40503, 97, 12289)]
        centre = np.stack(rng_u[:3], 1) * 0.5 + 0.25
        radius = 0.12 + 0.13 * rng_u[3]
        blob = np.linalg.norm(q - i - centre, axis=1) < radius
        out = np.where(blob[:, None], c[1], base)
    elif spec.pattern == "denim":
        fine = value_noise(p, 0.01, seed)
        streak = value_noise(p, (0.03, 0.2, 0.03), seed + 1)
        twill = 0.5 + 0.5 * np.sin((p[:, 0] + p[:, 1] + p[:, 2]) * 2 * np.pi / 0.025)
        mix = np.clip(0.25 * fine + 0.45 * streak + 0.1 * twill, 0, 1)
        out = base + mix[:, None] * (c[1] - c[0])
    else:
        out = base
    out = out * (0.94 + 0.12 * value_noise(p, 0.03, seed + 7))[:, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def skin_colours(vertices: np.ndarray, rgb, seed: int) -> np.ndarray:
    """(V, 3) uint8 skin colours: the tone with mild blotchy variation."""
    n = value_noise(vertices, 0.04, seed)
    out = np.asarray(rgb, np.float64) * (0.93 + 0.1 * n)[:, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

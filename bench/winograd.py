"""Would Winograd convolutions speed up 2K2K's forward on XLA:CPU? Direct 3x3 conv vs
Winograd F(2x2, 3x3) and F(4x4, 3x3) written in JAX, at the forward's conv shapes.

    JAX_PLATFORMS=cpu python -m bench.winograd

The 2K2K forward is ~2 TFLOP of float32 3x3 convolutions, which XLA:CPU's direct conv runs
near the cores' FMA peak; Winograd needs 2.25x (F2) or 4x (F4) fewer multiplies. Here the
tiles are cut with strided slices, transformed with the standard B, G, A matrices
(Lavin & Gray 2016), multiplied as one batched matmul over the tile positions, and
transformed back. Error: max |winograd - direct| / max |direct| for one layer. Times are
the best of ``--repeat`` calls after a compiling one; the load average is printed.

Measured (2-core CPU, load 0.9): direct 236 / 49 / 478 ms; F2 647 / 98 / 610 ms; F4 523 / 73
/ 498 ms, F4's error 0.7-1.9e-5 per layer (F2 1e-6): the transforms cost more than the
multiplies they save, so the forward keeps XLA's direct convolution.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bench.common import best_time

# (B^T, G, A^T) of F(m x m, 3 x 3): tiles of m + 2 inputs give m x m outputs.
F2 = (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
)
F4 = (
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)


def _combine(terms, coeffs):
    """sum_i coeffs[i] * terms[i], skipping zero coefficients."""
    return sum(float(c) * t for c, t in zip(coeffs, terms, strict=True) if c != 0)


def winograd_conv(x, kernel, matrices):
    """3x3 'same' conv of x (B, H, W, C) with kernel (3, 3, C, O); H, W multiples of m."""
    import jax.numpy as jnp

    bt, g, at = (np.asarray(m, np.float64) for m in matrices)
    a, m = bt.shape[0], at.shape[0]
    b, h, w, c = x.shape
    nh, nw = h // m, w // m
    xp = jnp.pad(x, ((0, 0), (1, a - 1 - 1), (1, a - 1 - 1), (0, 0)))
    g32 = jnp.asarray(g, jnp.float32)
    u = jnp.einsum("xi,ijco,yj->xyco", g32, kernel, g32, precision="highest")
    d = [[xp[:, i : i + m * nh : m, j : j + m * nw : m] for j in range(a)] for i in range(a)]
    rows = [[_combine([d[i][j] for i in range(a)], bt[r]) for j in range(a)] for r in range(a)]
    v = jnp.stack([_combine(rows[r], bt[s]) for r in range(a) for s in range(a)])
    prod = jnp.einsum("xbhwc,xco->xbhwo", v, u.reshape(a * a, c, -1), precision="highest").reshape(
        a, a, b, nh, nw, -1
    )
    half = [[_combine([prod[r, s] for r in range(a)], at[p]) for s in range(a)] for p in range(m)]
    y = jnp.stack(
        [jnp.stack([_combine(half[p], at[q]) for q in range(m)], -2) for p in range(m)], 2
    )  # (B, nh, m, nw, m, O)
    return y.reshape(b, h, w, -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    print(f"cores {os.cpu_count()}, load {os.getloadavg()}")
    print(f"{'3x3 conv (B, H, W, in→out)':36s} {'direct':>9s} {'F2':>9s} {'err':>8s} "
          f"{'F4':>9s} {'err':>8s}")  # fmt: skip
    direct = jax.jit(
        lambda x, k: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
        )
    )
    # A refiner strip at 2048², the part nets' widest level, a batch of 12 part crops.
    for shape, cout in (((1, 256, 2048, 64), 64), ((1, 128, 128, 256), 128),
                        ((12, 128, 128, 128), 128)):  # fmt: skip
        x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
        k = jnp.asarray((rng.normal(size=(3, 3, shape[-1], cout)) * 0.05).astype(np.float32))
        ref = direct(x, k)
        row = [best_time(direct, x, k, repeat=args.repeat)]
        for matrices in (F2, F4):
            fn = jax.jit(lambda x, k, mats=matrices: winograd_conv(x, k, mats))
            err = float(jnp.max(jnp.abs(fn(x, k) - ref)) / jnp.max(jnp.abs(ref)))
            row += [best_time(fn, x, k, repeat=args.repeat), err]
        label = f"{shape} → {cout}"
        print(f"{label:36s} {row[0] * 1e3:7.0f}ms {row[1] * 1e3:7.0f}ms {row[2]:8.1e} "
              f"{row[3] * 1e3:7.0f}ms {row[4]:8.1e}")  # fmt: skip


if __name__ == "__main__":
    main()

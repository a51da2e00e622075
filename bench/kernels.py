"""Four choices behind the training step's speed on CPU, each measured both ways in one run.

    python -m bench.kernels

* frozen nets: one pix2pixHD normal net (official size) forward at 512², XLA's convolution
  (what training uses for the nets it trains) vs the CPU kernels (`Numerics(conv_impl="cpu")`,
  what `train.frozen_model` uses for the nets a stage runs but does not train);
* resize gradient: forward + backward of the hourglass's ×2 bicubic upsample, autodiff of the
  gathered taps (a scatter-add) vs the hand-written gradient of `layers._resize_axis`;
* 1x1 conv gradient: forward + backward of the hourglass's 256-channel 1x1 convs, XLA's conv
  gradient vs matmuls (`Numerics(conv_grad="matmul")`);
* 3x3 conv gradient: forward + backward of 3x3 convs at the hourglass's sizes, XLA's kernel
  gradient vs the same summed over batch-1 pieces (`Numerics(conv_grad="split")`, what
  training on CPU uses), and PyTorch's conv (when torch is installed) as the peer.

Times are the best of ``--repeat`` calls after a compiling one; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.common import best_time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from hdjax.configs.pifuhd import get_config
    from hdjax.models import layers
    from hdjax.models.pifuhd import PIFuHD, PIFuHDArch, init_params

    rng = np.random.default_rng(0)
    print(f"cores {os.cpu_count()}, load {os.getloadavg()}")
    print(f"{'what':46s} {'one way':>12s} {'other way':>12s} {'ratio':>7s}")

    arch = PIFuHDArch.from_config(get_config().model.arch)
    params = init_params(arch, 0)
    image = jnp.asarray(rng.normal(size=(1, 512, 512, 3)).astype(np.float32))
    t = {}
    for impl in ("xla", "cpu"):
        model = PIFuHD(arch, layers.Numerics(conv_impl=impl))
        fn = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, method=PIFuHD.front_normal))
        t[impl] = best_time(fn, params, image, repeat=args.repeat)
    print(f"{'normal net fwd 512², xla conv | cpu kernels':46s} {t['xla']:11.2f}s "
          f"{t['cpu']:11.2f}s {t['xla'] / t['cpu']:6.1f}x")  # fmt: skip

    def autodiff(x):  # the taps gathered, differentiated by JAX (scatter-add)
        for axis in (1, 2):
            taps = layers._interp_taps(x.shape[axis], 2 * x.shape[axis], "bicubic")
            x = layers._sum_taps(x, axis, *taps)
        return x

    for shape in ((1, 128, 128, 256), (1, 64, 64, 256)):
        x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
        t = {}
        for name, up in (("autodiff", autodiff), ("custom", layers.upsample2x_bicubic)):
            fn = jax.jit(jax.grad(lambda x, up=up: jnp.sum(up(x) ** 2)))
            t[name] = best_time(fn, x, repeat=args.repeat)
        label = f"upsample fwd+bwd {shape[1]}²×{shape[3]}, autodiff | custom"
        print(f"{label:46s} {t['autodiff'] * 1e3:10.0f}ms {t['custom'] * 1e3:10.0f}ms "
              f"{t['autodiff'] / t['custom']:6.1f}x")  # fmt: skip

    for size in (128, 256):
        x = jnp.asarray(rng.normal(size=(1, size, size, 256)).astype(np.float32))
        t = {}
        for grad in ("xla", "matmul"):
            conv = layers.Numerics(conv_grad=grad).conv(256, 1, "c")
            p = conv.init(jax.random.PRNGKey(0), x)
            fn = jax.jit(jax.grad(lambda p, x, c=conv: jnp.sum(c.apply(p, x) ** 2), (0, 1)))
            t[grad] = best_time(fn, p, x, repeat=args.repeat)
        label = f"1x1 conv fwd+bwd {size}²×256→256, xla | matmul"
        print(f"{label:46s} {t['xla'] * 1e3:10.0f}ms {t['matmul'] * 1e3:10.0f}ms "
              f"{t['xla'] / t['matmul']:6.1f}x")  # fmt: skip

    print(f"{'3x3 conv fwd+bwd (B, side, in→out)':46s} {'xla':>12s} {'split':>12s} {'ratio':>7s}"
          f" {'torch':>9s} {'torch/split':>11s}")  # fmt: skip
    for b, side, cin, cout in (
        (1, 128, 256, 128),
        (8, 128, 256, 128),
        (8, 64, 256, 128),
        (8, 32, 256, 128),
        (8, 128, 64, 64),
        (1, 512, 128, 64),
        (1, 512, 64, 64),
    ):
        x = jnp.asarray(rng.normal(size=(b, side, side, cin)).astype(np.float32))
        t = {}
        for grad in ("xla", "split"):
            conv = layers.Numerics(conv_grad=grad).conv(cout, 3, "c", padding=1, use_bias=False)
            p = conv.init(jax.random.PRNGKey(0), x)
            fn = jax.jit(jax.grad(lambda p, x, c=conv: jnp.sum(c.apply(p, x) ** 2), (0, 1)))
            t[grad] = best_time(fn, p, x, repeat=args.repeat)
        peer = torch_conv_time(x, cout, args.repeat)
        label = f"3x3 conv fwd+bwd ({b}, {side}², {cin}→{cout})"
        xla, split = t["xla"], t["split"]
        print(f"{label:46s} {xla * 1e3:10.0f}ms {split * 1e3:10.0f}ms {xla / split:6.1f}x "
              f"{peer * 1e3:7.0f}ms {peer / split:10.2f}x")  # fmt: skip


def torch_conv_time(x, cout: int, repeat: int) -> float:
    """Best time of PyTorch's 3x3 conv forward + backward (input and kernel) on x's shape,
    with as many threads as cores; NaN without torch."""
    try:
        import torch
    except ImportError:
        return float("nan")
    torch.set_num_threads(os.cpu_count())
    b, h, w, c = x.shape
    xt = torch.randn(b, c, h, w, requires_grad=True)
    conv = torch.nn.Conv2d(c, cout, 3, padding=1, bias=False)
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        (conv(xt) ** 2).sum().backward()
        times.append(time.perf_counter() - t)
    return min(times[1:])


if __name__ == "__main__":
    main()

"""What the benchmarks share: the repository root, timing, the official PyTorch nets."""

from __future__ import annotations

import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The official-code fixtures the parity tests also use (`official_pifuhd`, `twok2k_recipe`).
PARITY = os.path.join(REPO, "tests", "parity")


def worker_command(spec_name: str, *args: str) -> list[str]:
    """The command that reruns a bench module (``__spec__.name``) in a fresh process."""
    return [sys.executable, "-m", spec_name, *args]


def best_time(fn, *args, repeat: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def official_nets():
    """The official coarse net (`HGPIFuNetwNML`, normal nets inside) and the fine net
    (`HGPIFuMRNet`) around it, with the released option table and `CustomBCELoss`; torch
    seeded and given one thread per core."""
    import torch
    from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML
    from PIFuHD.net_util import CustomBCELoss

    sys.path.insert(0, PARITY)
    from official_pifuhd import official_options

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    opt, opt_netG = official_options(small_images=False)
    criteria = {"occ": CustomBCELoss()}
    net_g = HGPIFuNetwNML(opt_netG, "orthogonal", criteria=criteria)
    return net_g, HGPIFuMRNet(opt, net_g, "orthogonal", criteria=criteria)

"""Turns a training run's kept best checkpoint into the weights the package ships.

    python -m hdjax.tools.ship_weights --config=pifuhd:small --workdir=W [--out=PATH]
    python -m hdjax.tools.ship_weights --config=twok2k:tiny --workdir=W --out=PATH.npz

Reads ``W/best`` (the converted weights the eval job keeps) and its held-out summary
(``W/eval/step_<S>/metrics.json``), and writes ``hdjax/models/weights/<config.weights>.npz``
(`hdjax.models.shipped`: float16, with the model, the architecture, the step and the
held-out metrics inside), the default of ``--mode=reconstruct`` for that config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hdjax import configlib
from hdjax.errors import HdjaxError
from hdjax.models import shipped


def _load_best(model_name: str, best: str):
    """(architecture as a dict, params) of a ``W/best`` directory."""
    if model_name == "pifuhd":
        from hdjax.models import pifuhd_official

        arch, params = pifuhd_official.load_converted(best)
        return configlib.to_dict(arch), params
    if model_name == "twok2k":
        from hdjax.models import twok2k_official

        variables = twok2k_official.load_converted(best)
        return {"width": twok2k_official.width_of(variables)}, variables
    raise HdjaxError(f"no shipped-weights format for model {model_name!r}")


def ship(cfg, workdir: str, out: str = "", dtype: str = "float16") -> str:
    """Writes the shipped weights of ``cfg`` from ``workdir/best``; returns the path."""
    best = os.path.join(workdir, "best")
    try:
        with open(os.path.join(best, "best.json")) as f:
            kept = json.load(f)
        with open(os.path.join(workdir, "eval", f"step_{kept['step']}", "metrics.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError, KeyError) as e:
        raise HdjaxError(f"no kept best checkpoint with its eval ({e})", best) from None
    out = out or shipped.path_of(cfg.weights or f"{cfg.model_name}_custom")
    arch, params = _load_best(cfg.model_name, best)
    held_out = {k: v for k, v in summary.items() if k != "subjects"}
    about = dict(step=kept["step"], best_metric=kept["metric"], held_out=held_out)
    shipped.save(out, cfg.model_name, arch, params, dtype=dtype, about=about)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="config whose weights ship (pifuhd:small, ...)")
    p.add_argument("--workdir", required=True, help="the training run's workdir")
    p.add_argument("--out", default="", help="output .npz (default: the config's shipped file)")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = p.parse_args()
    try:
        cfg = configlib.load_config(args.config)
        out = ship(cfg, args.workdir, args.out, args.dtype)
    except HdjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()

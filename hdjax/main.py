"""hdjax entry point: `python -m hdjax.main --config=configs/pifuhd.py --workdir=DIR --mode=…`.

Modes: train (the default: the config's stages, resumable, then an eval of the last
checkpoint), eval (score checkpoints of WORKDIR), reconstruct (images -> meshes), query
(occupancy at given points), convert (.pt -> orbax). Input errors end with one line and exit
status 2. Several processes (a TPU pod slice, SLURM tasks, or JAX_COORDINATOR_ADDRESS set)
join one `jax.distributed` run before anything else touches the devices.
"""

from __future__ import annotations

import logging
import os
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from hdjax import configlib
from hdjax.errors import HdjaxError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "reconstruct", "query", "convert"], "What to run."
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "query: occupancies .npy (default WORKDIR/occupancy.npy); "
    "convert: orbax directory (default WORKDIR/converted).",
)
_CACHE = flags.DEFINE_string(
    "compilation_cache",
    os.path.join(os.path.expanduser("~"), ".cache", "hdjax", "xla"),
    "Persistent XLA compilation cache ('' disables): later runs skip ~7 s of compiling.",
)
flags.mark_flags_as_required(["config", "workdir"])


# Choices of the config sections that stay ConfigDicts; the dataclass sections validate
# their own fields when built.
CHOICES = {
    "reconstruct.crop_type": ("fullbody", "upperbody", "face"),
    "reconstruct.octree": ("parity", "fast"),
    "reconstruct.colors": ("network", "grid", "none"),
    "reconstruct.mesh_format": ("obj", "ply", "both"),
    "train.coarse_normals": ("predicted", "ground_truth"),
    "eval.best_metric": ("chamfer_cm", "p2s_cm", "normal_l2", "iou"),
    "model.numerics.conv_impl": ("auto", "xla", "cpu"),
}


def validate_config(cfg: ml_collections.ConfigDict):
    """Checks every choice once, after command-line overrides; returns (arch, numerics).

    Raises:
      HdjaxError: one line naming the config field.
    """
    from hdjax.models.pifuhd import PIFuHDArch, numerics_from_config

    configlib.check_choices(cfg, CHOICES)
    return PIFuHDArch.from_config(cfg.model.arch), numerics_from_config(cfg.model.numerics)


def _run(mode: str, cfg, workdir: str) -> int:
    from hdjax.models.pifuhd_official import save_converted
    from hdjax.reconstruction import reconstruct as recon
    from hdjax.reconstruction.weights import open_weights

    arch, numerics = validate_config(cfg)
    if mode in ("train", "eval"):
        from hdjax.eval import evaluate
        from hdjax.train import train

        if mode == "train":
            train.train_and_evaluate(cfg, workdir)
            if jax.process_index() != 0 or not cfg.train.eval_at_end:
                return 0
            cfg = cfg.copy_and_resolve_references()
            cfg.eval.step, cfg.eval.watch = -1, False
        evaluate.evaluate(cfg, workdir)
        return 0
    weights = open_weights(cfg.checkpoint, arch, cfg.seed, numerics)
    logging.info("weights: %s", weights.source)
    if mode == "reconstruct":
        if not cfg.reconstruct.input:
            raise HdjaxError("set --config.reconstruct.input=IMAGE_OR_FOLDER")
        failures = recon.reconstruct(weights, cfg.reconstruct, workdir)
        return 1 if failures else 0
    if mode == "query":
        if not (cfg.reconstruct.input and cfg.reconstruct.points):
            raise HdjaxError(
                "set --config.reconstruct.input=IMAGE and --config.reconstruct.points=N3.npy"
            )
        out = _OUTPUT.value or os.path.join(workdir, "occupancy.npy")
        recon.query_points(
            weights, cfg.reconstruct.input, cfg.reconstruct.points, out, cfg.reconstruct
        )
        logging.info("wrote %s", out)
        return 0
    out = _OUTPUT.value or os.path.join(workdir, "converted")
    save_converted(out, weights.get(()), weights.arch)
    logging.info("wrote %s", out)
    return 0


def _multi_process() -> bool:
    """Whether this process is one of several: a Cloud TPU VM pod slice (several worker
    hosts), SLURM with several tasks, or an explicit coordinator address."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return True
    return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CACHE.value:
        jax.config.update("jax_compilation_cache_dir", _CACHE.value)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    if _multi_process():
        jax.distributed.initialize()
    logging.info("JAX devices: %s", jax.devices())
    if "://" not in _WORKDIR.value:  # bucket paths (gs://) need no folder
        os.makedirs(_WORKDIR.value, exist_ok=True)
    try:
        code = _run(_MODE.value, _CONFIG.value, _WORKDIR.value)
    except HdjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    app.run(main)

"""hdjax entry point: `python -m hdjax.main --config=pifuhd --workdir=DIR --mode=…`.

Modes: train (the default: the config's stages, resumable, then an eval of the last
checkpoint), eval (score checkpoints of WORKDIR), reconstruct (images -> meshes), query
(occupancy at given points), convert (.pt -> orbax). `--config` takes a config file
(`configs/pifuhd.py[:variant]`) or the name of one shipped in the package (`pifuhd[:tiny]`),
from any directory. Several processes (a TPU pod slice, SLURM tasks, or
JAX_COORDINATOR_ADDRESS set) join one `jax.distributed` run before anything else touches the
devices.

Exit status: 0 everything done; 1 the run went through but some images failed (the summary
names them); 2 a usage, config or input error stopped the run before it started (one line on
stderr); 130 interrupted (Ctrl-C or SIGTERM; temporaries removed, finished outputs kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import NoReturn

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from hdjax import configlib
from hdjax.errors import HdjaxError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file or packaged name: configs/pifuhd.py[:variant], pifuhd[:tiny]."
)
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

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_OWN_FLAGS = ("config", "workdir", "mode", "output", "compilation_cache")
_HELP = frozenset({"-h", "-?", "--help", "--helpshort", "--helpfull"})


# The numerics every model takes (`hdjax.models.layers.Numerics`, plus "auto" for the
# backend's own kernels).
NUMERICS_CHOICES = {
    "model.numerics.conv_impl": ("auto", "xla", "cpu"),
    "model.numerics.dtype": ("float32", "bfloat16", "float16"),
    "model.numerics.precision": ("default", "high", "highest"),
}


@dataclasses.dataclass(frozen=True)
class Model:
    """What `main` runs for one ``config.model_name``. The verbs are "module:function",
    imported when used (JAX must not start before `jax.distributed.initialize`):

    check(cfg): validates what the choices cannot (the architecture), before any backend;
    train(cfg, workdir): the schedule; evaluate(cfg, workdir): the eval job;
    reconstruct(cfg, workdir, items) -> RunSummary; convert(cfg, workdir, out): weights ->
    orbax; query(cfg, workdir, out): occupancies at points (models with a field only).
    """

    choices: Mapping[str, tuple]
    check: str
    train: str
    evaluate: str
    reconstruct: str
    convert: str
    query: str | None = None


MODELS = {
    "pifuhd": Model(
        choices={
            "reconstruct.crop_type": ("fullbody", "upperbody", "face"),
            "reconstruct.octree": ("parity", "fast"),
            "reconstruct.colors": ("network", "grid", "none"),
            "reconstruct.mesh_format": ("obj", "ply", "both"),
            "train.coarse_normals": ("predicted", "ground_truth"),
            "render.center": ("area_median", "vertex_median"),
            "eval.best_metric": ("chamfer_cm", "p2s_cm", "normal_l2", "iou"),
            **NUMERICS_CHOICES,
        },
        check="hdjax.models.pifuhd:check_config",
        train="hdjax.train.pifuhd:train_and_evaluate",
        evaluate="hdjax.eval.pifuhd:evaluate",
        reconstruct="hdjax.reconstruction.pifuhd:reconstruct",
        convert="hdjax.reconstruction.pifuhd:convert",
        query="hdjax.reconstruction.pifuhd:query",
    ),
    "twok2k": Model(
        choices={
            "eval.best_metric": (
                "chamfer_cm",
                "p2s_cm",
                "normal_l2",
                "iou",
                "depth_l1_cm",
                "mask_iou",
            ),
            "reconstruct.jitter": ("demo", "none"),
            "reconstruct.mesher": ("stitch", "poisson"),
            "reconstruct.mesh_format": ("obj", "ply", "both"),
            "model.numerics.dtype": NUMERICS_CHOICES["model.numerics.dtype"],
            "model.numerics.precision": NUMERICS_CHOICES["model.numerics.precision"],
        },
        check="hdjax.models.twok2k.canvas:check_config",
        train="hdjax.train.twok2k:train_and_evaluate",
        evaluate="hdjax.eval.twok2k:evaluate",
        reconstruct="hdjax.reconstruction.twok2k:reconstruct",
        convert="hdjax.reconstruction.twok2k:convert",
    ),
}


def _verb(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def model_of(cfg: ml_collections.ConfigDict) -> Model:
    name = cfg.get("model_name", "")
    if name not in MODELS:
        raise HdjaxError(f"config model_name={name!r}: expected one of {tuple(MODELS)}")
    return MODELS[name]


def validate_config(cfg: ml_collections.ConfigDict, mode: str = "train") -> Model:
    """Checks every choice of the config's model once, after command-line overrides, before
    JAX starts; returns the model.

    Raises:
      HdjaxError: one line naming the config field.
    """
    model = model_of(cfg)
    configlib.check_choices(cfg, model.choices)
    _verb(model.check)(cfg)
    if mode == "query" and model.query is None:
        raise HdjaxError(f"--mode=query has no meaning for {cfg.model_name} (no occupancy field)")
    return model


def _run(mode: str, cfg, workdir: str, items: list | None) -> int:
    import jax

    model = model_of(cfg)
    if mode in ("train", "eval"):
        if mode == "train":
            _verb(model.train)(cfg, workdir)
            if jax.process_index() != 0 or not cfg.train.eval_at_end:
                return EXIT_OK
            cfg = cfg.copy_and_resolve_references()  # one eval of the last checkpoint
            cfg.eval.step, cfg.eval.watch = -1, False
        _verb(model.evaluate)(cfg, workdir)
        return EXIT_OK
    if mode == "reconstruct":
        summary = _verb(model.reconstruct)(cfg, workdir, items)
        logging.info("%s", summary.line())
        return EXIT_SOME_FAILED if summary.failed else EXIT_OK
    default = {"query": "occupancy.npy", "convert": "converted"}[mode]
    out = _OUTPUT.value or os.path.join(workdir, default)
    _verb(model.query if mode == "query" else model.convert)(cfg, workdir, out)
    logging.info("wrote %s", out)
    return EXIT_OK


def usage() -> str:
    """`--help`: the flags, then every `--config.*` field with its default."""
    lines = [__doc__.strip(), "", "Flags:"]
    for name in _OWN_FLAGS:
        flag = flags.FLAGS[name]
        default = "" if flag.default in (None, "") else f" (default: {flag.default})"
        lines.append(f"  --{name}: {flag.help}{default}")
    lines += ["", "Config fields, --config.FIELD=VALUE (defaults of --config=pifuhd):"]
    for path, value in configlib.flat_fields(configlib.load_config("pifuhd")):
        lines.append(f"  --config.{path}={value}")
    return "\n".join(lines)


def _usage_error(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with `--help` on stdout (exit 0), the `--config` name resolved and
    every usage or config error as one line on stderr (exit 2), never a traceback."""
    argv = list(argv)
    if any(a in _HELP for a in argv[1:]):
        print(usage())
        sys.exit(EXIT_OK)
    try:
        config = None  # as typed: error messages quote it
        for i, arg in enumerate(argv[1:], 1):
            if arg.startswith("--config="):
                config = arg.removeprefix("--config=")
                argv[i] = "--config=" + configlib.resolve_config(config)
            elif arg == "--config" and i + 1 < len(argv):
                config = argv[i + 1]
                argv[i + 1] = configlib.resolve_config(config)
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        if config is not None:
            # Checked here so that the error names the field (config_flags raises deep
            # inside its parser).
            problem = configlib.unknown_override(configlib.load_config(config), overrides)
            if problem:
                raise HdjaxError(problem)
        return flags.FLAGS(argv)
    except HdjaxError as e:
        _usage_error(str(e))
    except flags.Error as e:
        _usage_error(str(e).strip().splitlines()[0])
    except Exception as e:  # a config file's own error, a value of the wrong type, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _usage_error(f"{type(e).__name__}: {first}")


class _DropBackendProbe(logging.Filter):
    """JAX logs every platform it fails to find at start ('Unable to initialize backend
    'tpu' …') at INFO, which absl shows: noise on every machine without that platform."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to initialize backend")


def check_inputs(mode: str, cfg: ml_collections.ConfigDict) -> list | None:
    """Validates the files a mode reads before anything heavy (weights, compiling) starts.

    Returns:
      reconstruct: the images to do (`preprocess.InputItem`s); other modes: None.
    Raises:
      HdjaxError: a missing checkpoint, input or points file, or no weights at all (one
        line).
    """
    from hdjax.models.shipped import RANDOM, resolve_checkpoint, weights_path  # not on --help's

    if cfg.checkpoint not in ("", RANDOM) and not os.path.exists(cfg.checkpoint):
        raise HdjaxError("checkpoint does not exist", cfg.checkpoint)
    init = cfg.get("train", {}).get("init_weights", "")
    if mode == "train" and init and not os.path.exists(weights_path(init)):
        raise HdjaxError("train.init_weights: no such file or directory", weights_path(init))
    if mode not in ("reconstruct", "query"):
        if mode == "convert" and not cfg.checkpoint:
            raise HdjaxError("convert needs --config.checkpoint=CHECKPOINT")
        return None
    from hdjax.reconstruction import preprocess

    if not cfg.reconstruct.input:
        raise HdjaxError("set --config.reconstruct.input=IMAGE_OR_FOLDER")
    items = preprocess.find_inputs(cfg.reconstruct.input)
    if mode == "query":
        if not cfg.reconstruct.points:
            raise HdjaxError("set --config.reconstruct.points=N3.npy")
        if len(items) != 1 or os.path.isdir(cfg.reconstruct.input):
            raise HdjaxError("query mode takes one image, not a folder", cfg.reconstruct.input)
        if not os.path.isfile(cfg.reconstruct.points):
            raise HdjaxError("cannot read points (file does not exist)", cfg.reconstruct.points)
    resolve_checkpoint(cfg.checkpoint, cfg.get("weights", ""), cfg.model_name)
    return items


@contextlib.contextmanager
def sigterm_as_interrupt(enabled: bool = True) -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so it unwinds like Ctrl-C: every atomic write in
    progress removes its temporary file, finished outputs stay. (Training has its own
    handler: it saves a checkpoint first.)"""
    if not enabled:
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("jax._src.xla_bridge").addFilter(_DropBackendProbe())
    mode, cfg, workdir = _MODE.value, _CONFIG.value, _WORKDIR.value
    try:
        items = check_inputs(mode, cfg)
        validate_config(cfg, mode)
    except HdjaxError as e:
        _usage_error(str(e))
    import jax

    if _CACHE.value:
        jax.config.update("jax_compilation_cache_dir", _CACHE.value)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    if _multi_process():
        jax.distributed.initialize()
    logging.info("JAX devices: %s", jax.devices())
    if "://" not in workdir:  # bucket paths (gs://) need no folder
        os.makedirs(workdir, exist_ok=True)
    try:
        with sigterm_as_interrupt(mode != "train"):
            code = _run(mode, cfg, workdir, items)
    except HdjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "error: interrupted; finished outputs are complete, temporaries removed",
            file=sys.stderr,
        )
        code = EXIT_INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

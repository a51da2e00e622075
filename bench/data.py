"""Training-data benchmark: render, label, dataset write, pipeline read, training-step demand.

    JAX_PLATFORMS=cpu python -m bench.data                  # ~3.5 min on 2 CPU cores
    JAX_PLATFORMS=cpu python -m bench.data --step=full      # the fine step instead: ~8 min, 12 GiB
    JAX_PLATFORMS=cpu python -m bench.data --skip render dataset --step-arch=tiny   # smoke

Prints one table (median of ``--repeat`` where repeated; wall and process CPU seconds):

* renderer and labelling on a synthetic mesh: a subdivided icosphere stretched into a
  body-sized ellipsoid with a wavy surface (level 7 = 327,680 faces), rendered with the 2K2K
  camera at ``--size`` and the PIFuHD camera at 1024²; ``--points`` labelled by winding numbers;
* dataset write: `synthetic_humans` TFDS builds of ``--views`` records of one embedded body
  with the full-size configs (pifuhd: ortho 1024², twok2k: persp 2048², 100k points per σ
  level; ``--build-size`` / ``--build-points`` shrink them for a smoke run), end to end
  (render + label + encode + write) and again from the render cache (the TFDS encode +
  write part alone); samples/s and MB/s of the finished dataset folder;
* generated bodies (needs the `bodies` extra): the stages of one record of a generated,
  clothed body at the PIFuHD config (1024², 100k points per σ level; body generation,
  render, labelling with and without the subject's shared point pool, PNG encoding, a whole
  record with the pool shared by the config's 12 views), then `synthetic_humans` builds of
  ``--gen-bodies`` bodies x ``--gen-views`` views, first by one process pinned to one core,
  then by 2 worker processes (one core each): samples/s, samples per CPU-second (all
  threads of all processes: samples/s per fully busy core), and the speed-up of 2
  processes over 1 (~5 min);
* pipeline read: the grain loader (`hdjax.data.pipeline`, in-process, batch 1) over those
  datasets, samples/s per mode;
* training-step demand: a jitted forward + backward (`jax.value_and_grad`) of one PIFuHD
  training step, official architecture, random weights, batch 1, ``--step-points`` points.
  ``--step=coarse`` (default): the coarse-level step (normal nets frozen) of the γ-weighted
  BCE on the coarse logits of all 4 stacks at ``--coarse-size``² (2 CPU cores: ~25 s per
  step, ~30 s to compile, 5 GiB). ``--step=full``: the fine-level step (coarse level frozen,
  as the official fine training: gradients of the fine filter and MLP only) of the same loss
  on the fine logits of all fine stacks, coarse input ``--coarse-size``², fine input
  ``--fine-size``² (2 CPU cores: ~110 s per step, 12 GiB; falls back to the coarse step when
  that does not fit in memory).
  No optimiser update (elementwise, negligible next to this).
  Then one line: does the pipeline produce samples as fast as the step consumes them?

Numbers depend on the machine's free cores; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import trimesh

from hdjax.data import pipeline as pl
from hdjax.data import records, render_config
from hdjax.data.point_sampling import label_points, sample_points
from hdjax.data.render import cast_rays, render
from hdjax.geometry import camera as C
from hdjax.geometry.camera import PIFU_SIGMA_COARSE

# (what, (wall s, cpu s), rate) per table row.
Row = tuple[str, tuple[float, float], str]


def body_like_mesh(level: int) -> trimesh.Trimesh:
    """Icosphere (20·4^level faces) turned into a tall wavy ellipsoid (non-convex)."""
    m = trimesh.creation.icosphere(subdivisions=level)
    v = m.vertices * [0.35, 1.0, 0.2]
    v = v * (1.0 + 0.08 * np.sin(9.0 * v[:, 1:2]) * np.cos(7.0 * v[:, 0:1]))
    return trimesh.Trimesh(v, m.faces, process=False)


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[], Any], repeat: int) -> tuple[tuple[float, float], Any]:
    """Median wall and CPU seconds (CPU = all threads of this process and of the worker
    processes it waited for: on a shared machine it moves less with the other users' load
    than wall time) and the last result."""
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), _cpu_seconds()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(_cpu_seconds() - c)
    return (float(np.median(wall)), float(np.median(cpu))), out


def per(t: tuple[float, float], n: int) -> tuple[float, float]:
    """(wall, cpu) seconds of n items -> seconds per item."""
    return t[0] / n, t[1] / n


# ----------------------------------------------------------------------- render and label


def render_rows(args: argparse.Namespace) -> tuple[list[Row], str]:
    """Ray casting, render() and labelling on the synthetic mesh; also a header note."""
    raw = body_like_mesh(args.faces_level)
    mesh = C.normalize_mesh(raw, C.twok2k_normalization(raw.vertices, raw.faces))
    cam = C.PerspCamera(size=args.size, yaw_deg=10.0)
    rng = np.random.default_rng(0)
    rows: list[Row] = []

    def rate(t: tuple[float, float], what: str = "samples") -> str:
        return f"{1.0 / t[0]:.2f} {what}/s"

    origins, dirs = C.camera_rays(cam)
    o, d = origins.reshape(-1, 3) @ cam.rotation, dirs.reshape(-1, 3) @ cam.rotation
    t, _ = timed(lambda: cast_rays(mesh, o, d), args.repeat)
    rows.append((f"front ray cast only, {args.size}² rays", t, ""))
    fresh = mesh.copy()  # no cached vertex normals yet
    t, _ = timed(lambda: render(fresh, cam, rng), 1)
    rows.append((f"first render() of a fresh mesh, persp {args.size}² (+ normals)", t, ""))
    t, out = timed(lambda: render(mesh, cam, rng), args.repeat)
    rows.append((f"render() persp {args.size}², front+back, all maps", t, rate(t)))
    ortho = C.OrthoCamera(size=min(args.size, 1024))
    pmesh = C.normalize_mesh(raw, C.pifu_normalization(raw.vertices))
    t, _ = timed(lambda: render(pmesh, ortho, rng), args.repeat)
    rows.append((f"render() ortho {ortho.size}², front+back, all maps", t, rate(t)))

    pts = np.random.default_rng(1).uniform(-1, 1, (args.points, 3)) * pmesh.extents / 2
    t, _ = timed(lambda: label_points(pmesh, pts), args.repeat)
    mpts = f"{args.points / t[0] / 1e6:.2f} M points/s"
    rows.append((f"label_points, {args.points:,} points (winding number)", t, mpts))
    t, _ = timed(lambda: sample_points(pmesh, rng, 8000, PIFU_SIGMA_COARSE), args.repeat)
    rows.append(("sample_points n=8000 (34k candidates, labelled)", t, ""))
    note = f"mesh {len(mesh.faces):,} faces, foreground {out['mask'].mean():.1%} of pixels"
    return rows, note


# -------------------------------------------------------------------- write and read rates


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _read_rate(data_dir: str, mode: str, steps: int, size: int) -> tuple[float, float]:
    """(wall, cpu) seconds per element of the grain loader (batch 1), after one warm-up.

    ``size``: the stored image side; PIFuHD's 512² crop / coarse input are scaled with it.
    """
    half = min(512, size // 2)
    loader = pl.make_loader(
        pl.open_source(data_dir, "train"),
        pl.PipelineConfig(mode=mode, batch_size=1, coarse_size=half, crop_size=half),
        seed=0,
        process_index=0,
        process_count=1,
    )
    it = iter(loader)
    next(it)
    t, _ = timed(lambda: [next(it) for _ in range(steps)], 1)
    return per(t, steps)


def dataset_rows(args: argparse.Namespace, tmp: str) -> tuple[list[Row], dict[str, float]]:
    """Build, rebuild-from-cache and read rows; and read samples/s per pipeline mode."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # keep the output to the table
    from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder as mod

    rows: list[Row] = []
    read_rate: dict[str, float] = {}
    n = args.views
    for name, render_cfg, modes in (
        ("pifuhd", render_config.pifuhd_config(), ("pifuhd_fine", "pifuhd_coarse")),
        ("twok2k", render_config.twok2k_config(), ("twok2k",)),
    ):
        render_cfg = dataclasses.replace(
            render_cfg,
            yaws=render_cfg.yaws[:n],
            size=args.build_size or render_cfg.size,
            num_points=args.build_points or render_cfg.num_points,
        )
        cfg = mod.Config(
            name=f"bench_{name}", render=render_cfg, bodies=("body_00",), keep_render_cache=True
        )
        builder = mod.Builder(config=cfg, data_dir=tmp)
        t, _ = timed(builder.download_and_prepare, 1)
        mb = _dir_bytes(builder.data_dir) / 2**20
        what = f"{render_cfg.size}², {render_cfg.num_points // 1000}k pts/σ"
        rows.append(
            (
                f"build {name} ({what}) end to end, per record",
                per(t, n),
                f"{n / t[0]:.3f} samples/s, {mb / t[0]:.1f} MB/s",
            )
        )
        # The same build again with every record in the render cache: TFDS encode + write.
        shutil.rmtree(builder.data_dir)
        builder = mod.Builder(config=cfg, data_dir=tmp)
        t, _ = timed(builder.download_and_prepare, 1)
        report = json.load(open(os.path.join(builder.data_dir, "build_report_train.json")))
        assert report["cached"] == n, report  # nothing was rendered
        rows.append(
            (
                f"write {name} from the render cache, per record",
                per(t, n),
                f"{n / t[0]:.2f} samples/s, {mb / t[0]:.1f} MB/s ({mb / n:.1f} MB/rec)",
            )
        )
        for mode in modes:
            t = _read_rate(builder.data_dir, mode, args.read_steps, render_cfg.size)
            read_rate[mode] = 1.0 / t[0]
            rate = f"{read_rate[mode]:.2f} samples/s"
            rows.append((f"pipeline read {mode} (grain, 1 process), per sample", t, rate))
    return rows, read_rate


# ------------------------------------------------------------ generated bodies, at scale


def _build_in_child(config: Any, data_dir: str, one_core: bool) -> None:
    """A `synthetic_humans` build in a fresh process; ``one_core``: pinned to one core."""
    if one_core:
        records.pin_threads({min(os.sched_getaffinity(0))})
    import tensorflow_datasets as tfds

    from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder as mod

    tfds.disable_progress_bar()
    mod.Builder(config=config, data_dir=data_dir).download_and_prepare()


def generated_rows(args: argparse.Namespace, tmp: str) -> tuple[list[Row], str]:
    """Per-stage cost of a generated-body record at the PIFuHD config, then whole builds of
    ``--gen-bodies`` bodies with 1 and 2 worker processes (samples/s per core, scaling)."""
    import tensorflow_datasets as tfds

    from hdjax.data import codecs, point_sampling
    from hdjax.data import render as render_lib
    from hdjax.datasets.synthetic_humans import bodies
    from hdjax.datasets.synthetic_humans import synthetic_humans_dataset_builder as mod

    tfds.disable_progress_bar()
    cfg = dataclasses.replace(
        render_config.pifuhd_config(),
        size=args.build_size or 1024,
        num_points=args.build_points or 100_000,
        yaws=render_config.pifuhd_config().yaws[: args.gen_views],
    )
    what = f"{cfg.size}², {cfg.num_points // 1000}k pts/σ"
    rows: list[Row] = []
    t, model = timed(lambda: bodies.load_body_model(None), 1)
    rows.append(("load Anny (parsed-asset cache)", t, ""))
    t, body = timed(lambda: bodies.generate_body(model, 0, 0), args.repeat)
    rows.append(("generate one body (shape, pose, screen, clothes)", t, ""))
    subject = body.subject()
    norm = records.normalization(subject, cfg)
    mesh = C.normalize_mesh(subject.mesh, norm)
    camera = records.make_camera(cfg, 30.0)
    rng = np.random.default_rng(0)
    t, out = timed(lambda: render_lib.render(mesh, camera, rng), args.repeat)
    rows.append((f"render() ortho {cfg.size}², one view", t, ""))
    sigma = cfg.sigma_coarse_cm * norm.scale / 100.0
    t, _ = timed(lambda: point_sampling.sample_points(mesh, rng, cfg.num_points, sigma), 1)
    rows.append((f"sample + label {cfg.num_points:,} points, one σ level, no pool", t, ""))
    t_pool, pools = timed(lambda: records.point_pools(subject, cfg, 0), 1)
    views = len(render_config.pifuhd_config().yaws)
    rows.append(
        (
            f"label the subject's pools ({cfg.point_pool:g}n per σ level), once per subject",
            t_pool,
            f"/ {views} views",
        )
    )
    pool = pools["coarse"]
    t, _ = timed(
        lambda: point_sampling.sample_points(mesh, rng, cfg.num_points, sigma, pool=pool), 1
    )
    rows.append((f"sample + label {cfg.num_points:,} points, one σ level, from the pool", t, ""))
    maps = [out["image"], codecs.normal_to_uint8(out["normal_front"], out["mask"])]
    t, _ = timed(lambda: [codecs.png_bytes(m) for m in maps], args.repeat)
    rows.append(("PNG-encode image + one normal map", t, ""))
    t, _ = timed(lambda: records.render_record(subject, cfg, 1, 0, pools), args.repeat)
    t = (t[0] + t_pool[0] / views, t[1] + t_pool[1] / views)
    rows.append(
        (
            f"one record ({what}), pools shared by {views} views",
            t,
            f"{1 / t[0]:.2f} samples/s, {1 / t[1]:.2f} per CPU-second",
        )
    )

    n = args.gen_bodies * len(cfg.yaws)
    base = None
    context = multiprocessing.get_context("spawn")
    for workers in (1, 2):
        config = mod.variant("pifuhd", name=f"bench_w{workers}", num_bodies=args.gen_bodies)
        config = dataclasses.replace(config, render=cfg, num_workers=workers, render_cache=False)
        # Both builds one core per process: one process alone on one core, then the build's
        # own 2 workers, each pinned to a core (`records._in_workers`).
        child = context.Process(target=_build_in_child, args=(config, tmp, workers == 1))
        with records.single_threaded_children():
            t, _ = timed(lambda child=child: (child.start(), child.join()), 1)
        if child.exitcode != 0:
            raise RuntimeError(f"the {workers}-worker build failed (exit {child.exitcode})")
        rate = n / t[0]
        base = base or rate
        rows.append(
            (
                f"build {args.gen_bodies} bodies x {len(cfg.yaws)} views, "
                + ("1 process on 1 core" if workers == 1 else f"{workers} worker processes"),
                per(t, n),
                f"{rate:.2f} samples/s, {n / t[1]:.2f} per CPU-second, x{rate / base:.2f}",
            )
        )
    note = f"clothed subject {len(subject.mesh.faces):,} faces"
    return rows, note


# ---------------------------------------------------------------------- training step


def _bce(logits: Any, labels: Any) -> Any:
    """PIFuHD's CustomBCELoss over stacks: γ = fraction of outside points, p clamped.

    logits (S, B, N), labels (B, N) in {0, 1} -> scalar mean over stacks and points.
    """
    import jax.numpy as jnp

    gamma = 1.0 - jnp.mean(labels)
    p = jnp.clip(1.0 / (1.0 + jnp.exp(-logits)), 1e-5, 1.0 - 1e-5)
    loss = gamma * labels * jnp.log(p) + (1.0 - gamma) * (1.0 - labels) * jnp.log(1.0 - p)
    return -jnp.mean(loss)


def _mem_available() -> int:
    """Bytes the kernel says can still be allocated without swapping (MemAvailable)."""
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:")) * 1024


def step_rows(args: argparse.Namespace, level: str) -> tuple[list[Row], float, str]:
    """Compile and time one training step of ``level`` ("full" or "coarse").

    Returns rows, samples/s and the pipeline mode the step eats. A full step whose compiled
    working set would not fit in 80% of the free memory falls back to the coarse step (the
    machine is shared; an out-of-memory kill could hit another process).
    """
    import jax
    import jax.numpy as jnp

    from hdjax.configs.pifuhd import get_config
    from hdjax.models.pifuhd import PIFuHD, PIFuHDArch, init_params

    # get_config() is the official (released) architecture; "tiny" a smoke-test variant.
    arch = PIFuHDArch.from_config(
        get_config("tiny" if args.step_arch == "tiny" else None).model.arch
    )
    c = args.coarse_size or arch.coarse_size
    f = args.fine_size or arch.fine_size
    model = PIFuHD(arch)
    params = init_params(arch, 0)
    rng = np.random.default_rng(0)
    n = args.step_points
    img_c = jnp.asarray(rng.uniform(-1, 1, (1, c, c, 3)), jnp.float32)
    img_f = jnp.asarray(rng.uniform(-1, 1, (1, f, f, 3)), jnp.float32)
    points = jnp.asarray(rng.uniform(-1, 1, (1, n, 3)), jnp.float32)
    labels = jnp.asarray(rng.random((1, n)) < 0.5, jnp.float32)
    calib = jnp.eye(4, dtype=jnp.float32)[None]
    sg = jax.lax.stop_gradient

    if level == "full":
        # Official fine training: the coarse level (normals, filter, MLP -> phi) is frozen.
        trained = {k: params[k] for k in ("image_filter", "mlp")}
        frozen = params["netG"]

        def loss_fn(trained, frozen):
            p = {"params": {**trained, "netG": frozen}}
            normals = sg(model.apply(p, img_c, method=PIFuHD.normals))
            coarse = sg(model.apply(p, img_c, normals, method=PIFuHD.coarse_features))
            fine = model.apply(p, img_f, normals, method=PIFuHD.fine_features)
            out = model.apply(
                p,
                coarse,
                fine,
                points,
                calib_global=calib,
                calib_local=calib,
                method=PIFuHD.query,
            )
            return _bce(out["fine_logits"], labels)

        what = f"fine level, {c}²/{f}²"
        mode = "pifuhd_fine"
    else:
        # Coarse training: normal nets are trained separately and frozen here.
        trained = {k: params["netG"][k] for k in ("image_filter", "mlp")}
        frozen = {k: v for k, v in params["netG"].items() if k not in trained}

        def loss_fn(trained, frozen):
            p = {"params": {"netG": {**trained, **frozen}}}
            normals = sg(model.apply(p, img_c, method=PIFuHD.normals))
            feats = model.apply(p, img_c, normals, method=PIFuHD.coarse_features)
            logits, _, _ = model.apply(
                p, feats, points, calib_global=calib, method=PIFuHD.coarse_query
            )
            return _bce(logits, labels)

        what = f"coarse level, {c}²"
        mode = "pifuhd_coarse"

    device = jax.devices()[0].platform
    label = f"{args.step_arch} PIFuHD step fwd+bwd, {what}, B=1, {n} pts ({device})"
    compile_t, step = timed(
        lambda: jax.jit(jax.value_and_grad(loss_fn)).lower(trained, frozen).compile(), 1
    )
    rows: list[Row] = [(f"{label}: compile", compile_t, "")]
    mem = step.memory_analysis()
    need = mem.temp_size_in_bytes + mem.output_size_in_bytes if mem is not None else 0
    if level == "full" and device == "cpu" and need > 0.8 * _mem_available():
        note = f"full step needs {need / 2**30:.1f} GiB > 80% of free memory: coarse instead"
        del step, params, trained, frozen
        more, rate, mode = step_rows(args, "coarse")
        return [(f"{label}: {note}", compile_t, ""), *more], rate, mode

    def run() -> None:
        jax.block_until_ready(step(trained, frozen))

    first, _ = timed(run, 1)
    t, _ = timed(run, args.step_repeat)
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 2**20
    rows += [
        (f"{label}: first run", first, f"XLA temp buffers {need / 2**30:.1f} GiB"),
        (label, t, f"{1.0 / t[0]:.3f} samples/s, peak RSS {hwm:.1f} GiB"),
    ]
    return rows, 1.0 / t[0], mode


# ------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces-level", type=int, default=7, help="synthetic mesh: 20·4^L faces")
    ap.add_argument("--size", type=int, default=2048, help="persp render side")
    ap.add_argument("--points", type=int, default=1_000_000, help="points to label")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--views", type=int, default=2, help="records per dataset build")
    ap.add_argument("--build-size", type=int, default=0, help="0: the configs' 1024 / 2048")
    ap.add_argument("--build-points", type=int, default=0, help="0: the configs' 100,000")
    ap.add_argument("--read-steps", type=int, default=4, help="pipeline elements timed")
    ap.add_argument("--step", choices=("coarse", "full", "none"), default="coarse")
    ap.add_argument("--step-arch", choices=("official", "tiny"), default="official")
    ap.add_argument("--coarse-size", type=int, default=0, help="0: the architecture's (512)")
    ap.add_argument("--fine-size", type=int, default=0, help="0: the architecture's (1024)")
    ap.add_argument("--step-points", type=int, default=8000)
    ap.add_argument("--step-repeat", type=int, default=2)
    ap.add_argument("--gen-bodies", type=int, default=8, help="generated bodies per build")
    ap.add_argument("--gen-views", type=int, default=12, help="views per generated body")
    ap.add_argument("--skip", nargs="*", default=(), choices=("render", "dataset", "generated"))
    args = ap.parse_args()

    rows: list[Row] = []
    notes: list[str] = []
    read_rate: dict[str, float] = {}
    if "render" not in args.skip:
        r, note = render_rows(args)
        rows += r
        notes.append(note)
    if "dataset" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            r, read_rate = dataset_rows(args, tmp)
            rows += r
    if "generated" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            r, note = generated_rows(args, tmp)
            rows += r
            notes.append(note)
    step_rate, step_mode = None, None
    if args.step != "none":
        r, step_rate, step_mode = step_rows(args, args.step)
        rows += r

    print(f"# {'; '.join([platform.processor() or platform.machine(), *notes])}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | wall s | cpu s | rate")
    print(f"|{'-' * (width + 2)}|--------|-------|------")
    for name, (wall, cpu), rate in rows:
        print(f"| {name:<{width}} | {wall:6.3f} | {cpu:5.2f} | {rate}")
    if step_rate is not None and step_mode in read_rate:
        read = read_rate[step_mode]
        verdict = "keeps up" if read >= step_rate else "does NOT keep up"
        print(
            f"# pipeline {step_mode} reads {read:.2f} samples/s, the training step consumes "
            f"{step_rate:.3f} samples/s: the pipeline {verdict} ({read / step_rate:.1f}x), "
            "both on this machine's CPU"
        )
    print(f"# load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

"""The 2K2K config: `--config=twok2k` (or `configs/twok2k.py`).

--config=twok2k        the official model (2048² input, base width 64, batch 2)
--config=twok2k:tiny   a 256² canvas and base width 8: trains on a laptop CPU in minutes

Modes: train (the default: phase 1 then phase 2, resumable, then an eval of the last
checkpoint), eval (score checkpoints of WORKDIR), reconstruct (photos -> meshes), convert
(the official `.pth.tar` -> orbax).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from hdjax import configs
from hdjax.geometry import camera as cam

VARIANTS = ("tiny",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "twok2k"  # main dispatches on it
    c.seed = 0
    # The official `ckpt_bg_mask.pth.tar` (torch zip, read without torch), an orbax
    # directory written by `--mode=convert` or by the eval job (W/best), or "random" (init
    # from `seed`); empty: the weights this config ships (`weights`).
    c.checkpoint = ""
    c.weights = ""  # hdjax/models/weights/<weights>.npz trained here; empty: none ship
    m = c.model = ml_collections.ConfigDict()
    m.canvas = cam.TWOK2K_SIZE  # image side; other sizes scale the part crops (multiple of 128)
    m.width = 64  # the networks' base width (official 64)
    # How the networks compute (Numerics); no parameter depends on it.
    n = m.numerics = ml_collections.ConfigDict()
    n.dtype = "float32"  # float32 | bfloat16 | float16 (computation; params stay float32)
    n.precision = "highest"  # default | high | highest (matters on GPU/TPU only)

    r = c.reconstruct = ml_collections.ConfigDict()
    r.input = ""  # an image (with IMAGE_keypoints.json) or a folder of them
    r.jitter = "demo"  # demo: the official demo's fixed ColorJitter (0.85); none
    r.exif_orientation = True  # apply phone photos' EXIF rotation (OpenPose sees it applied)
    r.mesher = "stitch"  # stitch: front + back depth joined at the silhouette; poisson
    r.poisson_depth = 10  # screened Poisson octree depth (the official 10)
    r.mesh_format = "obj"  # obj | ply | both
    r.save_maps = False  # also W/reconstruct/NAME_maps.npz: the float32 full-size outputs

    i = c.input = ml_collections.ConfigDict()
    i.dataset = configs.dataset("twok2k", configs.NUM_BODIES)
    p = i.pipeline = ml_collections.ConfigDict()  # PipelineConfig, field for field
    p.mode = "twok2k"
    p.batch_size = 2  # per process (paper: 2)
    p.num_points = 16  # 2K2K trains on depth maps: the records' points go unused
    p.coarse_size = 512  # unused by the twok2k mode
    p.crop_size = 512  # unused by the twok2k mode
    p.background_dir = config_dict.placeholder(str)
    p.black_background = 0.1  # official: 10 % black, as the demo's masked input
    p.jitter = (0.7, 1.0)  # brightness, contrast, saturation × U(0.7, 1) (official)
    p.num_epochs = config_dict.placeholder(int)
    p.worker_count = 0
    p.read_threads = 2
    p.read_prefetch = 4

    # The 2K2K builds: persp at the canvas size, yaw −30..30.
    c.render = configs.render("persp", m.get_ref("canvas"), cam.TWOK2K_YAWS, 1000)

    t = c.train = ml_collections.ConfigDict()
    # phase1: the six normal nets and the low-res depth net; phase2: the refiner alone, the
    # rest frozen (official). The paper trains each 30 epochs at batch 2.
    t.stages = ("phase1", "phase2")
    t.steps = (200_000, 100_000)
    t.num_steps = 0  # > 0: rescale the stages' steps to this total
    t.lr = 1e-4  # Adam peak learning rate (official)
    # Cosine annealing with warm restarts (official: 5-epoch cycles, 1 % of an epoch of
    # linear warm-up, the peak halved each cycle), in epochs of the training split.
    t.cycle_epochs = 5.0
    t.warmup_epochs = 0.01
    t.cycle_decay = 0.5
    t.log_every = 100
    t.checkpoint_every = 5000
    t.keep_checkpoints = 3
    t.eval_at_end = True

    e = c.eval = ml_collections.ConfigDict()
    e.step = -1  # checkpoint step to score; -1: the latest
    e.watch = False
    e.poll_seconds = 30.0
    e.scans = ""  # a folder of meshes to score on instead of the dataset's test subjects
    e.yaws = (0.0,)
    e.num_subjects = 0  # score the first N test subjects (sorted by name); 0: all
    e.normal_size = 512
    e.iou_resolution = 128
    e.num_samples = 10_000
    # The checkpoint kept in WORKDIR/best: lowest chamfer_cm | p2s_cm | normal_l2 |
    # depth_l1_cm, highest iou | mask_iou.
    e.best_metric = "chamfer_cm"
    # Warn when best_metric got worse at this many evaluations in a row (0: never).
    e.patience = 3

    if arg == "tiny":
        _tiny(c)
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (expected one of {VARIANTS} or none)")
    return c


def _tiny(c: ml_collections.ConfigDict) -> None:
    """Same structure at 1/8 of the side and 1/8 of the width: minutes on a laptop CPU."""
    c.model.canvas = 256
    c.model.width = 8
    c.input.dataset.config = "twok2k_tiny"
    c.input.dataset.num_bodies = None  # the eight embedded bodies
    c.render.num_points = 200
    c.train.steps = (1200, 400)
    c.train.lr = 3e-3  # the official 1e-4 barely moves a model in so few steps
    # Eval and photos feed masked (black-background) images: seen often enough to learn.
    c.input.pipeline.black_background = 0.5
    c.train.cycle_epochs = 50.0
    c.train.warmup_epochs = 0.5
    c.train.log_every = 50
    c.train.checkpoint_every = 300
    c.eval.normal_size = 128
    c.eval.iou_resolution = 64
    c.eval.num_samples = 5000

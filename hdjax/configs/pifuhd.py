"""PIFuHD: a whole run in one tree (model, input, render, reconstruct).

--config=pifuhd (or configs/pifuhd.py)   the released model (1024² input, R = 512)
--config=pifuhd:tiny                      the main job: a tiny model, 8 embedded bodies, ~17 min
--config=pifuhd:small                     the shipped small model (docs/models.md): 256² input,
                                          300 generated bodies, ~1.5 h on 2 CPU cores
--config=pifuhd:parity                    the official octree and finite-difference colours

Sections become the dataclasses modules take in one place (`hdjax.configlib.build`):
model.arch -> PIFuHDArch, model.numerics -> Numerics, input.pipeline -> PipelineConfig,
render -> RenderConfig. `hdjax.main` validates every choice after command-line overrides.
"""

import os

import ml_collections
from ml_collections import config_dict

from hdjax import configs

# The embedded example photo (a render of one of the embedded synthetic bodies). Located from
# this file, not from `hdjax.__file__`: beside a folder named `hdjax` (a clone), `import
# hdjax` can resolve to that folder as a namespace package without a `__file__`.
EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "assets", "examples"
)

VARIANTS = ("tiny", "small", "parity")


def _level(**kw) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(hg_width=256, groups=32, **kw))


def _model() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    # Architecture (PIFuHDArch). A checkpoint's stored options override it (and are checked
    # against its tensor shapes); without a checkpoint the model starts from random weights.
    a = m.arch = ml_collections.ConfigDict()
    a.coarse = _level(
        num_stack=4,
        hg_depth=2,
        hg_dim=256,
        hg_down="ave_pool",
        mlp_dim=[257, 1024, 512, 256, 128, 1],
        mlp_res_layers=[2, 3, 4],
        merge_layer=2,
    )
    a.fine = _level(
        num_stack=1,
        hg_depth=4,
        hg_dim=16,
        hg_down="no_down",
        mlp_dim=[272, 512, 256, 128, 1],
        mlp_res_layers=[1, 2],
        merge_layer=-1,
    )
    a.use_front_normal = True
    a.use_back_normal = True
    a.normal_ngf = 64
    a.normal_n_down = 4
    a.normal_n_blocks = 9
    a.coarse_size = 512  # opt_netG.loadSize
    a.fine_size = 1024  # opt.loadSizeBig
    a.z_size = 200.0
    # How the layers compute (Numerics); no parameter depends on it.
    n = m.numerics = ml_collections.ConfigDict()
    n.conv_impl = "auto"  # xla: nn.Conv; cpu: matmul kernels for XLA:CPU; auto: by backend
    n.dtype = "float32"  # float32 | bfloat16 | float16 (computation; params stay float32)
    n.precision = "highest"  # default | high | highest
    return m


def _input(arch: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    i = ml_collections.ConfigDict()
    i.dataset = configs.dataset("pifuhd", configs.NUM_BODIES)
    # PipelineConfig (hdjax/data/pipeline.py), field for field.
    p = i.pipeline = ml_collections.ConfigDict()
    p.mode = "pifuhd_coarse"  # pifuhd_coarse | pifuhd_fine | twok2k
    p.batch_size = 8  # per process (paper: 8)
    p.num_points = 8000
    # A fraction of them as free-space points (outside by the depth maps, anywhere along a
    # subject pixel's ray): 0 is PIFu's sampling (hdjax/data/pipeline.free_space_points).
    p.free_points = 0.0
    p.free_background = 0.0  # a fraction of those on background pixels' rays instead
    p.coarse_size = arch.get_ref("coarse_size")
    p.crop_size = 512  # opt.loadSizeLocal: the fine level's training crop
    p.background_dir = config_dict.placeholder(str)
    p.black_background = 0.0  # fraction of samples over black (2K2K's masked-input rule)
    p.jitter = (0.7, 1.0)
    p.num_epochs = config_dict.placeholder(int)
    p.worker_count = 0
    p.read_threads = 2
    p.read_prefetch = 8
    return i


def _render(arch: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    # The PIFuHD builds: ortho at the fine level's input size, 12 yaws.
    yaws = tuple(float(a) for a in range(0, 360, 30))
    return configs.render("ortho", arch.get_ref("fine_size"), yaws, 100_000)


def _reconstruct() -> ml_collections.ConfigDict:
    # Reconstruction (`--mode=reconstruct`) and field queries (`--mode=query`).
    r = ml_collections.ConfigDict()
    r.input = EXAMPLES  # image file or folder; crops: {name}_keypoints.json / {name}_rect.txt
    r.crop_type = "fullbody"  # OpenPose crop rule: fullbody | upperbody | face
    # Apply a photo's EXIF orientation, as viewers and OpenPose do (False: pixels as stored,
    # like the official code, which turns a phone photo's person sideways).
    r.exif_orientation = True
    r.resolution = 512  # marching-cubes grid R (official default 512)
    # fast: narrow band around the surface (mesh within one voxel of parity, ~1/3 of the
    # queries at R=512); parity: the official octree, same grid bit for bit.
    r.octree = "fast"
    r.init_resolution = 64
    # Both octrees leave cells whose corner values span less than this unrefined (official).
    r.threshold = 0.05
    r.chunk = 16384  # points per network call: bounds memory at any grid resolution
    r.mesh_format = "obj"  # obj | ply | both
    # Vertex colours = normal·0.5+0.5. grid: the marching-cubes grid gradient (free);
    # network: the official finite differences of the field (4 queries per vertex); none.
    r.colors = "grid"
    r.points = ""  # --mode=query: (N, 3) .npy in the normalised frame
    return r


def _train() -> ml_collections.ConfigDict:
    # Training (`--mode=train`, hdjax/train/pifuhd.py): stages run in order, each training only
    # its own subtree (normals: the pix2pixHD nets; coarse; fine, with the coarse level frozen).
    t = ml_collections.ConfigDict()
    # A stage may come back: the paper's best variant (Table 1, "ML-PIFu, alternate") trains
    # the coarse and fine levels in turns rather than once each or end to end.
    t.stages = ("normals", "coarse", "fine", "coarse", "fine")
    t.steps = (50_000, 50_000, 50_000, 50_000, 50_000)
    t.num_steps = 0  # > 0: rescale the stages' steps to this total
    # Fine-tuning: start from these weights instead of the seed's random init (a shipped
    # name such as "pifuhd_small", a .npz, an official .pt or a converted directory).
    t.init_weights = ""
    t.lr = 1e-3  # RMSprop (paper)
    t.lr_decay_at = (0.8,)  # × 0.1 at these fractions of each stage (paper: step decay)
    # The occupancy BCE's weight λ of inside points (`losses.occupancy_bce`); 0: the official
    # per-sample fraction of outside points (balances PIFu's half-inside samples).
    t.occupancy_gamma = 0.0
    t.l1_weight = 5.0  # normal nets: λ_VGG·L_VGG + 5·L1 (paper)
    t.vgg19 = ""  # torchvision vgg19-*.pth; empty: L1 + (1 - SSIM) instead of L_VGG
    t.coarse_normals = "predicted"  # predicted (as at test time) | ground_truth
    t.log_every = 100
    t.checkpoint_every = 5000
    t.keep_checkpoints = 3
    t.eval_at_end = True  # score the last checkpoint (the `eval` section) when done
    return t


def _eval() -> ml_collections.ConfigDict:
    # Evaluation (`--mode=eval`, hdjax/eval/pifuhd.py).
    e = ml_collections.ConfigDict()
    e.step = -1  # checkpoint step to score; -1: the latest
    e.watch = False  # keep scoring new checkpoints until training's last step
    e.poll_seconds = 30.0
    e.scans = ""  # a folder of meshes to score on instead of the dataset's test subjects
    e.yaws = (0.0,)  # views rendered per subject
    e.num_subjects = 0  # score the first N test subjects (sorted by name); 0: all
    e.resolution = 256  # marching-cubes grid of the evaluated meshes
    e.normal_size = 512  # normal renders of the normal-consistency metric (PIFuHD: 512)
    e.iou_resolution = 128
    e.num_samples = 10_000  # surface samples of P2S / Chamfer (PIFuHD: 10,000)
    # The checkpoint kept in WORKDIR/best: lowest chamfer_cm | p2s_cm | normal_l2, highest iou.
    e.best_metric = "chamfer_cm"
    # Warn when best_metric got worse at this many evaluations in a row (0: never).
    e.patience = 3
    return e


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "pifuhd"  # main dispatches on it (`hdjax.main.MODELS`)
    c.seed = 0
    c.model = _model()
    # Weights of reconstruct/query/convert: a PyTorch checkpoint (pifuhd.pt), an orbax
    # directory (`--mode=convert`, WORKDIR/best), a shipped .npz, or "random" (init from
    # `seed`, the official N(0, 0.02)); empty: the weights this config ships (`weights`).
    c.checkpoint = ""
    # The weights trained here and shipped with the package for this config
    # (hdjax/models/weights/<weights>.npz, docs/models.md); empty: none ship.
    c.weights = ""
    c.input = _input(c.model.arch)
    c.render = _render(c.model.arch)
    c.reconstruct = _reconstruct()
    c.train = _train()
    c.eval = _eval()
    if arg == "tiny":
        _tiny(c)
    elif arg == "small":
        _small(c)
    elif arg == "parity":
        c.reconstruct.octree, c.reconstruct.colors = "parity", "network"
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (expected one of {VARIANTS} or none)")
    return c


def _tiny(c: ml_collections.ConfigDict) -> None:
    """Same structure, a fraction of the width: runs in seconds on a laptop CPU."""
    a = c.model.arch
    for level in (a.coarse, a.fine):
        level.hg_width = 32
        level.groups = 4
    a.coarse.update(num_stack=2, hg_depth=2, hg_dim=32, mlp_dim=[33, 64, 32, 16, 8, 1])
    a.fine.update(hg_depth=2, hg_dim=8, mlp_dim=[24, 32, 16, 8, 1])
    a.normal_ngf = 8
    a.normal_n_down = 2
    a.normal_n_blocks = 1
    a.coarse_size = 64
    a.fine_size = 128
    # The depth feature is z · (coarse_size // 2) / z_size (z in coarse-image pixels over
    # z_size pixels). Scaled with the image (200 px at 512² -> 25 px at 64²) it stays the
    # official z · 1.28; left at 200 it is z · 0.16, too weak beside the image features for
    # the MLP to learn depth: the mesh then fills the whole cube along z (issue #21).
    a.z_size = 25.0
    c.input.pipeline.crop_size = 64
    c.input.pipeline.batch_size = 4
    c.input.pipeline.num_points = 2048
    # Eight bodies do not teach depth from PIFu's near-surface points alone: the far parts
    # of each pixel's ray need their own supervision (issue #21).
    c.input.pipeline.free_points = 0.3
    c.input.pipeline.free_background = 0.25
    c.train.occupancy_gamma = 0.5
    c.input.dataset.config = "pifuhd_tiny"
    c.input.dataset.num_bodies = None  # the eight embedded bodies: the 20-minute budget
    c.render.num_points = 20_000
    c.train.stages = ("normals", "coarse", "fine")  # once each: the 20-minute budget
    c.train.steps = (1000, 8000, 4000)  # ~16 min on 2 idle cores
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.eval.resolution = 64
    c.eval.normal_size = 128
    c.eval.iou_resolution = 64
    c.eval.num_samples = 5000
    c.reconstruct.resolution = 64
    c.reconstruct.init_resolution = 16
    c.reconstruct.chunk = 4096


def _small(c: ml_collections.ConfigDict) -> None:
    """The shipped small model: the tiny structure twice as wide, at 4× the pixels (128² coarse
    / 256² fine input), trained on generated clothed bodies; trains on a 2-core CPU."""
    _tiny(c)
    a = c.model.arch
    a.coarse.update(hg_width=64, groups=8, hg_dim=64, mlp_dim=[65, 256, 128, 64, 32, 1])
    a.fine.update(mlp_dim=[72, 64, 32, 16, 1])  # 8 own + 64 of the coarse MLP's merge layer
    a.normal_ngf = 16
    a.normal_n_down = 3
    a.normal_n_blocks = 3
    a.coarse_size = 128
    a.fine_size = 256
    a.z_size = 50.0  # 200 px at 512² scaled to 128²: the official depth feature z · 1.28
    p = c.input.pipeline
    p.crop_size = 128
    p.num_points = 4096
    p.free_points = 0.2
    c.input.dataset.config = "pifuhd_small"
    c.input.dataset.num_bodies = 300
    c.render.num_points = 12_000
    c.train.steps = (800, 7000, 2500)
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 10  # all of them: the held-out curve is scored afterwards too
    c.eval.num_subjects = 10  # of the 30 held-out bodies (~40 s per checkpoint)
    c.weights = "pifuhd_small"  # hdjax/models/weights/pifuhd_small.npz, docs/models.md
    c.eval.resolution = 128
    c.eval.normal_size = 256
    c.eval.iou_resolution = 128
    c.eval.num_samples = 10_000
    c.reconstruct.resolution = 256
    c.reconstruct.init_resolution = 32
    c.reconstruct.chunk = 8192

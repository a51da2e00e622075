"""PIFuHD: the official architecture and reconstruction settings.

--config=configs/pifuhd.py          the released model (1024² input, R = 512)
--config=configs/pifuhd.py:tiny     a small random-weight variant for CPU smoke tests
"""

import os

import ml_collections

import hdjax

# The embedded example photo (a render of one of the embedded synthetic bodies).
EXAMPLES = os.path.join(os.path.dirname(hdjax.__file__), "data", "assets", "examples")


def _level(**kw) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(hg_width=256, groups=32, **kw))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Architecture. A checkpoint's stored options override these (and are checked against
    # its tensor shapes); without a checkpoint the model starts from random weights.
    m = c.model = ml_collections.ConfigDict()
    m.coarse = _level(
        num_stack=4,
        hg_depth=2,
        hg_dim=256,
        hg_down="ave_pool",
        mlp_dim=[257, 1024, 512, 256, 128, 1],
        mlp_res_layers=[2, 3, 4],
        merge_layer=2,
    )
    m.fine = _level(
        num_stack=1,
        hg_depth=4,
        hg_dim=16,
        hg_down="no_down",
        mlp_dim=[272, 512, 256, 128, 1],
        mlp_res_layers=[1, 2],
        merge_layer=-1,
    )
    m.use_front_normal = True
    m.use_back_normal = True
    m.normal_ngf = 64
    m.normal_n_down = 4
    m.normal_n_blocks = 9
    m.coarse_size = 512
    m.fine_size = 1024
    m.z_size = 200.0

    # Weights: a PyTorch checkpoint (pifuhd.pt) or an orbax directory written by
    # `--mode=convert`; empty = random init from `seed` (N(0, 0.02) as the official init).
    c.checkpoint = ""

    # Reconstruction (`--mode=reconstruct`) and field queries (`--mode=query`).
    r = c.reconstruct = ml_collections.ConfigDict()
    r.input = EXAMPLES  # image file or folder; crops: {name}_keypoints.json / {name}_rect.txt
    r.crop_type = "fullbody"  # OpenPose crop rule: fullbody | upperbody | face
    r.resolution = 512  # marching-cubes grid R (official default 512)
    # fast: narrow band around the surface (mesh within one voxel of parity, ~1/3 of the
    # queries at R=512); parity: the official octree, same grid bit for bit.
    r.octree = "fast"
    r.init_resolution = 64
    r.threshold = 0.05
    r.chunk = 16384  # points per network call: bounds memory at any grid resolution
    r.mesh_format = "obj"  # obj | ply | both
    # Vertex colours = normal·0.5+0.5. grid: the marching-cubes grid gradient (free);
    # network: the official finite differences of the field (4 queries per vertex); none.
    r.colors = "grid"
    r.points = ""  # --mode=query: (N, 3) .npy in the normalised frame
    if arg == "tiny":
        _tiny(c)
    elif arg == "parity":
        r.octree, r.colors = "parity", "network"
    elif arg not in (None, ""):
        raise ValueError(f"unknown config variant {arg!r} (expected 'tiny', 'parity' or none)")
    return c


def _tiny(c: ml_collections.ConfigDict) -> None:
    """Same structure, a fraction of the width: runs in seconds on a laptop CPU."""
    m = c.model
    for level in (m.coarse, m.fine):
        level.hg_width = 32
        level.groups = 4
    m.coarse.update(num_stack=2, hg_depth=2, hg_dim=32, mlp_dim=[33, 64, 32, 16, 8, 1])
    m.fine.update(hg_depth=2, hg_dim=8, mlp_dim=[24, 32, 16, 8, 1])
    m.normal_ngf = 8
    m.normal_n_down = 2
    m.normal_n_blocks = 1
    m.coarse_size = 64
    m.fine_size = 128
    c.reconstruct.resolution = 64
    c.reconstruct.init_resolution = 16
    c.reconstruct.chunk = 4096

"""Per-stage time and peak memory of PIFuHD reconstruction: hdjax vs the official code.

    python -m bench.reconstruct [--resolutions 256 512] [--impls hdjax-fast-grid official ...]
        [--repeat 2]  # report the second image of each process (compiled programs reused)

Weights: the official architecture with random weights (official init), written once as a
legacy-container `.pt` (like the released `pifuhd.pt`) that both implementations load; without
torch + pifu-hd only hdjax runs, from random params. Input: a synthetic 1024² silhouette.

Random weights give a structureless field, so the official octree stops after its first
level. With `--field body` (the default) both implementations therefore run the network on
every point the octree requests, discard the prediction and return a fixed analytic body (a
union of capsules) instead: the octree does realistic work and the query counts are equal
across implementations. `--field network` keeps the random network's own field, occupancy
within 0.5 ± 0.002 everywhere: the low-contrast worst case of the fast narrow band, which
must not cost more queries than the official octree. Each (implementation, R) runs in its
own process; peak memory is that process's VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import PARITY, REPO, worker_command

# (start, end, radius) capsules of a body in the normalised frame (y up, height ~1.8).
_CAPSULES = np.array(
    [
        [0.0, 0.15, 0.0, 0.0, 0.55, 0.0, 0.17],  # torso
        [0.0, 0.72, 0.0, 0.0, 0.75, 0.0, 0.11],  # head
        [-0.09, 0.12, 0.0, -0.12, -0.85, 0.02, 0.075],  # legs
        [0.09, 0.12, 0.0, 0.12, -0.85, 0.02, 0.075],
        [-0.2, 0.52, 0.0, -0.45, 0.05, 0.05, 0.05],  # arms
        [0.2, 0.52, 0.0, 0.47, 0.08, -0.05, 0.05],
        [-0.45, 0.05, 0.05, -0.5, -0.07, 0.08, 0.02],  # hands / fingers
        [0.47, 0.08, -0.05, 0.53, -0.04, -0.07, 0.02],
    ],
    np.float64,
)


def body_occupancy(points: np.ndarray) -> np.ndarray:
    """(N, 3) query-frame points -> (N,) float32 smooth occupancy of the capsule body."""
    p = np.asarray(points, np.float64)
    best = np.full(len(p), -np.inf)
    for a0, a1, a2, b0, b1, b2, r in _CAPSULES:
        a, b = np.array([a0, a1, a2]), np.array([b0, b1, b2])
        ab = b - a
        t = np.clip((p - a) @ ab / (ab @ ab), 0, 1)
        d = np.linalg.norm(p - (a + t[:, None] * ab), axis=1)
        best = np.maximum(best, r - d)
    return (1 / (1 + np.exp(-best * 150))).astype(np.float32)


def synthetic_image(size: int = 1024) -> np.ndarray:
    """(size, size, 3) uint8: the capsule body's silhouette, shaded, on grey."""
    import cv2

    img = np.full((size, size, 3), 128, np.uint8)
    px = lambda x, y: (int((x + 1) / 2 * (size - 1)), int((1 - y) / 2 * (size - 1)))  # noqa: E731
    for a0, a1, _, b0, b1, _, r in _CAPSULES:
        cv2.line(img, px(a0, a1), px(b0, b1), (70, 110, 180), int(r * size), cv2.LINE_AA)
    return img


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


class _Timed:
    """Wraps a point evaluator: counts points and the time spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds, self.points = fn, 0.0, 0

    def __call__(self, pts):
        t = time.perf_counter()
        out = self.fn(pts)
        self.seconds += time.perf_counter() - t
        self.points += np.asarray(pts).size // 3
        return out


def run_hdjax(
    ckpt: str, image: str, resolution: int, octree_mode: str, colors_mode: str, field_mode: str
) -> dict:
    import ml_collections

    from hdjax.configs.pifuhd import get_config
    from hdjax.geometry import mesh as mesh_lib
    from hdjax.models.pifuhd import PIFuHDArch
    from hdjax.reconstruction import images, preprocess
    from hdjax.reconstruction import pifuhd as recon
    from hdjax.reconstruction.weights import open_weights

    cfg = get_config()
    rc: ml_collections.ConfigDict = cfg.reconstruct
    rc.resolution, rc.octree = resolution, octree_mode
    t_all = time.perf_counter()
    t = time.perf_counter()
    weights = open_weights(ckpt or "random", PIFuHDArch.from_config(cfg.model.arch), 0)
    res = {"load": time.perf_counter() - t}
    img = images.load_image(image)
    fine, coarse = preprocess.prepare_pifuhd_inputs(
        img, preprocess.whole_image_rect(*img.shape[:2])
    )
    feats, timings = recon.image_features(weights, fine, coarse)
    res.update(
        normal_nets=timings["netF"] + timings["netB"],
        coarse_filter=timings["coarse"],
        fine_filter=timings["fine"],
    )
    net = _Timed(recon.occupancy_fn(weights, feats, rc.chunk))

    def field(pts):
        out = net(pts)  # the network runs on every point (see the module docstring)
        return out if field_mode == "network" else body_occupancy(pts)

    t = time.perf_counter()
    grid, _ = recon.occupancy_grid(
        field, rc.resolution, rc.octree, rc.init_resolution, rc.threshold
    )
    res["octree"] = time.perf_counter() - t - net.seconds
    res["grid_queries"] = net.points
    res["grid_query_s"] = net.seconds
    t = time.perf_counter()
    out = mesh_lib.extract_mesh(grid, resolution, with_normals=colors_mode == "grid")
    verts, faces = out[:2]
    res["marching_cubes"] = time.perf_counter() - t
    del grid
    n0 = net.points
    t = time.perf_counter()
    colors = None
    if colors_mode == "network":
        colors = mesh_lib.vertex_normal_colors(net, verts)
    elif colors_mode == "grid":
        colors = out[2] * 0.5 + 0.5
    res["normal_colors"] = time.perf_counter() - t
    res["color_queries"] = net.points - n0
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        mesh_lib.save_obj(os.path.join(d, "m.obj"), verts, faces, colors)
    res["save"] = time.perf_counter() - t
    res["us_per_query"] = 1e6 * net.seconds / max(net.points, 1)
    res["vertices"] = len(verts)
    res["total"] = time.perf_counter() - t_all
    return res


def _official_features(net, net_g, image: str, res: dict) -> None:
    """Runs the official normal nets and both filters on `image`, timing each in `res`."""
    import torch

    from hdjax.reconstruction import images, preprocess

    img = images.load_image(image)
    fine, coarse = preprocess.prepare_pifuhd_inputs(
        img, preprocess.whole_image_rect(*img.shape[:2])
    )
    x_c = torch.from_numpy(coarse.transpose(2, 0, 1)[None].copy())
    x_f = torch.from_numpy(fine.transpose(2, 0, 1)[None, None].copy())
    t = time.perf_counter()
    net_g.nmlF = net_g.netF(x_c)
    net_g.nmlB = net_g.netB(x_c)
    res["normal_nets"] = time.perf_counter() - t
    t = time.perf_counter()
    # filter_global without the normal nets (already timed above).
    x = torch.cat([x_c, net_g.nmlF, net_g.nmlB], 1)
    net_g.im_feat_list, _ = net_g.image_filter(x)
    net_g.im_feat_list = [net_g.im_feat_list[-1]]
    res["coarse_filter"] = time.perf_counter() - t
    t = time.perf_counter()
    net.filter_local(x_f)
    res["fine_filter"] = time.perf_counter() - t


def _official_grid(
    net, calib, resolution: int, res: dict, field_mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """The official octree over the official grid; returns the grid and `calib⁻¹ @ mat`."""
    import torch
    from PIFuHD.sdf import create_grid, eval_grid_octree

    coords, mat = create_grid(resolution, resolution, resolution)
    calib_inv = np.linalg.inv(calib[0].numpy())
    coords = coords.reshape(3, -1).T
    coords = np.matmul(np.concatenate([coords, np.ones((len(coords), 1))], 1), calib_inv.T)[:, :3]
    coords = coords.T.reshape(3, resolution, resolution, resolution)

    def query(points):  # the official eval_func body
        net.query(torch.from_numpy(points[None]).float(), calib)
        return net.get_preds()[0][0].numpy()

    timed = _Timed(query)

    def field(points):  # the official eval_func receives (3, N)
        out = timed(points)
        return out if field_mode == "network" else body_occupancy(points.T)

    t = time.perf_counter()
    sdf = eval_grid_octree(coords, lambda p: field(p), num_samples=50000)
    res["octree"] = time.perf_counter() - t - timed.seconds
    res["grid_queries"] = timed.points
    res["grid_query_s"] = timed.seconds
    res["us_per_query"] = 1e6 * timed.seconds / max(timed.points, 1)
    return sdf, np.matmul(calib_inv, mat)


def _official_normal_colors(net, calib, verts: np.ndarray) -> np.ndarray:
    """The official `gen_mesh` colour loop (its last chunk leaves the final vertex black)."""
    import torch

    verts_t = torch.from_numpy(verts.T).float()[None]
    color = np.zeros(verts.shape)
    step = 50000
    for i in range(len(color) // step + 1):
        left = i * step
        right = -1 if i == len(color) // step else (i + 1) * step
        net.calc_normal(verts_t[:, None, :, left:right], calib[:, None], calib)
        color[left:right] = (net.nmls.numpy()[0] * 0.5 + 0.5).T
    return color


def run_official(ckpt: str, image: str, resolution: int, field_mode: str) -> dict:
    import torch
    from PIFuHD.mesh_util import save_obj_mesh_with_color
    from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML
    from skimage import measure

    torch.set_grad_enabled(False)
    t_all = time.perf_counter()
    t = time.perf_counter()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    net_g = HGPIFuNetwNML(state["opt_netG"], "orthogonal")
    net = HGPIFuMRNet(state["opt"], net_g, "orthogonal")
    net.load_state_dict(state["model_state_dict"])
    del state
    net.eval()
    res = {"load": time.perf_counter() - t}
    _official_features(net, net_g, image, res)
    calib = torch.from_numpy(np.diag([1.0, -1.0, 1.0, 1.0]).astype(np.float32))[None]
    sdf, trans = _official_grid(net, calib, resolution, res, field_mode)
    t = time.perf_counter()
    verts, faces, _, _ = measure.marching_cubes(sdf, 0.5)
    verts = (np.matmul(trans[:3, :3], verts.T) + trans[:3, 3:4]).T
    faces = faces[:, ::-1]
    res["marching_cubes"] = time.perf_counter() - t
    del sdf
    t = time.perf_counter()
    color = _official_normal_colors(net, calib, verts)
    res["normal_colors"] = time.perf_counter() - t
    res["color_queries"] = 4 * len(verts)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        save_obj_mesh_with_color(os.path.join(d, "m.obj"), verts, faces, color)
    res["save"] = time.perf_counter() - t
    res["vertices"] = len(verts)
    res["total"] = time.perf_counter() - t_all
    return res


def _worker(args) -> None:
    # --repeat 2 reports the second image of a run: compiled programs are reused, as they are
    # for every image after the first of a folder.
    for _ in range(args.repeat):
        if args.impl == "official":
            res = run_official(args.ckpt, args.image, args.resolution, args.field)
        else:
            _, octree_mode, colors_mode = args.impl.split("-")
            res = run_hdjax(
                args.ckpt, args.image, args.resolution, octree_mode, colors_mode, args.field
            )
    res["peak_mib"] = _hwm_mib()
    print("RESULT " + json.dumps(res))


def _write_checkpoint(path: str) -> bool:
    """Random official-init PIFuHD in the legacy container; False without torch/pifu-hd."""
    try:
        import torch
        from PIFuHD.model import HGPIFuMRNet, HGPIFuNetwNML
    except ImportError:
        return False
    sys.path.insert(0, PARITY)
    from official_pifuhd import official_options

    opt, opt_netG = official_options(small_images=False)
    torch.manual_seed(0)
    net = HGPIFuMRNet(opt, HGPIFuNetwNML(opt_netG, "orthogonal"), "orthogonal")
    ckpt = {"model_state_dict": net.state_dict(), "opt": opt, "opt_netG": opt_netG}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return True


ROWS = [
    ("load", "load weights (s)"),
    ("normal_nets", "normal nets (s)"),
    ("coarse_filter", "coarse filter (s)"),
    ("fine_filter", "fine filter (s)"),
    ("grid_queries", "grid queries"),
    ("grid_query_s", "grid query time (s)"),
    ("us_per_query", "µs per query"),
    ("octree", "octree bookkeeping (s)"),
    ("marching_cubes", "marching cubes (s)"),
    ("color_queries", "normal-colour queries"),
    ("normal_colors", "normal colours (s)"),
    ("save", "write OBJ (s)"),
    ("vertices", "vertices"),
    ("total", "total (s)"),
    ("peak_mib", "peak RSS (MiB)"),
]


def _run_workers(args) -> dict:
    """Runs every (implementation, R) in its own process; returns their results by key."""
    import cv2

    results = {}
    with tempfile.TemporaryDirectory() as d:
        image = os.path.join(d, "body.png")
        cv2.imwrite(image, synthetic_image())
        ckpt = os.path.join(d, "pifuhd_random.pt")
        print("writing a random official-architecture checkpoint ...", flush=True)
        if not _write_checkpoint(ckpt):
            ckpt = ""
            args.impls = [i for i in args.impls if i != "official"]
            print("torch / pifu-hd not installed: hdjax only, random params", flush=True)
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        for r in args.resolutions:
            for impl in args.impls:
                cmd = [*worker_command(__spec__.name), "--worker", "--repeat", str(args.repeat)]
                cmd += ["--impl", impl, "--ckpt", ckpt, "--image", image, "--resolution", str(r)]
                cmd += ["--field", args.field]
                print(f"running {impl} at R={r} ...", flush=True)
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if out.returncode or not line:
                    print(out.stderr[-3000:])
                    continue
                results[(impl, r)] = json.loads(line[0][7:])
    return results


def _print_table(results: dict, args) -> None:
    """A markdown table of every stage, then the end-to-end speed-ups over the official code."""
    cols = list(results)
    head = "| stage | " + " | ".join(f"{i} R={r}" for i, r in cols) + " |"
    print("\n" + head + "\n|" + "---|" * (len(cols) + 1))
    for key, label in ROWS:
        cells = []
        for c in cols:
            v = results[c].get(key)
            cells.append("" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for r in args.resolutions:
        if ("official", r) in results:
            for impl in args.impls:
                if impl != "official" and (impl, r) in results:
                    ratio = results[("official", r)]["total"] / results[(impl, r)]["total"]
                    print(f"R={r}: {impl} is {ratio:.1f}x faster end to end than official")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    p.add_argument(
        "--impls",
        nargs="+",
        default=["hdjax-parity-network", "hdjax-fast-network", "hdjax-fast-grid", "official"],
        help="hdjax-<octree parity|fast>-<colors network|grid|none>, official",
    )
    p.add_argument("--repeat", type=int, default=1, help="images per process; the last is reported")
    p.add_argument(
        "--field",
        choices=["body", "network"],
        default="body",
        help="body: the analytic body drives the octree; network: the random network's own "
        "low-contrast field (the fast octree's worst case)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", default="", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return

    _print_table(_run_workers(args), args)


if __name__ == "__main__":
    main()

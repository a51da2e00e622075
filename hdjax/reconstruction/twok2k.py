"""2K2K photo -> mesh: `python -m hdjax.main --config=twok2k --mode=reconstruct`.

For each image `a.png` (with `a_keypoints.json`: OpenPose BODY_25 + hands, as the official
demo needs), as the demo `test_02_model.py` does:

1. the subject mask: the image's alpha channel, else `a_mask.png`, else none (the network's
   own predicted mask cuts the depth maps afterwards; the demo's rembg is not used);
2. pad to a square with replicated borders, resize to 2048² (bicubic), keypoints alike;
3. background set to black where the mask says so, then the demo's fixed colour jitter
   (brightness, contrast, saturation × 0.85 through Pillow, as torchvision does on a PIL
   image; ``reconstruct.jitter=none`` skips it);
4. keypoints -> 31 joints -> the 12 part transforms (`geometry.part_transforms`);
5. the phase-2 forward (`models.twok2k.forward.twok2k_forward`, ``model.numerics``);
6. depth maps -> mesh: the fast watertight stitch (`geometry.depth_mesh.stitch_mesh`) or
   screened Poisson (``reconstruct.mesher=poisson``, the optional `geometry` extra).

Outputs in ``W/reconstruct/``: `a.obj`/`a.ply` (the official output frame and scale),
`a_depth_front.png`/`a_depth_back.png` (uint16 ``D · 512 · 32``, as the demo writes them),
`a_normal_front.png`/`a_normal_back.png` (the blended part normals ×255), and with
``reconstruct.save_maps`` `a_maps.npz` (the model's float32 2048² outputs before meshing:
`depth_front`, `depth_back`, `mask`, `normal_front`, `normal_back`). The mesh comes first,
the PNGs after, each file atomically.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import cv2
import ml_collections
import numpy as np
from PIL import Image, ImageEnhance

from hdjax.errors import HdjaxError
from hdjax.geometry import mesh as mesh_lib
from hdjax.io.files import atomic_write, write_png
from hdjax.reconstruction import images, preprocess
from hdjax.reconstruction.runner import RunSummary, run_items

if TYPE_CHECKING:
    from hdjax.models.layers import Numerics

log = logging.getLogger(__name__)

SIZE = 2048
JITTER = 0.85  # the demo's fixed ColorJitter factors (brightness = contrast = saturation)
MASK_SUFFIX = "_mask.png"


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """A `<name>_mask.png`: foreground where the (first channel's) value is above half."""
    m = images.decode_image(path)[:, :, 0]
    if m.shape != shape:
        raise HdjaxError(
            f"mask is {m.shape[1]}x{m.shape[0]}, the image {shape[1]}x{shape[0]}", path
        )
    return m > (np.iinfo(m.dtype).max // 2 if m.dtype.kind in "ui" else 0.5)


def pad_to_square(
    image: np.ndarray, keypoints: np.ndarray, size: int = SIZE, mask: np.ndarray | None = None
):
    """The demo's `center_padding`: replicate-pad the short side (centred), resize to
    ``size``² bicubic; keypoints (J, 2+) in pixels move along. Returns (image, keypoints,
    mask), the mask padded with background and resized by nearest neighbour."""
    h, w = image.shape[:2]
    kp = np.array(keypoints, np.float64)
    top = left = 0
    if h < w:
        top = (w - h) // 2
        pads = (top, w - h - top, 0, 0)
    else:
        left = (h - w) // 2
        pads = (0, 0, left, h - w - left)
    image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REPLICATE)
    if mask is not None:
        mask = cv2.copyMakeBorder(mask.astype(np.uint8), *pads, cv2.BORDER_CONSTANT, value=0)
    kp[:, 0] += left
    kp[:, 1] += top
    if image.shape[0] != size:
        scale = size / max(h, w)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
        if mask is not None:
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        kp[:, :2] *= scale
    return image, kp, None if mask is None else mask.astype(bool)


def demo_jitter(image: np.ndarray, factor: float = JITTER) -> np.ndarray:
    """The demo's `ColorJitter((f, f), (f, f), (f, f))` on a uint8 RGB image: brightness,
    contrast, saturation by Pillow's enhancers, each rounding to uint8 as on a PIL image.
    (torchvision applies the three in a random order; with fixed factors the orders differ
    only by that rounding, at most a level or two.)"""
    img = Image.fromarray(image)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(factor)
    return np.asarray(img)


def network_input(
    item: preprocess.InputItem, cfg: ml_collections.ConfigDict, size: int = SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """An image -> ((size, size, 3) float32 in [-1, 1], theta (12, 2, 3), mask or None, the
    jittered uint8 RGB); ``size``: the model's canvas (2048 official)."""
    from hdjax.data.keypoints import openpose_to_twok2k
    from hdjax.geometry.part_transforms import part_transforms

    if item.crop_source != "openpose":
        raise HdjaxError(
            f"2K2K needs OpenPose keypoints: {item.name}_keypoints.json (BODY_25 + hands) "
            "beside the image",
            item.image,
        )
    rgb, mask = images.load_image_and_mask(item.image, cfg.exif_orientation)
    mask_file = item.image.with_name(item.image.stem + MASK_SUFFIX)
    if mask is None and mask_file.is_file():
        mask = read_mask(mask_file, rgb.shape[:2])
    if min(rgb.shape[:2]) < 64:
        raise HdjaxError(f"image is {rgb.shape[1]}x{rgb.shape[0]}: too small for 2K2K", item.image)
    kp = openpose_to_twok2k(item.crop_file)
    image, kp, mask = pad_to_square(rgb, kp, size, mask)
    if mask is not None:
        image = np.where(mask[..., None], image, 0).astype(np.uint8)
    if cfg.jitter == "demo":
        image = demo_jitter(image)
    theta, _ = part_transforms(kp, size=size, missing="centre")
    x = (image.astype(np.float32) / 255.0 - 0.5) / 0.5
    return x, np.asarray(theta, np.float32), mask, image


def output_paths(item: preprocess.InputItem, out_dir: str, cfg) -> list[str]:
    """The files written for `item`, in order: mesh(es), then PNGs, then the maps."""
    base = os.path.join(out_dir, item.name)
    meshes = {"obj": [".obj"], "ply": [".ply"], "both": [".obj", ".ply"]}[cfg.mesh_format]
    pngs = [f"_{k}_{s}.png" for k in ("depth", "normal") for s in ("front", "back")]
    maps = ["_maps.npz"] if cfg.save_maps else []
    return [base + e for e in meshes] + [base + e for e in pngs + maps]


def reconstruct_image(
    variables,
    item: preprocess.InputItem,
    out_dir: str,
    cfg,
    size: int = SIZE,
    width: int = 64,
    numerics: Numerics | None = None,
) -> dict:
    """One image -> its outputs (see the module docstring); returns timings and sizes.
    ``size``, ``width``, ``numerics``: the model's canvas, base width and `Numerics`
    (None: float32)."""
    from hdjax.geometry import depth_mesh
    from hdjax.models.twok2k.canvas import geometry, native_depth
    from hdjax.models.twok2k.forward import twok2k_forward

    t0 = time.perf_counter()
    x, theta, mask, _ = network_input(item, cfg, size)
    out = twok2k_forward(variables, x[None], theta[None], numerics=numerics, width=width)
    geom = geometry(size)  # depth in this canvas's own units (the networks' at 2048²)
    maps = {
        "depth_front": native_depth(np.asarray(out["depth_front"][0], np.float32), geom),
        "depth_back": native_depth(np.asarray(out["depth_back"][0], np.float32), geom),
        "mask": np.asarray(out["depth_mask"][0], np.float32),
        "normal_front": np.asarray(out["normal_front"][0], np.float32),
        "normal_back": np.asarray(out["normal_back"][0], np.float32),
    }
    t_net = time.perf_counter() - t0
    keep = maps["mask"] > 0.5 if mask is None else mask
    front = np.where(keep, maps["depth_front"], 0.0)
    back = np.where(keep, maps["depth_back"], 0.0)
    t = time.perf_counter()
    if cfg.mesher == "poisson":
        mesh = depth_mesh.poisson_mesh(front, back, depth=cfg.poisson_depth)
    else:
        mesh = depth_mesh.stitch_mesh(*depth_mesh.demo_depth_cleanup(front, back))
    t_mesh = time.perf_counter() - t
    if len(mesh.faces) == 0:
        raise HdjaxError("no surface: the predicted depth maps are empty", item.image)
    paths = output_paths(item, out_dir, cfg)
    verts, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    base = os.path.join(out_dir, item.name)
    for path in paths:
        kind = path[len(base) :]  # ".obj", "_depth_front.png", "_maps.npz", ...
        if kind in (".obj", ".ply"):
            save = mesh_lib.save_obj if kind == ".obj" else mesh_lib.save_ply
            save(path, verts, faces)
        elif kind.startswith("_depth_"):
            d = np.where(keep, maps["depth" + kind[6:-4]], 0)
            write_png(path, np.clip(d * 512 * 32, 0, 65535).astype(np.uint16))
        elif kind.startswith("_normal_"):
            n = maps["normal" + kind[7:-4]]
            write_png(path, np.clip(n * 255, 0, 255).astype(np.uint8))
        else:
            atomic_write(path, lambda f: np.savez_compressed(f, **maps))
    return dict(
        network=t_net,
        mesh=t_mesh,
        total=time.perf_counter() - t0,
        vertices=len(verts),
        faces=len(faces),
    )


def load_variables(cfg: ml_collections.ConfigDict):
    """The variables of ``checkpoint`` (a .pth.tar, a converted directory), of the config's
    shipped weights when it is empty, or the official random init from ``seed`` when it is
    ``random``; and where they came from."""
    import jax

    from hdjax.models import shipped, twok2k_official
    from hdjax.models.twok2k.networks import init_variables

    checkpoint = shipped.resolve_checkpoint(cfg.checkpoint, cfg.weights, "twok2k")
    if checkpoint != shipped.RANDOM:
        return twok2k_official.load(checkpoint, cfg.model.width), checkpoint
    log.warning(
        "--config.checkpoint=random: random weights (seed %d), the mesh means nothing", cfg.seed
    )
    variables = init_variables(jax.random.PRNGKey(cfg.seed), width=cfg.model.width)
    return variables, f"random (seed {cfg.seed})"


def reconstruct(
    cfg: ml_collections.ConfigDict, workdir: str, items: list[preprocess.InputItem]
) -> RunSummary:
    """Every image of ``items`` into ``workdir/reconstruct``; a bad image is reported and
    skipped, no output of the same run is overwritten."""
    from hdjax.models.twok2k.networks import numerics_from_config
    from hdjax.models.twok2k_official import width_of

    numerics = numerics_from_config(cfg.model.numerics)
    variables, source = load_variables(cfg)
    log.info("weights: %s", source)
    rc, size, width = cfg.reconstruct, cfg.model.canvas, width_of(variables)
    return run_items(
        items,
        os.path.join(workdir, "reconstruct"),
        lambda item, out_dir: output_paths(item, out_dir, rc),
        lambda item, out_dir: reconstruct_image(
            variables, item, out_dir, rc, size, width, numerics
        ),
        lambda t: (
            f"{t['vertices']} vertices, network {t['network']:.1f} s, mesh {t['mesh']:.1f} s, "
            f"total {t['total']:.1f} s"
        ),
    )


def convert(cfg: ml_collections.ConfigDict, workdir: str, out: str) -> None:
    """``--mode=convert``: ``checkpoint`` (a .pt) as an orbax directory ``out``."""
    from hdjax.models import twok2k_official

    del workdir
    twok2k_official.save_converted(out, twok2k_official.load(cfg.checkpoint))

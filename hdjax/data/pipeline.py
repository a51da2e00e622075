"""Grain input pipeline over the TFDS array_record datasets of `hdjax.data.records`.

    source = open_source("~/tensorflow_datasets/synthetic_humans/pifuhd/1.5.0", "train")
    loader = make_loader(source, PipelineConfig(mode="pifuhd_fine", batch_size=4), seed=0)
    it = iter(loader); batch = next(it); state = it.get_state()   # bytes; it.set_state(state)

Per record (`prepare`): decode; composite the subject over a random background (images from
``background_dir``, unreadable ones skipped and counted in one warning; else procedural:
a studio backdrop, a room or an outdoor scene, `procedural_background`);
colour jitter (brightness, contrast, saturation each × U(0.7, 1), as 2K2K); then per mode

* ``pifuhd_coarse``: the whole image resized to ``coarse_size`` (512), with its calib
  ``calib_global`` (the coarse level's, named as in the official ``HGPIFuMRNet.query``);
* ``pifuhd_fine``: a random ``crop_size`` (512) crop of the stored 1024² image and its calib
  ``calib_local`` (the fine level's), plus the whole image at ``coarse_size`` and its calib
  (``image_global``, ``calib_global``) for the frozen coarse level;
* ``twok2k``: the whole image at the stored size (2048² for the twok2k config) and its
  perspective ``calib``;

Every calib is exact for the image it comes with: a resize or crop is folded into it
(`window_calib`), so points, keypoints and pixels agree to float precision.

and ``num_points`` (8,000) points drawn from the stored ones (``points_coarse`` for the coarse
mode, ``points_fine`` otherwise; in the fine mode points projecting into the crop first),
of which a ``free_points`` fraction may instead be free-space points: outside by the depth
maps, in front of or behind the subject along its own pixels' rays (`free_space_points`).

Output element (batched: a leading B axis), all float32 unless noted, NHWC:

==================  ==============  ==================================================
key                 shape           meaning
==================  ==============  ==================================================
``image``           (H, W, 3)       composite RGB in [−1, 1] (PIFuHD's Normalize(0.5, 0.5))
``mask``            (H, W, 1)       1 on the subject
``normal_front``    (H, W, 3)       view-frame normals in [−1, 1], 0 on the background
``normal_back``     (H, W, 3)
``depth_front``     (H, W, 1)       ortho: view-frame z; persp: 2K2K d (d/512 = network
``depth_back``      (H, W, 1)       units); 0 on the background
``calib_global``    (4, 4)          PIFuHD modes: normalised point -> uv in [−1, 1]
                                    (align_corners=True) of the whole image (``image``
                                    in the coarse mode, ``image_global`` in the fine one)
``calib_local``     (4, 4)          fine mode only: the same for the crop (``image``)
``calib``           (4, 4)          twok2k mode only: normalised point -> pixels
``points``          (N, 3)          normalised-frame points
``labels``          (N,)            1 inside, 0 outside
``keypoints``       (31, 3)         (u, v, visible) pixels of ``image`` (2K2K layout)
``image_global``    (S, S, 3)       fine mode only: whole image at ``coarse_size``
``crop_offset``     (2,) int32      fine mode only: (row, col) of the crop's corner in
                                    the stored image's pixels
``theta``           (12, 2, 3)      twok2k mode only: the part transforms of
                                    ``keypoints`` (`twok2k_theta`)
==================  ==============  ==================================================

Determinism: grain seeds every record's generator from (seed, record position), so a seed
fixes the data exactly, whatever the worker count; the iterator state (`get_state`) resumes
mid-epoch identically. Records are sharded by `jax.process_index()` / `process_count()`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import cv2
import grain.python as grain
import numpy as np

from hdjax.data import codecs
from hdjax.data.codecs import record_camera
from hdjax.errors import HdjaxError
from hdjax.geometry.projection import orthogonal

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MODES = ("pifuhd_coarse", "pifuhd_fine", "twok2k")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Input pipeline settings.

    Attributes:
      mode: "pifuhd_coarse", "pifuhd_fine" or "twok2k" (module docstring).
      batch_size: per-process batch size.
      num_points: points per record and step (PIFuHD: 8,000).
      free_points: the fraction of them drawn as free-space points (`free_space_points`)
        instead of from the stored ones; 0 is PIFu's sampling.
      free_background: the fraction of the free-space points on background pixels' rays
        (`free_space_points`' ``background``).
      coarse_size: side of the whole-image input of the PIFuHD coarse level.
      crop_size: side of the PIFuHD fine-level crop.
      background_dir: folder of background images; None: procedural backgrounds.
      black_background: the fraction of samples composited over black instead (2K2K: 0.1,
        the masked input its demo feeds the network).
      jitter: (low, high) range of the brightness, contrast and saturation factors.
      num_epochs: None repeats forever.
      worker_count: grain worker processes (0: in-process; needs a __main__ guard if > 0).
      read_threads, read_prefetch: grain's record-reading threads and prefetch depth. Its
        defaults (16 threads, 500 records) hold gigabytes of decoded 1024² records and
        starve a small machine; a few records ahead are enough.
    """

    mode: str = "pifuhd_coarse"
    batch_size: int = 2
    num_points: int = 8000
    free_points: float = 0.0
    free_background: float = 0.0
    coarse_size: int = 512
    crop_size: int = 512
    background_dir: str | None = None
    black_background: float = 0.0
    jitter: tuple[float, float] = (0.7, 1.0)
    num_epochs: int | None = None
    worker_count: int = 0
    read_threads: int = 2
    read_prefetch: int = 8


def open_source(data_dir: str, split: str = "train"):
    """Random-access source of a built dataset (the versioned folder holding the shards).

    Returns:
      a TFDS ArrayRecord data source: ``len`` and ``source[i]`` -> dict of decoded numpy.
    """
    import tensorflow_datasets as tfds

    path = os.path.expanduser(data_dir)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise HdjaxError("not a built dataset folder (no dataset_info.json)", path)
    return tfds.builder_from_directory(path).as_data_source(split)


# --------------------------------------------------------------------------- backgrounds


def list_backgrounds(folder: str | None) -> list[str]:
    """Readable image files of ``folder`` (sorted); unreadable ones are skipped and counted
    in one warning line (with the first few names).

    Raises:
      HdjaxError: ``folder`` is given but is not a directory.
    """
    if folder is None:
        return []
    if not os.path.isdir(folder):
        raise HdjaxError("background folder does not exist", folder)
    good, bad = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.lower().endswith(IMAGE_EXTS):
            continue
        # A reduced decode is enough to know the file is an image and costs 1/64 of a full one.
        if cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
            bad.append(name)
            continue
        good.append(path)
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        logging.warning(
            "%s: skipped %d unreadable background image%s of %d (%s)",
            folder,
            len(bad),
            "" if len(bad) == 1 else "s",
            len(bad) + len(good),
            shown,
        )
    if not good:
        logging.warning("no readable background in %s; using procedural backgrounds", folder)
    return good


BACKGROUND_STYLES = ("studio", "room", "outdoor")


def _muted(rng: np.random.Generator, low: float, high: float, saturation: float) -> np.ndarray:
    """(3,) a colour of brightness U(low, high), its hue at most ``saturation`` from grey."""
    grey = rng.uniform(low, high)
    return np.clip(grey + rng.uniform(-1, 1, 3) * saturation * grey, 0, 1)


def _studio(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A coloured backdrop: a gradient and soft blobs."""
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(rng.integers(2, 7)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.35)
        w = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - 0.8 * w) + rng.uniform(0, 1, 3) * 0.8 * w
    return img


def _room(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A wall over a floor (horizon below the subject's waist), with windows, pictures and
    furniture blocks; the floor's boards run toward a vanishing point."""
    h = rng.uniform(0.55, 0.85)
    wall = _muted(rng, 0.35, 0.9, 0.35)
    img = wall * (1 - rng.uniform(0, 0.35) * (x if rng.random() < 0.5 else 1 - x))[..., None]
    floors = [[0.45, 0.3, 0.18], [0.5, 0.5, 0.5], [0.62, 0.55, 0.45], [0.3, 0.22, 0.16]]
    floor = np.clip(np.asarray(floors[rng.integers(len(floors))]) * rng.uniform(0.5, 1.3), 0, 1)
    vx = rng.uniform(0, 1)
    angle = np.arctan2(x - vx, np.maximum(y - h, 1e-3))
    boards = 0.5 + 0.5 * np.sin(angle * rng.uniform(10, 40)) if rng.random() < 0.6 else 0.5
    shade = (0.75 + 0.35 * (y - h) / (1 - h)) * (1 - 0.2 * boards)
    img = np.where((y > h)[..., None], floor * shade[..., None], img)
    img[np.abs(y - h) < 0.01] *= 0.6  # skirting board
    for _ in range(rng.integers(0, 5)):
        x0, w = rng.uniform(-0.1, 1), rng.uniform(0.06, 0.35)
        if rng.random() < 0.5:  # on the wall: a window (bright) or a picture / door
            y0 = rng.uniform(0.02, h - 0.15)
            y1 = rng.uniform(y0 + 0.08, h - 0.02)
            colour = (
                _muted(rng, 0.85, 1.0, 0.1) if rng.random() < 0.5 else _muted(rng, 0.1, 0.8, 0.6)
            )
        else:  # furniture standing on the floor
            y0 = h - rng.uniform(0.05, 0.35)
            y1 = h + rng.uniform(0.0, 0.08)
            colour = _muted(rng, 0.1, 0.6, 0.5)
        box = (x >= x0) & (x < x0 + w) & (y >= y0) & (y < y1)
        img[box] = colour * (0.85 + 0.15 * (y[box] - y0) / max(y1 - y0, 1e-3))[:, None]
    return img


def _outdoor(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sky (blue or overcast, with clouds), a skyline of buildings or trees, and ground."""
    lo = y.shape[0]
    h = rng.uniform(0.35, 0.7)
    if rng.random() < 0.65:
        top = np.array([rng.uniform(0.25, 0.5), rng.uniform(0.45, 0.7), rng.uniform(0.75, 0.98)])
    else:
        top = _muted(rng, 0.55, 0.9, 0.05)
    sky = top + (1 - top) * 0.6 * (y / h)[..., None]
    for _ in range(rng.integers(0, 6)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, h), rng.uniform(0.04, 0.2)
        w = np.exp(-((x - cx) ** 2 / 4 + (y - cy) ** 2) / (2 * r * r))[..., None]
        sky = sky * (1 - 0.7 * w) + 0.95 * 0.7 * w
    # Skyline: flat-topped buildings or a smooth tree line, up to 35 % of the frame.
    if rng.random() < 0.5:
        edges = np.sort(rng.uniform(0, 1, rng.integers(3, 12)))
        tops = rng.uniform(0.02, 0.35, len(edges) + 1)
        profile = tops[np.searchsorted(edges, x[0])]
        colours = [_muted(rng, 0.2, 0.7, 0.3) for _ in range(len(tops))]
        fill = np.array(colours)[np.searchsorted(edges, x[0])][None]
    else:
        coarse = rng.uniform(0.03, 0.25, 8)
        profile = np.interp(x[0], np.linspace(0, 1, 8), coarse)
        profile += rng.uniform(0, 0.03, lo)
        fill = (_muted(rng, 0.1, 0.35, 0.3) * [0.7, 1.0, 0.6])[None, None]
    band = (y < h) & (y > h - profile[None, :])
    img = np.where(band[..., None], np.broadcast_to(fill, (*y.shape, 3)), sky)
    ground = [[0.3, 0.45, 0.2], [0.4, 0.4, 0.4], [0.6, 0.5, 0.35], [0.35, 0.3, 0.25]]
    base = np.asarray(ground[rng.integers(len(ground))]) * rng.uniform(0.6, 1.3)
    grain = cv2.resize(rng.uniform(0.8, 1.2, (lo // 4, lo // 4)), (lo, lo))[..., None]
    g = base * grain * (0.8 + 0.3 * ((y - h) / (1 - h)))[..., None]
    return np.where((y >= h)[..., None], g, img)


def procedural_background(
    rng: np.random.Generator, size: int, style: str | None = None
) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: one of `BACKGROUND_STYLES` (a studio backdrop, a
    room, an outdoor scene; drawn from ``rng`` unless ``style`` is given), drawn at low
    resolution, out of focus by a random amount, upsampled, with sensor noise."""
    lo = 96
    drawn = BACKGROUND_STYLES[rng.integers(len(BACKGROUND_STYLES))]
    style = drawn if style is None else style
    y, x = np.mgrid[0:lo, 0:lo] / (lo - 1)
    img = {"studio": _studio, "room": _room, "outdoor": _outdoor}[style](rng, y, x)
    img = img.astype(np.float32)
    sigma = rng.uniform(0.0, 1.5)  # depth of field, in low-resolution pixels
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, rng.uniform(0.0, 0.03), img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def image_background(path: str, rng: np.random.Generator, size: int) -> np.ndarray | None:
    """A random square crop of an image file, resized: (size, size, 3) float32, or None."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    side = int(rng.integers(max(1, min(h, w) // 2), min(h, w) + 1))
    r0, c0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[r0 : r0 + side, c0 : c0 + side, ::-1]
    out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    return out.astype(np.float32) / 255.0


# ------------------------------------------------------------------------- per record ops


def composite(image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Subject over background: (H, W, 3) uint8/float, (H, W, 1) {0, 1}, (H, W, 3) [0, 1]."""
    fg = np.asarray(image, np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    return fg * mask + background * (1.0 - mask)


def color_jitter(
    image: np.ndarray, rng: np.random.Generator, low: float = 0.7, high: float = 1.0
) -> np.ndarray:
    """Brightness, contrast and saturation × U(low, high) each: (H, W, 3) [0, 1] float32.

    torchvision's definitions (contrast about the mean grey, saturation about per-pixel
    grey), applied in that fixed order, each clamped to [0, 1] as torchvision does (which
    matters once a factor exceeds 1).
    """
    b, c, s = (float(x) for x in rng.uniform(low, high, 3))
    img = np.asarray(image, np.float32)
    # cv2 (grey conversion, weighted sums) is several times faster than numpy at 2048².
    img = np.clip(img * b, 0.0, 1.0)
    mean = float(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean())
    img = np.clip(cv2.addWeighted(img, c, img, 0.0, mean * (1.0 - c)), 0.0, 1.0)
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    img = cv2.addWeighted(img, s, gray, 1.0 - s, 0.0)
    return np.clip(img, 0.0, 1.0, out=img)


def window_pixels(px: np.ndarray, col: int, row: int, window: int, out: int) -> np.ndarray:
    """(..., 2) (u, v) pixels of an image -> pixels of its ``window``² window at (col, row)
    resized to ``out``² (centre-aligned, as `cv2.resize`: pixel centres at integers)."""
    k = out / window
    return ((np.asarray(px, np.float64) - (col, row) + 0.5) * k - 0.5).astype(np.float32)


def window_calib(
    calib: np.ndarray, size: int, col: int, row: int, window: int, out: int
) -> np.ndarray:
    """Ortho calib of a ``size``² image -> calib of its ``window``² window at (col, row)
    resized to ``out``² (a crop: ``out = window``; a resize: the whole image as window).

    uv are align_corners=True coordinates, pixel ``u = (uv + 1)(S − 1)/2``; the window's
    pixel is `window_pixels` of it, so ``uv' = a·uv + b`` per axis, folded into calib.
    """
    k = out / window
    a = (size - 1) * k / (out - 1)
    post = np.eye(4)
    post[0, 0] = post[1, 1] = a
    post[0, 3] = ((size - 1) * k + (1 - 2 * col) * k - 1) / (out - 1) - 1
    post[1, 3] = ((size - 1) * k + (1 - 2 * row) * k - 1) / (out - 1) - 1
    return (post @ np.asarray(calib, np.float64)).astype(np.float32)


def project_uv(points: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N, 2) uv of an ortho ``calib`` (`geometry.projection.orthogonal`)."""
    return orthogonal(np.asarray(points)[None], np.asarray(calib)[None])[0, :, :2]


def choose_points(
    points: np.ndarray,
    labels: np.ndarray,
    n: int,
    rng: np.random.Generator,
    prefer: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` of the stored points (without replacement when there are enough).

    Args:
      prefer: optional (P,) bool; these points are drawn first (fine-level crop).
    """
    total = len(points)
    if prefer is None:
        idx = rng.choice(total, n, replace=n > total)
    else:
        first = np.flatnonzero(prefer)
        rest = np.flatnonzero(~prefer)
        if len(first) >= n:
            idx = rng.choice(first, n, replace=False)
        else:
            fill = rng.choice(rest, n - len(first), replace=n - len(first) > len(rest))
            idx = np.concatenate([first, fill])
            idx = idx[rng.permutation(n)]
    return points[idx].astype(np.float32), labels[idx].astype(np.float32)


def free_space_points(
    maps: dict[str, np.ndarray],
    calib: np.ndarray,
    n: int,
    rng: np.random.Generator,
    margin: float = 0.02,
    window: tuple[int, int, int] | None = None,
    background: float = 0.0,
) -> np.ndarray:
    """``n`` points that are outside the subject by its depth maps (ortho records).

    Each lies on the ray of a random subject pixel, uniform over the parts of the
    reconstruction cube's depth range [−1, 1] in front of the nearest surface or behind the
    farthest (``depth_front``/``depth_back`` of `decode_maps`, taken over the pixel's 3×3
    neighbourhood and widened by ``margin``, so a sub-pixel offset cannot reach the body).
    PIFu's near-surface samples leave these stretches of the cube almost unsupervised: about
    3 % of its points lie more than 30 cm from the surface, and a small model trained on
    them extrudes the silhouette through the whole depth (issue #21).

    Args:
      maps: `decode_maps` of the record (stored size S).
      calib: (4, 4) the record's ortho calib (normalised point -> uv, align_corners=True).
      window: optional (row, col, side) of the pixels to draw from (the fine level's crop).
      background: the fraction drawn instead on the rays of background pixels (no subject
        pixel in their 3×3 neighbourhood), anywhere in [−1, 1]: PIFu's samples reach the
        image's far corners and edges rarely, and a small model left blobs there.

    Returns:
      (m, 3) float32 normalised-frame points; m < n only where drawn pixels have no free
      depth (a subject spanning the whole cube) or the window holds no subject pixel.
    """
    mask = maps["mask"][..., 0] > 0
    size = mask.shape[0]
    kernel = np.ones((3, 3), np.uint8)
    near = cv2.dilate(np.where(mask, maps["depth_front"][..., 0], -np.inf), kernel) + margin
    far = cv2.erode(np.where(mask, maps["depth_back"][..., 0], np.inf), kernel) - margin
    empty = ~np.isfinite(near)  # no subject pixel in the 3×3 neighbourhood
    if window is not None:
        row, col, side = window
        keep = np.zeros_like(mask)
        keep[row : row + side, col : col + side] = True
        mask, empty = mask & keep, empty & keep
    ys, xs = np.nonzero(mask)
    if n <= 0 or len(ys) == 0:
        return np.zeros((0, 3), np.float32)
    by, bx = np.nonzero(empty)
    n_bg = round(background * n) if len(by) else 0
    pick = rng.integers(0, len(ys), n - n_bg)
    ys, xs = ys[pick], xs[pick]
    front = np.clip(1.0 - near[ys, xs], 0.0, None)  # free length in front (larger z)
    back = np.clip(far[ys, xs] + 1.0, 0.0, None)  # and behind
    t = rng.uniform(0.0, 1.0, len(ys)) * (front + back)
    z = np.where(t < front, near[ys, xs] + t, t - front - 1.0)
    free = front + back > 0
    if n_bg:
        pick = rng.integers(0, len(by), n_bg)
        ys, xs = np.concatenate([ys, by[pick]]), np.concatenate([xs, bx[pick]])
        z = np.concatenate([z, rng.uniform(-1.0, 1.0, n_bg)])
        free = np.concatenate([free, np.ones(n_bg, bool)])
    px = np.stack([xs, ys], axis=1) + rng.uniform(-0.5, 0.5, (n, 2))
    uvz1 = np.concatenate([px * 2.0 / (size - 1) - 1.0, z[:, None], np.ones((n, 1))], axis=1)
    points = (np.linalg.inv(np.asarray(calib, np.float64)) @ uvz1.T).T[:, :3]
    return points[free].astype(np.float32)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size:
        return img
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size, size, -1)


def decode_maps(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Stored uint8/uint16 maps -> float32 mask, normals and depths (module table units)."""
    camera = record_camera(record)
    mask = (np.asarray(record["mask"]).reshape(*record["mask"].shape[:2], 1) > 127).astype(
        np.float32
    )
    out = {"mask": mask}
    for side in ("front", "back"):
        n = codecs.uint8_to_normal(record[f"normal_{side}"])
        out[f"normal_{side}"] = n * mask
        png = np.asarray(record[f"depth_{side}"]).reshape(mask.shape)
        d = codecs.png_to_depth(png, camera)
        out[f"depth_{side}"] = np.where(mask > 0, d, 0.0).astype(np.float32)
    return out


def prepare(
    record: dict[str, Any],
    rng: np.random.Generator,
    config: PipelineConfig,
    backgrounds: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """One stored record -> one training element (module table); all randomness from rng."""
    if config.mode not in MODES:
        raise ValueError(f"unknown mode {config.mode!r}; one of {MODES}")
    size = record["image"].shape[0]
    camera = record_camera(record)
    if camera != ("persp" if config.mode == "twok2k" else "ortho"):
        raise HdjaxError(f"mode {config.mode!r} cannot train on records of the {camera} camera")
    maps = decode_maps(record)
    background = None
    if config.black_background > 0 and rng.random() < config.black_background:
        background = np.zeros((size, size, 3), np.float32)
    if backgrounds and background is None:
        background = image_background(backgrounds[rng.integers(len(backgrounds))], rng, size)
    if background is None:
        background = procedural_background(rng, size)
    rgb = color_jitter(composite(record["image"], maps["mask"], background), rng, *config.jitter)
    out = {"image": rgb, **maps}
    calib = np.asarray(record["calib"], np.float32)
    keypoints = np.asarray(record["keypoints"], np.float32).copy()
    level = "coarse" if config.mode == "pifuhd_coarse" else "fine"
    points = np.asarray(record[f"points_{level}"], np.float32)
    labels = np.asarray(record[f"labels_{level}"])
    prefer = None

    if config.mode == "pifuhd_coarse":
        s = config.coarse_size
        out = {k: _resize(v, s) for k, v in out.items()}
        out["mask"] = (out["mask"] > 0.5).astype(np.float32)
        out["calib_global"] = window_calib(calib, size, 0, 0, size, s)
        keypoints[:, :2] = window_pixels(keypoints[:, :2], 0, 0, size, s)
    elif config.mode == "pifuhd_fine":
        c, s = config.crop_size, config.coarse_size
        col, row = (int(rng.integers(0, size - c + 1)) for _ in range(2))
        glob = _resize(out["image"], s)
        out = {k: v[row : row + c, col : col + c] for k, v in out.items()}
        out["image_global"] = glob * 2.0 - 1.0
        out["calib_global"] = window_calib(calib, size, 0, 0, size, s)
        out["calib_local"] = window_calib(calib, size, col, row, c, c)
        out["crop_offset"] = np.array([row, col], np.int32)
        keypoints[:, :2] = window_pixels(keypoints[:, :2], col, row, c, c)
        uv = project_uv(points, out["calib_local"])
        prefer = np.all(np.abs(uv) <= 1.0, axis=1)
    else:
        out["calib"] = calib
        out["theta"] = twok2k_theta(keypoints, size, record.get("subject", ""))

    free = np.zeros((0, 3), np.float32)
    if config.free_points > 0 and config.mode != "twok2k":
        window = None if config.mode == "pifuhd_coarse" else (row, col, c)
        n_free = round(config.free_points * config.num_points)
        free = free_space_points(
            maps, calib, n_free, rng, window=window, background=config.free_background
        )
    pts, lab = choose_points(points, labels, config.num_points - len(free), rng, prefer)
    pts = np.concatenate([pts, free])
    lab = np.concatenate([lab, np.zeros(len(free), np.float32)])
    out["image"] = out["image"] * 2.0 - 1.0
    out.update(points=pts, labels=lab, keypoints=keypoints)
    return {k: np.asarray(v) for k, v in out.items()}


def twok2k_theta(keypoints: np.ndarray, size: int, subject: Any = "") -> np.ndarray:
    """The 12 part transforms (12, 2, 3) of a record's keypoints, by the official training
    rule: a joint outside the image is missing and sits at the image corner; a hand with
    no finger inside takes the wrist-extension fallback (where the official solver fails).

    Raises:
      HdjaxError: a joint a part needs is missing (naming the subject).
    """
    from hdjax.geometry.part_transforms import part_transforms

    try:
        return part_transforms(keypoints, size, missing="corner", strict=False)[0]
    except HdjaxError:
        pass
    try:
        return part_transforms(keypoints, size, missing="corner", strict=True)[0]
    except HdjaxError as e:
        name = subject.decode() if isinstance(subject, bytes) else str(subject)
        raise HdjaxError(f"record of subject {name!r}: {e}") from None


class _Prepare(grain.RandomMapTransform):
    def __init__(self, config: PipelineConfig, backgrounds: Sequence[str]):
        self.config = config
        self.backgrounds = list(backgrounds)

    def random_map(self, element, rng: np.random.Generator):
        return prepare(element, rng, self.config, self.backgrounds)


def shard_options(
    process_index: int | None = None, process_count: int | None = None
) -> grain.ShardOptions:
    """This process's shard of the records (default: `jax.process_index()` of `process_count()`)."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    return grain.ShardOptions(process_index, process_count, drop_remainder=True)


def make_loader(
    source,
    config: PipelineConfig,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DataLoader:
    """A grain DataLoader of batched `prepare` elements; ``iter(loader)`` is checkpointable.

    Args:
      source: random-access records (`open_source`, or any sequence of record dicts).
      config: `PipelineConfig`.
      seed: fixes shuffling and every random choice of `prepare`.
      process_index, process_count: override the JAX process sharding (tests).
    """
    sampler = grain.IndexSampler(
        num_records=len(source),
        shard_options=shard_options(process_index, process_count),
        shuffle=True,
        num_epochs=config.num_epochs,
        seed=seed,
    )
    ops = [
        _Prepare(config, list_backgrounds(config.background_dir)),
        grain.Batch(config.batch_size, drop_remainder=True),
    ]
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=ops,
        worker_count=config.worker_count,
        read_options=grain.ReadOptions(
            num_threads=config.read_threads, prefetch_buffer_size=config.read_prefetch
        ),
    )

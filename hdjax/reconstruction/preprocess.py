"""PIFuHD input preprocessing: crop rectangles and the two network inputs (images are
decoded by `hdjax.reconstruction.images`).

Reproduces the official evaluation datasets (`EvalWPoseDataset`, `EvalWRectDataset`,
`EvalDataset.get_item`) as plain functions:

    rect_from_openpose / read_rect_file /  (x, y, w, h) crop rectangle in pixels
      whole_image_rect
    crop_image(img, rect)                 (h, w, C), black outside the image
    prepare_pifuhd_inputs(img, rect)      (1024, 1024, 3) and (512, 512, 3) float32 in [-1, 1]

`find_inputs` pairs each image of a folder with its crop source, and `rect_for_item` turns
that pairing into a rectangle. Everything here is NumPy/OpenCV; the batch axis is added by the
caller.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from hdjax.data.keypoints import read_openpose_people
from hdjax.errors import HdjaxError
from hdjax.reconstruction.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

Rect = tuple[int, int, int, int]
CropType = Literal["fullbody", "upperbody", "face"]
CropSource = Literal["openpose", "rect", "whole"]

KEYPOINTS_SUFFIX = "_keypoints.json"
RECT_SUFFIX = "_rect.txt"

# OpenPose BODY_25 indices used by the official crop rules.
_NOSE, _NECK, _MID_HIP = 0, 1, 8
_FEET = (11, 19, 21, 22)  # right ankle, left big toe, left heel, right big toe
_FACE = (0, 15, 16, 17, 18)  # nose, eyes, ears
_EARS = (17, 18)
_FACING = (2, 5, 15, 16, 17, 18)  # shoulders, eyes, ears: only used for warnings
_NUM_BODY25 = 25
_CONF_STRONG = 0.5
_CONF_WEAK = 0.2


# ----------------------------------------------------------------------------------------------
# Crop rectangles
# ----------------------------------------------------------------------------------------------


def rect_from_openpose(json_path: str | os.PathLike, crop_type: CropType = "fullbody") -> Rect:
    """Square crop rectangle from an OpenPose BODY_25 json, exactly as the official code.

    The person with the largest vertical extent of keypoints with confidence > 0.5 is used
    (the first one on ties, or if nobody has such keypoints). `fullbody` uses the feet rule
    (keypoints 11, 19, 21, 22), `upperbody` the neck and mid-hip (or nose/shoulders), `face`
    the nose, eyes and ears; all truncate to int where the official code does, including its
    quirks (the face radius takes per-axis sums over points; upperbody without mid-hip scales
    the distance by 1/0.3 when only one of nose/shoulders is confident).

    Args:
      json_path: `{name}_keypoints.json` with `people[i].pose_keypoints_2d` = 75 floats.
      crop_type: 'fullbody', 'upperbody' or 'face'.

    Returns:
      (x, y, w, h) Python ints; w == h; x, y may be negative (the crop pads).

    Raises:
      HdjaxError: unreadable json, no person, not BODY_25, too few confident keypoints, or
        keypoints that give a zero-size crop.
    """
    rules = {"fullbody": _fullbody_rect, "upperbody": _upperbody_rect, "face": _face_rect}
    if crop_type not in rules:
        raise ValueError(f"crop_type must be fullbody, upperbody or face, got {crop_type!r}")
    keypoints = _select_person(_read_openpose(json_path))
    _warn_if_unreliable(keypoints, crop_type, json_path)
    rect = rules[crop_type](keypoints, json_path)
    if rect[2] <= 0:
        # The official code would go on to an empty crop and fail inside cv2.resize.
        raise HdjaxError(f"{crop_type} keypoints give a zero-size crop {rect}", json_path)
    return rect


def _read_openpose(json_path: str | os.PathLike) -> list[np.ndarray]:
    """Reads every person's keypoints as (25, 3) float64 (x, y, confidence)."""
    people = read_openpose_people(json_path)
    result = []
    for i, person in enumerate(people):
        try:
            flat = np.asarray(person["pose_keypoints_2d"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise HdjaxError(f"person {i} has no numeric 'pose_keypoints_2d'", json_path) from e
        if flat.ndim != 1 or flat.size % 3 or flat.size // 3 < _NUM_BODY25:
            raise HdjaxError(
                f"person {i}: expected {3 * _NUM_BODY25} BODY_25 values in "
                f"'pose_keypoints_2d', got {flat.size}",
                json_path,
            )
        result.append(flat.reshape(-1, 3))
    return result


def _select_person(people: Sequence[np.ndarray]) -> np.ndarray:
    """The tallest person by confident (> 0.5) keypoints; the first if none is taller than 0."""
    selected = people[0]
    if len(people) > 1:
        best = 0.0
        for kp in people:
            confident = kp[kp[:, 2] > _CONF_STRONG]
            if len(confident) == 0:
                continue
            height = confident[:, 1].max() - confident[:, 1].min()
            if best < height:  # strict: ties keep the earlier person
                best, selected = height, kp
    return selected


def _warn_if_unreliable(kp: np.ndarray, crop_type: str, json_path: str | os.PathLike) -> None:
    """The official code's warnings; the crop is still computed."""
    flags = kp[:, 2] > _CONF_STRONG
    facing = int(flags[list(_FACING)].sum())
    if crop_type == "face" and not (flags[_NOSE] and facing > 3):
        log.warning("%s: face should not be backfacing", json_path)
    if crop_type == "upperbody" and not (flags[_NECK] and flags[_NOSE] and facing > 3):
        log.warning("%s: upperbody should not be backfacing", json_path)
    if crop_type == "fullbody" and flags.sum() < 15:
        n = int(flags.sum())
        log.warning("%s: not sufficient keypoints (%d of 25 with conf > 0.5)", json_path, n)


def _square(cx: int, cy: int, radius: int) -> Rect:
    return int(cx) - radius, int(cy) - radius, 2 * radius, 2 * radius


def _fullbody_rect(kp: np.ndarray, json_path: str | os.PathLike) -> Rect:
    strong = kp[:, 2] > _CONF_STRONG
    if not strong[list(_FEET)].any():
        # Feet not visible: centre on the mid-hip (even if it is itself unconfident).
        center = kp[_MID_HIP, :2].astype(np.int64)
        pts = kp[strong, :2]
        if len(pts) == 0:
            raise HdjaxError("no keypoint with confidence > 0.5", json_path)
        radius = int(1.45 * np.sqrt(((center[None, :] - pts) ** 2).sum(1)).max())
        return _square(center[0], center[1] + int(0.05 * radius), radius)
    pts = kp[kp[:, 2] > _CONF_WEAK]
    pmax, pmin = pts.max(0), pts.min(0)
    center = (0.5 * (pmax[:2] + pmin[:2])).astype(np.int64)
    radius = int(0.65 * max(pmax[0] - pmin[0], pmax[1] - pmin[1]))
    return _square(center[0], center[1], radius)


def _upperbody_rect(kp: np.ndarray, json_path: str | os.PathLike) -> Rect:
    weak = kp[:, 2] > _CONF_WEAK
    center = kp[_NECK, :2]  # used even when the neck itself is unconfident, as official
    if weak[_MID_HIP]:
        dist = np.sqrt(((kp[_MID_HIP, :2] - center) ** 2).sum())
        radius = int(0.8 * dist)
    else:
        ids = [i for i in (_NOSE, 2, 5) if weak[i]]
        if len(ids) not in (1, 3):
            # The official code fails here (empty stack, or a 2-vs-3 broadcast error).
            raise HdjaxError(
                "upperbody crop needs the mid-hip, or exactly one or all three of nose and "
                f"shoulders with confidence > 0.2 (found {len(ids)})",
                json_path,
            )
        dist = np.sqrt(((kp[ids, :2] - center[None, :]) ** 2).sum(1))
        # One point broadcasts against all three ratios, as official (max is dist / 0.3).
        radius = int(0.8 * np.max(dist / np.array([0.4, 0.3, 0.3])))
    center = center.astype(np.int64)
    return _square(center[0], center[1], radius)


def _face_rect(kp: np.ndarray, json_path: str | os.PathLike) -> Rect:
    weak = kp[:, 2] > _CONF_WEAK
    ids = [i for i in _FACE if weak[i]]
    if len(ids) <= 1:
        raise HdjaxError(
            f"face crop needs at least 2 of nose, eyes, ears with confidence > 0.2 "
            f"(found {len(ids)})",
            json_path,
        )
    ps = kp[ids, :2]
    ears = sum(i in _EARS for i in ids)
    center = ps[-1] if (len(ids) <= 3 and ears != 2) else ps.mean(0)
    # Official quirk: squared offsets are summed over points (per axis), not over x/y.
    radius = int(1.4 * np.max(np.sqrt(((ps - center[None, :]) ** 2).sum(0))))
    center = center.astype(np.int64)
    return _square(center[0], center[1], radius)


def read_rect_file(path: str | os.PathLike) -> Rect:
    """Reads `{name}_rect.txt`: integer rows "x y w h"; the first row is used (as official).

    Blank lines and `#` comments are skipped (like `np.loadtxt`).

    Raises:
      HdjaxError: missing/unreadable file, no row, a row that is not 4 integers, or w, h ≤ 0.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError as e:
        raise HdjaxError("rect file does not exist", path) from e
    except (OSError, UnicodeDecodeError) as e:
        raise HdjaxError(f"cannot read rect file ({e})", path) from e
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.replace(",", " ").split()
        where = f"line {lineno} ({line!r})"
        try:
            values = [int(v) for v in fields]
        except ValueError as e:
            raise HdjaxError(f"{where}: expected 4 integers 'x y w h'", path) from e
        if len(values) != 4:
            raise HdjaxError(f"{where}: expected 4 integers 'x y w h'", path)
        x, y, w, h = values
        if w <= 0 or h <= 0:
            raise HdjaxError(f"{where}: width and height must be positive", path)
        return x, y, w, h
    raise HdjaxError("rect file has no 'x y w h' row", path)


def whole_image_rect(height: int, width: int) -> Rect:
    """The square rect centred on an (height, width) image that covers all of it.

    Returns:
      (x, y, s, s) with s = max(height, width); the short side is padded (x or y ≤ 0).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    side = max(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


# ----------------------------------------------------------------------------------------------
# Crop and network inputs
# ----------------------------------------------------------------------------------------------


def crop_image(img: np.ndarray, rect: Sequence[int]) -> np.ndarray:
    """Crops `rect` from `img`, zero (black) where the rect leaves the image.

    Same result as the official pad-with-copyMakeBorder-then-slice.

    Args:
      img: (H, W, C) array of any dtype.
      rect: (x, y, w, h) ints, w, h > 0.

    Returns:
      (h, w, C) array of img's dtype.
    """
    x, y, w, h = (int(v) for v in rect)
    if w <= 0 or h <= 0:
        raise ValueError(f"crop rect must have positive size, got {tuple(rect)}")
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    height, width = img.shape[:2]
    out = np.zeros((h, w, img.shape[2]), img.dtype)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x0 < x1 and y0 < y1:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = img[y0:y1, x0:x1]
    return out


def to_unit_range(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1] exactly as torchvision ToTensor + Normalize(0.5, 0.5).

    Both steps are float32 ops in torch (x / 255, then (x − 0.5) / 0.5), so the same ops in
    float32 NumPy give bit-identical values.
    """
    x = img.astype(np.float32) / np.float32(255.0)
    return (x - np.float32(0.5)) / np.float32(0.5)


def prepare_pifuhd_inputs(
    img_rgb: np.ndarray, rect: Sequence[int], fine_size: int = 1024, coarse_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Crops and resizes an image into the two PIFuHD inputs.

    Both sizes are resized (cv2 INTER_LINEAR, on uint8) directly from the crop; the 512 image
    is not a downsample of the 1024 one.

    Args:
      img_rgb: (H, W, 3) uint8 RGB, e.g. from `load_image`.
      rect: (x, y, w, h) crop rectangle.
      fine_size, coarse_size: output sizes (official 1024 and 512; smaller for tiny models).

    Returns:
      img_1024: (fine_size, fine_size, 3) float32 in [-1, 1], RGB, for the fine level.
      img_512: (coarse_size, coarse_size, 3) float32 in [-1, 1], RGB, for the coarse level.
    """
    if img_rgb.dtype != np.uint8 or img_rgb.ndim != 3 or img_rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {img_rgb.shape} {img_rgb.dtype}")
    crop = crop_image(img_rgb, rect)
    img_512 = cv2.resize(crop, (coarse_size, coarse_size), interpolation=cv2.INTER_LINEAR)
    img_1024 = cv2.resize(crop, (fine_size, fine_size), interpolation=cv2.INTER_LINEAR)
    return to_unit_range(img_1024), to_unit_range(img_512)


# ----------------------------------------------------------------------------------------------
# Input discovery
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputItem:
    """One image to reconstruct and where its crop comes from.

    Attributes:
      image: the image file.
      name: its stem, used to name outputs.
      crop_source: 'openpose' (`{stem}_keypoints.json`), 'rect' (`{stem}_rect.txt`) or
        'whole' (the whole image, squared).
      crop_file: the json or txt file; None for 'whole'.
    """

    image: Path
    name: str
    crop_source: CropSource
    crop_file: Path | None = None


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _item_for(image: Path) -> InputItem:
    name = image.stem
    keypoints = image.with_name(name + KEYPOINTS_SUFFIX)
    if keypoints.is_file():
        return InputItem(image, name, "openpose", keypoints)
    rect = image.with_name(name + RECT_SUFFIX)
    if rect.is_file():
        return InputItem(image, name, "rect", rect)
    return InputItem(image, name, "whole", None)


def find_inputs(path: str | os.PathLike) -> list[InputItem]:
    """Lists the images to reconstruct, each paired with its crop source.

    A folder is scanned (not recursively) for png/jpg/jpeg/bmp/tif/tiff/webp files (any case,
    hidden files skipped), sorted by name; json/txt and other files are ignored. The crop
    source of `a.png` is `a_keypoints.json` if present, else `a_rect.txt`, else the whole image.
    Images sharing a stem (`a.png`, `a.jpg`) are named `a_png`, `a_jpg` for their outputs.

    Raises:
      HdjaxError: the path does not exist, is a file that is not an image, or is a folder
        without images.
    """
    path = Path(path)
    if path.is_file():
        if not _is_image_name(path):
            suffixes = ", ".join(IMAGE_SUFFIXES)
            raise HdjaxError(f"not an image file (expected one of {suffixes})", path)
        return [_item_for(path)]
    if not path.is_dir():
        raise HdjaxError("input path does not exist", path)
    images = sorted(p for p in path.iterdir() if p.is_file() and _is_image_name(p))
    if not images:
        raise HdjaxError(f"folder has no image ({', '.join(IMAGE_SUFFIXES)})", path)
    items = [_item_for(p) for p in images]
    stems = collections.Counter(item.name for item in items)
    for i, item in enumerate(items):
        if stems[item.name] > 1:
            # `x.png` and `x.jpg` would both write `x.obj`: each keeps its suffix instead.
            unique = f"{item.name}_{item.image.suffix[1:]}"
            log.warning(
                "%s: another image is also named %r: outputs are named %r",
                item.image,
                item.name,
                unique,
            )
            items[i] = dataclasses.replace(item, name=unique)
    return items


def rect_for_item(
    item: InputItem, height: int, width: int, crop_type: CropType = "fullbody"
) -> Rect:
    """The crop rect of `item` for an image of (height, width) pixels."""
    if item.crop_source == "openpose":
        return rect_from_openpose(item.crop_file, crop_type)
    if item.crop_source == "rect":
        return read_rect_file(item.crop_file)
    return whole_image_rect(height, width)


# Below this share of the crop on the image the network input is (almost) all black.
MIN_CROP_COVERAGE = 0.05
# Below this share the crop is suspicious: a whole-image crop of a 2:1 panorama still has 0.5.
WARN_CROP_COVERAGE = 0.35


def crop_coverage(rect: Sequence[int], height: int, width: int) -> float:
    """The share of the crop rect's area that lies on the (height, width) image, in [0, 1]."""
    x, y, w, h = (int(v) for v in rect)
    ow = max(0, min(x + w, width) - max(x, 0))
    oh = max(0, min(y + h, height) - max(y, 0))
    return ow * oh / float(w * h)


def check_crop(item: InputItem, rect: Rect, height: int, width: int) -> list[str]:
    """Problems of a crop that the official code runs into silently (an all-black input).

    The official rule is kept; this only explains it: keypoints outside the image (a photo
    resized after OpenPose ran, a json of another photo), a full-body crop centred on an
    undetected mid-hip (the official rule then centres on pixel (0, 0)), a crop mostly off
    the image.

    Returns:
      Warnings, one line each (empty: nothing suspicious).
    Raises:
      HdjaxError: the crop holds almost none of the image (< MIN_CROP_COVERAGE).
    """
    where = item.crop_file or item.image
    notes = []
    if item.crop_source == "openpose":
        kp = _select_person(_read_openpose(item.crop_file))
        confident = kp[kp[:, 2] > _CONF_STRONG, :2]
        outside = ((confident < 0) | (confident >= [width, height])).any(axis=1)
        if outside.any():
            notes.append(
                f"{int(outside.sum())} of {len(confident)} confident keypoints lie outside "
                f"the {width}x{height} image (was the photo resized after OpenPose ran, or "
                "is the json another photo's?)"
            )
        if not (kp[list(_FEET), 2] > _CONF_STRONG).any() and kp[_MID_HIP, 2] <= _CONF_STRONG:
            x, y = kp[_MID_HIP, :2].astype(int)
            notes.append(
                f"no confident feet and no confident mid-hip (confidence "
                f"{kp[_MID_HIP, 2]:.2f}): the official full-body rule centres the crop on "
                f"({x}, {y})"
            )
    coverage = crop_coverage(rect, height, width)
    if coverage < MIN_CROP_COVERAGE:
        detail = f"; {notes[0]}" if notes else ""
        raise HdjaxError(
            f"crop {tuple(rect)} holds {100 * coverage:.1f} % of the {width}x{height} image: "
            f"the network input would be almost all black{detail}",
            where,
        )
    if coverage < WARN_CROP_COVERAGE:
        notes.append(
            f"only {100 * coverage:.0f} % of crop {tuple(rect)} lies on the {width}x{height} "
            "image; the rest is black padding"
        )
    return notes

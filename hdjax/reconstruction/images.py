"""Photos as the networks' inputs start: any common format decoded to (H, W, 3) uint8 RGB,
RGBA composited on grey (the official convention), the EXIF orientation applied on request,
and a truncated or mislabelled file named in one line instead of a decoder traceback."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hdjax.errors import HdjaxError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def decode_image(path: str | os.PathLike, exif_orientation: bool = False) -> np.ndarray:
    """Reads an image file as OpenCV decodes it: (H, W, C) BGR[A] or grey, any depth.

    With `exif_orientation` the EXIF Orientation tag (phone photos) is applied, as viewers
    and OpenPose do, so keypoints found on the photo match its pixels; off, pixels are read
    as stored (the official `cv2.IMREAD_UNCHANGED`).

    Raises:
      HdjaxError: the file is missing, empty, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise HdjaxError("image file does not exist", path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HdjaxError(f"cannot read image file ({e.strerror or e})", path) from e
    if not data:
        raise HdjaxError("image file is empty", path)
    truncation = _truncation_problem(data)
    if truncation:
        raise HdjaxError(truncation, path)
    # imdecode uses the same decoders as imread but lets us check the bytes we already read.
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise HdjaxError("not a readable image (OpenCV cannot decode it)", path)
    if img.ndim == 2:
        img = img[:, :, None]
    orientation = exif_orientation_tag(data)
    if orientation != 1:
        if exif_orientation:
            log.info("%s: EXIF orientation %d applied", path, orientation)
            img = apply_exif_orientation(img, orientation)
        else:
            log.warning(
                "%s: EXIF orientation %d ignored (reconstruct.exif_orientation=False, as the "
                "official code): the pixels are used as stored",
                path,
                orientation,
            )
    return img


def load_image(path: str | os.PathLike, exif_orientation: bool = False) -> np.ndarray:
    """Reads an image file as RGB, compositing any alpha channel on 0.5 grey.

    8-bit BGRA follows the official code bit for bit: float64 /255, un-premultiply
    rgb /= alpha + 1e-8, alpha·rgb + 0.5·(1 − alpha), ×255, truncate to uint8. 16-bit and float
    images go through the same float path (scaled by 1/65535 or taken as [0, 1]); without alpha
    they are rounded to 8 bits. Grayscale is replicated to three channels.

    Args:
      path: image file (png, jpg, bmp, tif, webp, ... anything OpenCV decodes).
      exif_orientation: as `decode_image`.

    Returns:
      (H, W, 3) uint8 RGB.

    Raises:
      HdjaxError: as `decode_image`, or an unsupported pixel format.
    """
    return _to_rgb_uint8(decode_image(path, exif_orientation), Path(path))


def load_image_and_mask(
    path: str | os.PathLike, exif_orientation: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image file as (H, W, 3) uint8 RGB, not composited, and its alpha channel as an
    (H, W) bool mask (alpha above half), or None without alpha.

    Raises:
      HdjaxError: as `load_image`.
    """
    img = decode_image(path, exif_orientation)
    if img.shape[2] not in (2, 4):
        return _to_rgb_uint8(img, Path(path)), None
    alpha = img[:, :, -1]
    top = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1.0
    return _to_rgb_uint8(img[:, :, :-1], Path(path)), alpha > top / 2


_EXIF_ORIENTATION = 0x0112


def exif_orientation_tag(data: bytes) -> int:
    """The EXIF Orientation (1–8) of an encoded image; 1 when absent or unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # no EXIF support for the format, a damaged EXIF block, ...
        return 1
    return value if 1 <= value <= 8 else 1


def apply_exif_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turns stored pixels (H, W, C) into the displayed image for an EXIF Orientation 1–8."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored and upside down
        5: lambda a: a.transpose(1, 0, 2),  # transposed
        6: lambda a: np.rot90(a, -1),  # stored 90° anticlockwise: turn clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed
        8: lambda a: np.rot90(a, 1),  # stored 90° clockwise: turn anticlockwise
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](img))


def _to_rgb_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """(H, W[, C]) BGR[A] or gray of any OpenCV depth -> (H, W, 3) uint8 RGB."""
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels not in (1, 2, 3, 4):
        raise HdjaxError(f"unsupported number of channels: {channels}", path)
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise HdjaxError(f"unsupported pixel type {img.dtype}", path)

    has_alpha = channels in (2, 4)
    if img.dtype == np.uint8 and not has_alpha:
        color = img
    elif has_alpha:
        # Official rule (EvalDataset.get_item), in float64 like NumPy's default promotion.
        im = img / scale
        if img.dtype.kind == "f":
            im = np.clip(np.nan_to_num(im), 0.0, 1.0)
        alpha = im[:, :, -1:]
        rgb = im[:, :, :-1] / (alpha + 1e-8)
        im = alpha * rgb + 0.5 * (1.0 - alpha)
        color = (255.0 * im).astype(np.uint8)
    else:
        im = np.clip(np.nan_to_num(img.astype(np.float64) / scale), 0.0, 1.0)
        color = np.rint(255.0 * im).astype(np.uint8)

    if color.shape[2] == 1:
        return np.repeat(color, 3, axis=2)
    return np.ascontiguousarray(color[:, :, ::-1])


# The IEND chunk's type and (constant) CRC: Pillow stops at IEND's header without its CRC.
_PNG_END = b"IEND\xaeB`\x82"


def _checked_format(data: bytes) -> str | None:
    """The format of `data` if it is one whose damage Pillow reports reliably, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    return None  # TIFF and the rest: left to OpenCV alone


def _truncation_problem(data: bytes) -> str | None:
    """Returns why `data` is a cut-off or damaged PNG/JPEG/BMP/WebP file, or None.

    OpenCV happily returns a partially decoded image for a truncated JPEG (it only prints a
    libjpeg warning), so the file is first decoded by Pillow, which raises instead.
    """
    fmt = _checked_format(data)
    if fmt is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # PNG: every chunk's CRC up to IEND
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Image.DecompressionBombError:
        return None  # beyond Pillow's size guard, not damaged: OpenCV decides
    except Image.UnidentifiedImageError:
        return f"truncated or damaged {fmt} file (unreadable header)"
    except Exception as e:  # Pillow's decoders raise many types on bad data
        kind = "truncated" if "truncat" in str(e).lower() else "damaged"
        return f"{kind} {fmt} file ({e})"
    if fmt == "PNG" and _PNG_END not in data:
        return "truncated PNG file (no complete IEND chunk)"
    return None

"""Tests of PIFuHD preprocessing (hdjax.reconstruction.preprocess).

Two kinds of reference:
  * hand values from spec/pifuhd.md §3.1 (run everywhere): crop rects worked out by hand,
    the RGBA formula, the ToTensor/Normalize transform written as cv2 + NumPy;
  * the official code itself, read from the installed `pifu-hd` package (skipped without it).
    Its dataset modules import torchvision, which is not installable here, so the needed
    functions are compiled from the package's source with `ast` at test time (nothing is
    copied into this repo): all of `helper_image_crop.py`, `EvalWPoseDataset.get_human_box`
    and `EvalDataset.get_item`. `get_item` also needs torch and PIL; torchvision's
    ToTensor + Normalize is replaced by the same two torch ops.
All comparisons are exact (integer rects, bit-equal arrays) unless stated.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from hdjax.errors import HdjaxError
from hdjax.reconstruction import images
from hdjax.reconstruction import preprocess as pp

# ----------------------------------------------------------------------------------------------
# Official code loader
# ----------------------------------------------------------------------------------------------


def _official_source(module: str) -> ast.Module:
    spec = importlib.util.find_spec("PIFuHD")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pifu-hd is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{module}.py"
    return ast.parse(path.read_text(), filename=str(path))


def _functions(tree: ast.Module, class_name: str | None, names: set[str] | None) -> list:
    body = tree.body
    if class_name is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    return [
        n for n in body if isinstance(n, ast.FunctionDef) and (names is None or n.name in names)
    ]


@pytest.fixture(scope="module")
def official() -> types.SimpleNamespace:
    """Official crop helpers, get_human_box and get_item as plain functions."""
    nodes = _functions(_official_source("helper_image_crop"), None, None)
    nodes += _functions(_official_source("EvalWPoseDataset"), "EvalWPoseDataset", {"get_human_box"})
    nodes += _functions(_official_source("EvalDataset"), "EvalDataset", {"get_item"})
    namespace: dict = {"np": np, "cv2": cv2, "json": json}
    try:
        import torch
        from PIL import Image

        namespace.update(torch=torch, Image=Image)
    except ImportError:
        pass
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "<pifu-hd>", "exec"), namespace)
    return types.SimpleNamespace(**{n.name: namespace[n.name] for n in nodes})


def _official_rect(official, json_path: Path, crop_type: str) -> tuple[int, ...]:
    crop_func = {
        "face": official.face_crop,
        "upperbody": official.upperbody_crop,
        "fullbody": official.fullbody_crop,
    }[crop_type]
    fake_self = types.SimpleNamespace(
        items=[types.SimpleNamespace(meta=str(json_path))],
        opt=types.SimpleNamespace(crop_type=crop_type),
        crop_func=crop_func,
    )
    return tuple(int(v) for v in official.get_human_box(fake_self, 0))


# ----------------------------------------------------------------------------------------------
# Synthetic inputs
# ----------------------------------------------------------------------------------------------


def _write_json(path: Path, people: list[np.ndarray]) -> Path:
    data = {
        "version": 1.3,
        "people": [
            {"person_id": [-1], "pose_keypoints_2d": p.reshape(-1).tolist()} for p in people
        ],
    }
    path.write_text(json.dumps(data))
    return path


def _random_person(rng: np.random.Generator, *, feet: bool, scale: float = 1.0) -> np.ndarray:
    """(25, 3) keypoints: a standing body around (500, 500), random confidences."""
    kp = np.zeros((25, 3))
    kp[:, 0] = 500 + scale * rng.uniform(-150, 150, 25)
    kp[:, 1] = 500 + scale * np.linspace(-400, 400, 25) + rng.uniform(-30, 30, 25)
    kp[:, 2] = rng.choice([0.0, 0.1, 0.3, 0.45, 0.7, 0.95], 25, p=[0.1, 0.1, 0.1, 0.1, 0.3, 0.3])
    kp[[0, 1, 2, 5, 8, 15, 16, 17, 18], 2] = rng.uniform(0.6, 1.0, 9)
    kp[list(pp._FEET), 2] = rng.uniform(0.55, 1.0, 4) if feet else rng.uniform(0.0, 0.5, 4)
    return kp


# ----------------------------------------------------------------------------------------------
# Crop rects: hand values
# ----------------------------------------------------------------------------------------------


def test_fullbody_rect_with_feet_by_hand(tmp_path):
    """Feet visible: bbox of conf > 0.2 keypoints, centre int(mid), radius int(0.65 · extent)."""
    kp = np.zeros((25, 3))
    kp[:, :2] = [400, 300]
    kp[:, 2] = 0.9
    kp[3] = [100.6, 50, 0.3]  # weak but > 0.2: counts for the bbox
    kp[4] = [300, 650.2, 0.9]
    kp[6] = [5000, 5000, 0.2]  # not > 0.2: ignored
    rect = pp.rect_from_openpose(_write_json(tmp_path / "a.json", [kp]), "fullbody")
    # x in [100.6, 400], y in [50, 650.2]: centre (250.3 -> 250, 350.1 -> 350),
    # radius int(0.65 * 600.2) = int(390.13) = 390.
    assert rect == (250 - 390, 350 - 390, 780, 780)
    assert all(type(v) is int for v in rect)


def test_fullbody_rect_without_feet_by_hand(tmp_path):
    """No feet: centre int(mid-hip), radius int(1.45 · max distance), centre_y += int(0.05 r)."""
    kp = np.zeros((25, 3))
    kp[:, 2] = 0.0
    kp[8] = [200.7, 300.9, 0.9]  # -> centre (200, 300)
    kp[0] = [200, 97, 0.9]  # distance 203 -> radius int(294.35) = 294
    kp[4] = [260, 300, 0.8]  # distance 60
    kp[5] = [200, 900, 0.5]  # not > 0.5: ignored
    kp[11] = [200, 950, 0.5]  # right ankle at exactly 0.5 does not count as a foot
    rect = pp.rect_from_openpose(_write_json(tmp_path / "a.json", [kp]), "fullbody")
    cy = 300 + 14  # int(0.05 * 294) = int(14.7)
    assert rect == (200 - 294, cy - 294, 588, 588)


def test_tallest_person_is_selected_by_hand(tmp_path):
    """Among several people the largest vertical extent of conf > 0.5 keypoints wins."""

    def person(top, bottom, x):
        kp = np.zeros((25, 3))
        kp[:, :2] = [x, top]
        kp[:, 2] = 0.9
        kp[11] = [x, bottom, 0.9]
        return kp

    short, tall = person(100, 300, 50), person(100, 500, 800)
    tall_weak = person(0, 900, 2000)
    tall_weak[11, 2] = 0.4  # its bottom point is not confident -> height 0 by the > 0.5 rule
    path = _write_json(tmp_path / "a.json", [short, tall_weak, tall])
    # tall: x extent 0, y in [100, 500] -> centre (800, 300), radius int(0.65 * 400) = 260.
    assert pp.rect_from_openpose(path, "fullbody") == (540, 40, 520, 520)

    # Equal heights: the earlier person is kept (strict comparison).
    path = _write_json(
        tmp_path / "tie.json", [tall_weak, person(0, 400, 10), person(100, 500, 800)]
    )
    assert pp.rect_from_openpose(path, "fullbody") == (-250, -60, 520, 520)
    # Nobody with a confident extent: the first person is used.
    flat, flat2 = person(100, 100, 10), person(100, 100, 900)
    flat[3] = flat2[3] = [10, 300, 0.3]  # only > 0.2: widens the crop, not the height
    path = _write_json(tmp_path / "flat.json", [flat, flat2])
    # x in [10, 10], y in [100, 300] -> centre (10, 200), radius int(0.65 * 200) = 130.
    assert pp.rect_from_openpose(path, "fullbody") == (-120, 70, 260, 260)
    # A crop of zero size is refused instead of failing later in the resize.
    path = _write_json(tmp_path / "point.json", [person(100, 100, 10)])
    with pytest.raises(HdjaxError, match="zero-size"):
        pp.rect_from_openpose(path, "fullbody")


def test_upperbody_and_face_rects_by_hand(tmp_path):
    kp = np.zeros((25, 3))
    kp[1] = [300.8, 400.2, 0.9]  # neck: centre (300, 400)
    kp[8] = [300.8, 600.2, 0.9]  # mid-hip at distance 200 -> radius int(160.0) = 160
    path = _write_json(tmp_path / "u.json", [kp])
    assert pp.rect_from_openpose(path, "upperbody") == (140, 240, 320, 320)

    kp[8, 2] = 0.1  # no mid-hip: nose/shoulders with ratios 0.4/0.3/0.3
    kp[0] = [300.8, 300.2, 0.9]  # 100 / 0.4 = 250
    kp[2] = [240.8, 400.2, 0.9]  # 60 / 0.3 = 200
    kp[5] = [390.8, 400.2, 0.9]  # 90 / 0.3 = 300 -> radius int(0.8 * 300) = 240
    path = _write_json(tmp_path / "u2.json", [kp])
    assert pp.rect_from_openpose(path, "upperbody") == (60, 160, 480, 480)

    kp[[2, 5], 2] = 0.0  # only the nose: one distance broadcast over 3 ratios -> 100 / 0.3
    path = _write_json(tmp_path / "u3.json", [kp])
    r = int(0.8 * (100 / 0.3))
    assert pp.rect_from_openpose(path, "upperbody") == (300 - r, 400 - r, 2 * r, 2 * r)

    face = np.zeros((25, 3))
    face[0] = [100, 100, 0.9]  # nose
    face[15] = [90, 90, 0.9]  # one eye; 2 points, no ear pair -> centre = last = (90, 90)
    path = _write_json(tmp_path / "f.json", [face])
    # per-axis sums over points: sqrt(10² + 0²) = 10 on both axes -> radius int(14.0) = 14
    assert pp.rect_from_openpose(path, "face") == (76, 76, 28, 28)


# ----------------------------------------------------------------------------------------------
# Crop rects: parity with the official code
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_type", ["fullbody", "upperbody", "face"])
def test_rect_matches_official(official, tmp_path, crop_type):
    """One and several people, with and without feet, random confidences: identical rects."""
    rng = np.random.default_rng({"fullbody": 0, "upperbody": 1, "face": 2}[crop_type])
    checked = 0
    for case in range(60):
        n_people = 1 if case % 3 == 0 else int(rng.integers(2, 4))
        people = [
            _random_person(rng, feet=bool(rng.integers(2)), scale=rng.uniform(0.3, 1.5))
            for _ in range(n_people)
        ]
        if crop_type == "upperbody" and case % 2:
            for p in people:  # exercise the no-mid-hip branch with 1 or 3 of nose/shoulders
                p[8, 2] = 0.1
                if case % 4 == 1:
                    p[[2, 5], 2] = 0.0
        path = _write_json(tmp_path / f"{case}.json", people)
        assert pp.rect_from_openpose(path, crop_type) == _official_rect(official, path, crop_type)
        checked += 1
    assert checked == 60


def test_fullbody_branches_match_official(official, tmp_path):
    """Both fullbody branches are hit, including a mid-hip below 0.5 confidence."""
    rng = np.random.default_rng(5)
    for feet in (True, False):
        for low_hip in (False, True):
            kp = _random_person(rng, feet=feet)
            if low_hip:
                kp[8, 2] = 0.3
            path = _write_json(tmp_path / f"{feet}{low_hip}.json", [kp])
            assert pp.rect_from_openpose(path, "fullbody") == _official_rect(
                official, path, "fullbody"
            )


# ----------------------------------------------------------------------------------------------
# Bad OpenPose / rect files
# ----------------------------------------------------------------------------------------------


def test_json_without_people_raises(tmp_path):
    path = tmp_path / "x_keypoints.json"
    path.write_text(json.dumps({"version": 1.3, "people": []}))
    with pytest.raises(HdjaxError, match="no person") as e:
        pp.rect_from_openpose(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("crop_type", ["fullbody", "upperbody", "face"])
def test_json_without_confident_keypoints_raises(tmp_path, crop_type):
    kp = np.full((25, 3), 100.0)
    kp[:, 2] = 0.2  # all ≤ 0.2: nothing passes either threshold
    path = _write_json(tmp_path / "low.json", [kp, kp])
    with pytest.raises(HdjaxError) as e:
        pp.rect_from_openpose(path, crop_type)
    assert e.value.path == str(path)


@pytest.mark.parametrize(
    "text", ["not json", '{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}', "[1, 2]"]
)
def test_malformed_json_raises(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(HdjaxError) as e:
        pp.rect_from_openpose(path)
    assert e.value.path == str(path)


def test_read_rect_file(tmp_path):
    path = tmp_path / "a_rect.txt"
    path.write_text("# x y w h\n\n-12 30 400 400\n1 2 3 4\n")
    assert pp.read_rect_file(path) == (-12, 30, 400, 400)
    for bad in ["", "1 2 3\n", "1 2 3.5 4\n", "a b c d\n", "0 0 0 10\n"]:
        path.write_text(bad)
        with pytest.raises(HdjaxError) as e:
            pp.read_rect_file(path)
        assert e.value.path == str(path)
    with pytest.raises(HdjaxError, match="does not exist"):
        pp.read_rect_file(tmp_path / "missing_rect.txt")


def test_whole_image_rect():
    assert pp.whole_image_rect(100, 60) == (-20, 0, 100, 100)
    assert pp.whole_image_rect(60, 100) == (0, -20, 100, 100)
    assert pp.whole_image_rect(50, 50) == (0, 0, 50, 50)
    x, y, s, _ = pp.whole_image_rect(101, 100)  # odd difference: still covers every pixel
    assert x <= 0 and x + s >= 100 and (y, s) == (0, 101)


# ----------------------------------------------------------------------------------------------
# Cropping and network inputs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rect",
    [
        (5, 7, 20, 20),
        (-10, -4, 30, 30),
        (30, 20, 40, 40),
        (-5, -5, 60, 60),
        (50, 50, 8, 8),
        (-30, 3, 10, 10),
        (0, 0, 48, 40),
        (8, 0, 40, 40),
    ],
)
def test_crop_image_matches_official(official, rect):
    """Inside, partly outside, larger than and fully outside the (40, 48) image."""
    rng = np.random.default_rng(3)
    for channels in (3, 4):
        img = rng.integers(1, 256, (40, 48, channels), np.uint8)
        ours = pp.crop_image(img, rect)
        assert ours.shape == (rect[3], rect[2], channels)
        np.testing.assert_array_equal(ours, official.crop_image(img, rect))


def test_crop_image_pads_black_by_hand():
    img = np.full((4, 4, 3), 7, np.uint8)
    out = pp.crop_image(img, (-1, 2, 3, 3))
    expected = np.zeros((3, 3, 3), np.uint8)
    expected[:2, 1:] = 7  # rows 2..3 and columns 0..1 of the image; the rest is padding
    np.testing.assert_array_equal(out, expected)


def test_prepare_inputs_matches_direct_transform():
    """cv2 INTER_LINEAR resize of the uint8 crop, then (x/255 − 0.5)/0.5 in float32."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (300, 200, 3), np.uint8)
    rect = (-50, 10, 290, 290)
    img_1024, img_512 = pp.prepare_pifuhd_inputs(img, rect)
    assert img_1024.shape == (1024, 1024, 3) and img_512.shape == (512, 512, 3)
    assert img_1024.dtype == np.float32 and img_512.dtype == np.float32

    padded = cv2.copyMakeBorder(img, 0, 0, 50, 40, cv2.BORDER_CONSTANT, value=[0, 0, 0])
    crop = padded[10:300, 0:290]
    for size, ours in ((1024, img_1024), (512, img_512)):
        ref = cv2.resize(crop, (size, size)).astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(ours, (ref - np.float32(0.5)) / np.float32(0.5))
    assert img_512.min() >= -1.0 and img_512.max() <= 1.0
    # The 512 image is resized from the crop, not from the 1024 image.
    assert not np.array_equal(cv2.resize(img_1024, (512, 512)), img_512)


def _official_get_item(official, img_bgr_or_bgra: np.ndarray, rect) -> dict:
    torch = pytest.importorskip("torch")
    if "Image" not in official.get_item.__globals__:
        pytest.skip("PIL is not installed")

    def to_tensor(pil_image):  # torchvision ToTensor + Normalize((.5,)*3, (.5,)*3)
        t = torch.from_numpy(np.array(pil_image, np.uint8)).permute(2, 0, 1)
        t = t.to(torch.float32).div(255)
        mean = torch.tensor([0.5, 0.5, 0.5])[:, None, None]
        return t.sub_(mean).div_(mean)

    fake_self = types.SimpleNamespace(
        items=[types.SimpleNamespace(img=img_bgr_or_bgra.copy(), name="x")],
        get_human_box=lambda index: rect,
        crop_human_box=official.crop_image,
        load_size=1024,
        to_tensor=to_tensor,
    )
    return official.get_item(fake_self, 0)


@pytest.mark.parametrize("alpha", [False, True])
def test_full_pipeline_matches_official_get_item(official, tmp_path, alpha):
    """load_image + prepare_pifuhd_inputs vs the official get_item on the same PNG: bit-equal."""
    rng = np.random.default_rng(6)
    bgr = rng.integers(0, 256, (180, 140, 4 if alpha else 3), np.uint8)
    if alpha:
        bgr[..., 3] = rng.choice([0, 1, 77, 128, 254, 255], bgr.shape[:2])
        bgr[:, :, :3] = np.minimum(bgr[:, :, :3], bgr[:, :, 3:])  # premultiplied
    path = tmp_path / "person.png"
    assert cv2.imwrite(str(path), bgr)
    rect = (-30, 5, 200, 200)
    ref = _official_get_item(official, cv2.imread(str(path), cv2.IMREAD_UNCHANGED), rect)

    img_1024, img_512 = pp.prepare_pifuhd_inputs(images.load_image(path), rect)
    np.testing.assert_array_equal(img_1024, ref["img"][0].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(img_512, ref["img_512"][0].permute(1, 2, 0).numpy())


# ----------------------------------------------------------------------------------------------
# Image loading
# ----------------------------------------------------------------------------------------------


def test_load_rgba_matches_spec_formula(tmp_path):
    """float64 /255, rgb /= a + 1e-8, a·rgb + 0.5(1 − a), ×255, truncate; BGR -> RGB."""
    rng = np.random.default_rng(7)
    bgra = rng.integers(0, 256, (20, 30, 4), np.uint8)
    bgra[0, 0] = [10, 20, 30, 0]  # colour under zero alpha: composited to pure grey
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), bgra)
    im = bgra / 255.0
    rgb = im[..., :3] / (im[..., 3:] + 1e-8)
    expected = (255.0 * (im[..., 3:] * rgb + 0.5 * (1.0 - im[..., 3:]))).astype(np.uint8)
    out = images.load_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, expected[..., ::-1])
    np.testing.assert_array_equal(out[0, 0], [127, 127, 127])


def test_load_rgb_gray_and_16bit(tmp_path):
    rng = np.random.default_rng(8)
    bgr = rng.integers(0, 256, (10, 12, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    np.testing.assert_array_equal(images.load_image(tmp_path / "c.png"), bgr[..., ::-1])

    gray = rng.integers(0, 256, (10, 12), np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = images.load_image(tmp_path / "g.png")
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, 2))

    deep = rng.integers(0, 65536, (10, 12, 3), np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = images.load_image(tmp_path / "d.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.rint(deep[..., ::-1] / 257.0).astype(np.uint8))

    deep_rgba = np.concatenate([deep, np.full((10, 12, 1), 65535, np.uint16)], axis=2)
    cv2.imwrite(str(tmp_path / "da.png"), deep_rgba)
    out = images.load_image(tmp_path / "da.png")  # opaque: ≈ the colour, truncated to 8 bits
    assert np.abs(out.astype(int) - deep[..., ::-1] / 257.0).max() <= 1.0


def test_load_jpeg_with_trailing_data_and_thumbnail(tmp_path):
    """A complete JPEG loads even with bytes after EOI or an embedded thumbnail's own EOI."""
    img = cv2.resize(np.random.default_rng(9).integers(0, 256, (8, 8, 3), np.uint8), (64, 64))
    data = cv2.imencode(".jpg", img)[1].tobytes()
    thumb = cv2.imencode(".jpg", img[:8, :8])[1].tobytes()
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = data[:2] + app1 + data[2:]
    (tmp_path / "t.jpg").write_bytes(with_thumb + b"\x00\x00trailer")
    out = images.load_image(tmp_path / "t.jpg")
    np.testing.assert_array_equal(out, cv2.imdecode(np.frombuffer(data, np.uint8), 1)[..., ::-1])

    # Cut inside the main scan: the thumbnail's EOI must not make it look complete.
    (tmp_path / "cut.jpg").write_bytes(with_thumb[: len(app1) + len(data) // 2])
    with pytest.raises(HdjaxError, match="truncated JPEG"):
        images.load_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("kind", ["png", "jpg", "bmp", "webp"])
def test_truncated_images_raise(tmp_path, kind):
    rng = np.random.default_rng(10)
    img = cv2.resize(rng.integers(0, 256, (8, 8, 3), np.uint8), (64, 48))
    data = cv2.imencode(f".{kind}", img)[1].tobytes()
    whole = tmp_path / f"whole.{kind}"
    whole.write_bytes(data)
    assert images.load_image(whole).shape == (48, 64, 3)
    for cut in (len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.{kind}"
        path.write_bytes(data[:cut])
        with pytest.raises(HdjaxError) as e:
            images.load_image(path)
        assert e.value.path == str(path)


def test_non_images_raise(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path, problem in [
        (text, "not a readable image"),
        (empty, "empty"),
        (tmp_path / "missing.png", "does not exist"),
        (tmp_path, "does not exist"),
    ]:
        with pytest.raises(HdjaxError, match=problem) as e:
            images.load_image(path)
        assert str(e.value) == f"{path}: {e.value.problem}"


# ----------------------------------------------------------------------------------------------
# Input discovery
# ----------------------------------------------------------------------------------------------


def test_find_inputs(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.webp", "d.tif", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a_keypoints.json").write_text("{}")
    (tmp_path / "a_rect.txt").write_text("0 0 1 1")  # keypoints take precedence
    (tmp_path / "b_rect.txt").write_text("0 0 1 1")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "e_keypoints.json").write_text("{}")  # no image: ignored
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.png").write_bytes(b"x")  # not recursive

    items = pp.find_inputs(tmp_path)
    assert [i.name for i in items] == ["a", "b", "c", "d"]
    assert [i.crop_source for i in items] == ["openpose", "rect", "whole", "whole"]
    assert items[0].crop_file == tmp_path / "a_keypoints.json"
    assert items[1].crop_file == tmp_path / "b_rect.txt"
    assert items[2].crop_file is None and items[2].image == tmp_path / "c.webp"

    single = pp.find_inputs(tmp_path / "b.jpg")
    assert single == [items[1]]
    with pytest.raises(HdjaxError, match="does not exist"):
        pp.find_inputs(tmp_path / "nope")
    with pytest.raises(HdjaxError, match="not an image"):
        pp.find_inputs(tmp_path / "notes.txt")
    (tmp_path / "sub" / "z.png").unlink()
    with pytest.raises(HdjaxError, match="no image"):
        pp.find_inputs(tmp_path / "sub")


def test_rect_for_item(tmp_path):
    (tmp_path / "a_rect.txt").write_text("1 2 30 30\n")
    item = pp.InputItem(tmp_path / "a.png", "a", "rect", tmp_path / "a_rect.txt")
    assert pp.rect_for_item(item, 10, 20) == (1, 2, 30, 30)
    whole = pp.InputItem(tmp_path / "b.png", "b", "whole")
    assert pp.rect_for_item(whole, 10, 20) == (0, -5, 20, 20)


def test_same_stem_images_get_distinct_output_names(tmp_path):
    for name in ["x.png", "x.jpg", "y.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "x_keypoints.json").write_text("{}")
    items = pp.find_inputs(tmp_path)
    assert [i.name for i in items] == ["x_jpg", "x_png", "y"]
    assert [i.crop_source for i in items] == ["openpose", "openpose", "whole"]  # shared json


# ----------------------------------------------------------------------------------------------
# EXIF orientation (phone photos)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_viewers(tmp_path, orientation):
    """Pillow's `exif_transpose` (what viewers show, what OpenPose sees) is the reference."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(orientation)
    stored = np.zeros((48, 80, 3), np.uint8)  # landscape as stored, asymmetric content
    stored[:, :, 0] = np.linspace(0, 255, 80, dtype=np.uint8)[None]
    stored[:, :, 1] = np.linspace(0, 255, 48, dtype=np.uint8)[:, None]
    stored[4:20, 8:30] = rng.integers(0, 255, 3, dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif)

    with Image.open(path) as im:
        viewed = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    ours = images.load_image(path, exif_orientation=True)
    assert ours.shape == viewed.shape
    # Both decode with libjpeg; only IDCT rounding may differ.
    assert np.abs(ours.astype(int) - viewed).max() <= 3
    as_stored = images.load_image(path)  # the official behaviour: pixels as stored
    assert as_stored.shape == (48, 80, 3)
    if orientation in (5, 6, 7, 8):
        assert ours.shape == (80, 48, 3)


def test_exif_switch_is_logged(tmp_path, caplog):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "p.jpg"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path, exif=exif)
    with caplog.at_level("INFO"):
        assert images.load_image(path, exif_orientation=True).shape == (16, 8, 3)
        assert images.load_image(path, exif_orientation=False).shape == (8, 16, 3)
    assert "EXIF orientation 6 applied" in caplog.text
    assert "EXIF orientation 6 ignored" in caplog.text


# ----------------------------------------------------------------------------------------------
# Crops that miss the image
# ----------------------------------------------------------------------------------------------


def test_crop_coverage():
    assert pp.crop_coverage((0, 0, 10, 10), 10, 10) == 1.0
    assert pp.crop_coverage((-5, 0, 10, 10), 10, 20) == 0.5
    assert pp.crop_coverage((30, 30, 10, 10), 20, 20) == 0.0


def test_keypoints_off_the_image_warn_then_refuse(tmp_path):
    """A json from a 4x larger photo: the official crop is kept but explained; a crop that
    misses the image entirely is refused."""
    rng = np.random.default_rng(0)
    kp = _random_person(rng, feet=True)
    json_path = _write_json(tmp_path / "a_keypoints.json", [kp])
    item = pp.InputItem(tmp_path / "a.png", "a", "openpose", json_path)
    rect = pp.rect_for_item(item, 1000, 1000)
    assert pp.check_crop(item, rect, 1000, 1000) == []  # the photo OpenPose saw
    notes = pp.check_crop(item, rect, 600, 600)  # the same json on a downscaled photo
    assert "confident keypoints lie outside the 600x600 image" in notes[0]
    with pytest.raises(
        HdjaxError, match=r"a_keypoints\.json: crop .* holds [0-4]\.\d % of the 100x100"
    ):
        pp.check_crop(item, rect, 100, 100)


def test_undetected_mid_hip_centres_on_origin_with_a_warning(tmp_path):
    kp = np.zeros((25, 3))
    kp[[0, 1, 2, 5], :] = [[60, 20, 0.9], [60, 40, 0.9], [40, 40, 0.9], [80, 40, 0.9]]
    json_path = _write_json(tmp_path / "b_keypoints.json", [kp])
    item = pp.InputItem(tmp_path / "b.png", "b", "openpose", json_path)
    rect = pp.rect_for_item(item, 120, 120)
    assert rect[0] < 0 and rect[1] < 0  # the official rule: centred on (0, 0)
    notes = pp.check_crop(item, rect, 120, 120)
    assert any("no confident mid-hip" in n and "centres the crop on (0, 0)" in n for n in notes)
    assert any("lies on the 120x120 image" in n for n in notes)

"""Contact sheet of a built dataset."""

import subprocess
import sys

import cv2
import numpy as np

from hdjax.tools import contact_sheet


def test_contact_sheet_rows_show_every_map_and_points(source, tmp_path):
    record = source[0]
    sheet = contact_sheet.make_sheet([record, source[1]], tile=64)
    assert sheet.shape == (128, 7 * 64, 3) and sheet.dtype == np.uint8
    row = contact_sheet.record_row(record)
    np.testing.assert_array_equal(row[:, :64], record["image"])
    overlay = row[:, 6 * 64 :]
    green = np.all(overlay == contact_sheet.INSIDE_RGB, axis=-1)
    red = np.all(overlay == contact_sheet.OUTSIDE_RGB, axis=-1)
    mask = record["mask"][..., 0] > 0
    assert green.sum() > 20 and red.sum() > 20
    assert mask[green].mean() > 0.9  # inside points drawn on the subject
    # Tiles a quarter of the record's size (as the default 256 px for 1024² records) still
    # show the points: they are drawn after the resize.
    small = contact_sheet.record_row(record, tile=16)[:, 6 * 16 :]
    assert small.shape == (16, 16, 3)
    assert np.all(small == contact_sheet.INSIDE_RGB, axis=-1).sum() > 10
    assert np.all(small == contact_sheet.OUTSIDE_RGB, axis=-1).sum() > 10


def test_photo_grid_writes_64_varied_training_tiles(source, tmp_path):
    tile = 16
    sheet = contact_sheet.photo_grid(source, num=64, cols=8, seed=3, tile=tile)
    assert sheet.shape == (8 * tile, 8 * tile, 3) and sheet.dtype == np.uint8
    path = str(tmp_path / "sheet.png")
    contact_sheet.write_sheet(path, sheet)
    np.testing.assert_array_equal(cv2.imread(path)[..., ::-1], sheet)
    small = str(tmp_path / "small.png")
    contact_sheet.write_sheet(small, sheet, colors=256)
    back = cv2.imread(small)[..., ::-1].astype(int)
    assert back.shape == (128, 128, 3) and len(np.unique(back.reshape(-1, 3), axis=0)) <= 256
    # Dithered: 4×4 blocks keep their mean colour far better than single pixels do
    # (measured 1.7 vs 5.1 levels).
    block = np.abs((back - sheet).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))).mean()
    assert block < 9 and block < 0.6 * np.abs(back - sheet).mean()
    tiles = sheet.reshape(8, tile, 8, tile, 3).transpose(0, 2, 1, 3, 4).reshape(64, -1)
    # Every tile differs (backgrounds and colour jitter per tile), even for 4 records.
    assert len({t.tobytes() for t in tiles}) == 64
    # Each tile is the record over a background: no tile is black (unlike the stored one).
    assert tiles.reshape(64, -1, 3).mean(axis=(1, 2)).min() > 5
    again = contact_sheet.photo_grid(source, num=64, cols=8, seed=3, tile=tile)
    np.testing.assert_array_equal(again, sheet)
    assert not np.array_equal(contact_sheet.photo_grid(source, 64, 8, 4, tile), sheet)


def test_training_image_keeps_the_subject(source):
    record = source[0]
    img = contact_sheet.training_image(record, np.random.default_rng(0))
    assert img.shape == record["image"].shape
    mask = record["mask"][..., 0] > 0
    # The subject's pixels are the stored ones up to the colour jitter (factors in 0.7-1).
    stored = record["image"][mask].astype(float).mean()
    assert 0.4 * stored < img[mask].astype(float).mean() < 1.1 * stored


def test_importing_it_beside_main_does_not_clash_flags():
    """Both define --mode; the sheet's flags exist only when it runs as a program."""
    code = "import hdjax.tools.contact_sheet, hdjax.main"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]

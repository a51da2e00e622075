"""Contact sheet of a built dataset."""

import numpy as np

from hdjax.data import contact_sheet


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

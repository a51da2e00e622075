"""The model card's figures (`hdjax.tools.model_sheet`)."""

import numpy as np
import trimesh

from hdjax.eval import metrics
from hdjax.tools import model_sheet


def test_photo_row_shows_a_flat_body_thin_from_the_side():
    """A slab 0.8 wide and 0.2 deep: wide in the front tile, thin in the 90° tile."""
    slab = trimesh.creation.box((0.8, 1.6, 0.2))
    photo = np.zeros((300, 200, 3), np.uint8)  # portrait: letterboxed into the first tile
    row = model_sheet.photo_row(photo, slab, size=64)
    assert row.shape == (64, 192, 3) and row.dtype == np.uint8
    background = np.round(np.asarray(metrics.NORMAL_BACKGROUND) * 255)
    widths = []
    for k in (1, 2):
        tile = row[:, 64 * k : 64 * (k + 1)].astype(float)
        hit = np.abs(tile - background).sum(-1) > 3
        widths.append(hit.any(0).sum())
    # 64 px span 2 units: 0.8 -> ~26 px, 0.2 -> ~6 px.
    assert 22 <= widths[0] <= 30 and 4 <= widths[1] <= 9, widths
    assert (row[:, :64] == 255).all(-1).any()  # the letterbox margin

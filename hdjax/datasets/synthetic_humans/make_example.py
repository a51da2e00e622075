"""Writes the embedded example photo `hdjax/data/assets/examples/synthetic_body.png`.

An RGBA render (alpha = silhouette) of one embedded synthetic body, 512², so that
`--mode=reconstruct` has an input on a fresh clone. Run from the repository root:

    python -m hdjax.datasets.synthetic_humans.make_example
"""

import os

import cv2
import numpy as np

from hdjax.data import records, render_config, subjects
from hdjax.data import render as render_lib
from hdjax.geometry import camera as cam

OUT = os.path.join("hdjax", "data", "assets", "examples", "synthetic_body.png")


def main() -> None:
    subject = subjects.load_embedded_body(subjects.embedded_body_names()[3])
    config = render_config.pifuhd_config(size=512)
    norm = records.normalization(subject, config)
    mesh = cam.normalize_mesh(subject.mesh, norm)
    out = render_lib.render(mesh, records.make_camera(config, 0.0), np.random.default_rng(0))
    rgba = np.concatenate([out["image"], (out["mask"] * 255).astype(np.uint8)[..., None]], -1)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    cv2.imwrite(OUT, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    print("wrote", OUT)


if __name__ == "__main__":
    main()

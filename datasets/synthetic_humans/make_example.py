"""Writes the embedded example photo `hdjax/data/assets/examples/synthetic_body.png`.

An RGBA render (alpha = silhouette) of one embedded synthetic body, 512², so that
`--mode=reconstruct` has an input on a fresh clone. Run from the repository root:

    python datasets/synthetic_humans/make_example.py
"""

import os

import cv2
import numpy as np

from hdjax.data import builder_lib
from hdjax.data import camera as cam
from hdjax.data import render as render_lib

OUT = os.path.join("hdjax", "data", "assets", "examples", "synthetic_body.png")


def main() -> None:
    subject = builder_lib.load_embedded_body(builder_lib.embedded_body_names()[3])
    config = builder_lib.pifuhd_config(size=512)
    norm = builder_lib.normalization(subject, config)
    mesh = cam.normalize_mesh(subject.mesh, norm)
    out = render_lib.render(mesh, builder_lib.make_camera(config, 0.0), np.random.default_rng(0))
    rgba = np.concatenate([out["image"], (out["mask"] * 255).astype(np.uint8)[..., None]], -1)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    cv2.imwrite(OUT, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    print("wrote", OUT)


if __name__ == "__main__":
    main()

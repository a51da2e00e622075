"""The folder runner every reconstruct mode shares: each input through a model's
``reconstruct_one``, a bad one reported in one line and skipped, nothing of the same run
overwritten, temporaries of killed runs removed first."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

from tqdm import tqdm

from hdjax.errors import HdjaxError
from hdjax.io.files import remove_stale_temporaries
from hdjax.reconstruction import preprocess


@dataclasses.dataclass
class RunSummary:
    """What a folder run did, image by image.

    Attributes:
      total: images found.
      written: names whose outputs were written.
      failed: (image file name, one-line reason) of the images skipped.
      warned: (image file name, first crop warning) of written images whose crop looked
        wrong (`preprocess.check_crop`).
    """

    total: int
    written: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    warned: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        """'18 of 20 images written, 2 failed: a.png (reason); b.png (reason)'."""
        text = f"{len(self.written)} of {self.total} images written"
        if self.failed:
            names = "; ".join(f"{n} ({why})" for n, why in self.failed)
            text += f", {len(self.failed)} failed: {names}"
        if self.warned:
            names = ", ".join(n for n, _ in self.warned)
            text += f"; {len(self.warned)} with a suspicious crop (see the warnings): {names}"
        return text


def run_items(
    items: list[preprocess.InputItem],
    out_dir: str,
    paths_for: Callable[[preprocess.InputItem, str], list[str]],
    reconstruct_one: Callable[[preprocess.InputItem, str], dict],
    describe: Callable[[dict], str],
) -> RunSummary:
    """The folder loop of every reconstruct mode: stale temporaries removed first, each item
    through ``reconstruct_one`` (its result dict may carry crop ``notes``), a bad one reported
    in one line and skipped, no output of the same run overwritten (``paths_for`` names an
    item's outputs before it runs)."""
    os.makedirs(out_dir, exist_ok=True)
    for path in remove_stale_temporaries(out_dir):
        logging.info("removed %s, left by an interrupted run", path)
    summary = RunSummary(len(items))
    written: set[str] = set()
    for item in tqdm(items, desc="images", unit="img", disable=len(items) < 2):
        try:
            paths = paths_for(item, out_dir)
            clash = [p for p in paths if p in written]
            if clash:
                raise HdjaxError(f"would overwrite {clash[0]}, written earlier in this run")
            t = reconstruct_one(item, out_dir)
            written.update(paths)
        except HdjaxError as e:
            logging.error("%s", e)
            summary.failed.append((item.image.name, e.problem))
            continue
        summary.written.append(item.name)
        if t.get("notes"):
            summary.warned.append((item.image.name, t["notes"][0]))
        logging.info("%s: %s -> %s", item.name, describe(t), out_dir)
    return summary

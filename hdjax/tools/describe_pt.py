"""Lists what a PyTorch checkpoint holds, one line per leaf, without torch.

python -m hdjax.tools.describe_pt CHECKPOINT [CHECKPOINT...]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from hdjax.errors import HdjaxError
from hdjax.io.torch_pickle import load_torch_file


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) for nested dicts/lists/tuples, in insertion order."""
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        yield prefix, tree
        return
    for k, v in items:
        yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))


def describe(path: str | os.PathLike, max_value_chars: int = 80) -> str:
    """Human-readable listing of a checkpoint: one line per leaf.

    Arrays print as `key  shape  dtype`; other leaves (Namespace fields, epochs, losses)
    print as `key = value` with the value's repr cut to `max_value_chars`.
    """
    lines = []
    n_arrays = n_values = 0
    for key, leaf in _leaves(load_torch_file(path)):
        if isinstance(leaf, np.ndarray):
            n_arrays += 1
            lines.append(f"{key}  {tuple(leaf.shape)}  {leaf.dtype}")
        else:
            n_values += 1
            text = repr(leaf)
            if len(text) > max_value_chars:
                text = text[: max_value_chars - 3] + "..."
            lines.append(f"{key} = {text}")
    lines.append(f"# {n_arrays} arrays, {n_values} other values")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints `describe` for each file; 1 on the first unreadable one, 2 without files."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m hdjax.tools.describe_pt CHECKPOINT [CHECKPOINT...]")
        return 2
    for path in args:
        try:
            print(describe(path))
        except HdjaxError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

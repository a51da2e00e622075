"""User-facing errors: one clear line naming the file and the problem."""

from __future__ import annotations

import os


class HdjaxError(Exception):
    """An error caused by user input (a file, a flag); `main` prints it as one line.

    Attributes:
      path: the offending file, if any.
      problem: what is wrong with it.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

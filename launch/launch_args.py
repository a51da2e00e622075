"""Argument handling shared by the launchers: one-line errors, `--` pass-through."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class LaunchError(Exception):
    """A bad argument: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise LaunchError(message)


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits argv at the first `--`: (launcher args, args for hdjax.main)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def parse(
    prog: str,
    argv: Sequence[str] | None,
    build_parser: Callable[[], argparse.ArgumentParser],
    validate: Callable[[argparse.Namespace], None],
) -> argparse.Namespace | None:
    """Parsed and validated args (``passthrough`` = what follows `--`), or None after printing
    ``<prog>: error: ...`` (the caller exits with status 2)."""
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(own)
        args.passthrough = passthrough
        validate(args)
    except LaunchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None
    return args

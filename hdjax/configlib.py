"""One config tree -> the frozen dataclasses modules take, built and validated in one place.

`build(LevelArch, cfg.model.coarse)` is `LevelArch(**cfg)` with lists turned into tuples (so
the result hashes, e.g. as a jit static argument) and nested dataclass fields built in turn.
A wrong field or value raises one `HdjaxError` line naming the config path.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import ml_collections

from hdjax.errors import HdjaxError

T = TypeVar("T")


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def build(cls: type[T], cfg: Mapping[str, Any], path: str = "config") -> T:
    """`cls(**cfg)`, recursively, lists as tuples.

    Args:
      cls: a dataclass; fields whose type is a dataclass are built from sub-dicts.
      cfg: a ConfigDict or dict with exactly `cls`'s fields (missing ones keep defaults).
      path: where `cfg` sits in the config tree, for error messages.
    Raises:
      HdjaxError: an unknown field, or a value `cls.__post_init__` refuses (ValueError).
    """
    if isinstance(cfg, ml_collections.ConfigDict):
        cfg = cfg.to_dict()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise HdjaxError(f"{path}.{unknown[0]}: unknown field (expected one of {sorted(names)})")
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(cfg))
    if missing:
        raise HdjaxError(f"{path}.{missing[0]}: missing")
    kw = {}
    for name, value in cfg.items():
        sub = hints.get(name)
        if dataclasses.is_dataclass(sub) and isinstance(value, Mapping):
            kw[name] = build(sub, value, f"{path}.{name}")
        else:
            kw[name] = _freeze(value)
    try:
        return cls(**kw)
    except ValueError as e:  # `__post_init__` messages start with the field name
        raise HdjaxError(f"{path}.{e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Inverse of `build`: a dataclass as plain dicts and lists (JSON-ready)."""

    def thaw(v):
        if isinstance(v, dict):
            return {k: thaw(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [thaw(x) for x in v]
        return v

    return thaw(dataclasses.asdict(obj))


def check_choices(cfg: ml_collections.ConfigDict, choices: Mapping[str, tuple]) -> None:
    """Raises one HdjaxError line for the first `cfg` entry (dotted path) not in its choices."""
    for dotted, allowed in choices.items():
        value = cfg
        for key in dotted.split("."):
            value = value[key]
        if value not in allowed:
            raise HdjaxError(f"config {dotted}={value!r}: expected one of {allowed}")

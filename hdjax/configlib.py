"""One config tree -> the frozen dataclasses modules take, built and validated in one place.

`build(LevelArch, cfg.model.coarse)` is `LevelArch(**cfg)` with lists turned into tuples (so
the result hashes, e.g. as a jit static argument) and nested dataclass fields built in turn.
A wrong field or value raises one `HdjaxError` line naming the config path.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import typing
from collections.abc import Iterator, Mapping, Sequence
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


def defaults(cls: type, **overrides: Any) -> ml_collections.ConfigDict:
    """A config section holding the dataclass ``cls``'s fields at their defaults (an optional
    field defaulting to None becomes a typed placeholder, so that ``--config.x=1.5`` still
    parses), then ``overrides``: the dataclass is the one place a default is written."""
    hints = typing.get_type_hints(cls)
    section = ml_collections.ConfigDict()
    for field in dataclasses.fields(cls):
        value = field.default
        if value is None:
            kinds = [t for t in typing.get_args(hints[field.name]) if t is not type(None)]
            value = ml_collections.config_dict.placeholder(kinds[0])
        section[field.name] = value
    for name, value in overrides.items():
        if name not in section:
            raise HdjaxError(f"{cls.__name__} has no field {name!r}")
        section[name] = value
    return section


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


_SECTIONS = (Mapping, ml_collections.ConfigDict)  # a ConfigDict is no Mapping

# Configs shipped inside the package: `--config=NAME[:variant]` works from any directory.
PACKAGED_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def packaged_config_names() -> list[str]:
    """Names `--config` accepts without a path (files of `hdjax/configs/`)."""
    return sorted(
        f[:-3] for f in os.listdir(PACKAGED_CONFIGS) if f.endswith(".py") and not f.startswith("_")
    )


def resolve_config(value: str) -> str:
    """`--config` value -> an existing config file (with its `:variant`).

    An existing path is kept. Otherwise a bare name (`pifuhd`) or a path whose file does not
    exist here (`configs/pifuhd.py` run outside the repository) means the packaged config of
    that name.

    Raises:
      HdjaxError: neither the path nor a packaged config of that name exists.
    """
    path, sep, variant = value.partition(":")
    if os.path.isfile(path):
        return value
    stem = os.path.basename(path)
    stem = stem[:-3] if stem.endswith(".py") else stem
    if stem in packaged_config_names():
        return os.path.join(PACKAGED_CONFIGS, stem + ".py") + sep + variant
    raise HdjaxError(
        f"--config={value}: no such config file, and no packaged config {stem!r} "
        f"(known: {', '.join(packaged_config_names())})"
    )


def load_config(value: str) -> ml_collections.ConfigDict:
    """Loads `--config` the way `ml_collections.config_flags` does: `get_config(variant)`.

    Raises:
      HdjaxError: the file is missing or its `get_config` refuses the variant (one line).
    """
    path, _, variant = resolve_config(value).partition(":")
    spec = importlib.util.spec_from_file_location("_hdjax_user_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_config(*([variant] if variant else []))
    except (ValueError, TypeError) as e:
        raise HdjaxError(f"--config={value}: {str(e).splitlines()[0]}") from None


def flat_fields(cfg: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """`(dotted.path, value)` of every leaf of a config tree, in tree order."""
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, _SECTIONS):
            yield from flat_fields(value, path + ".")
        else:
            yield path, value


def unknown_override(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> str | None:
    """A one-line message for the first `--config.a.b=v` whose field `cfg` lacks, else None.

    The message names the closest existing field when one is close enough.
    """
    for arg in overrides:
        dotted = arg.split("=", 1)[0].removeprefix("--config.")
        node: Any = cfg
        walked = []
        for key in dotted.split("."):
            if not isinstance(node, _SECTIONS) or key not in node:
                where = ".".join(walked)
                siblings = list(node) if isinstance(node, _SECTIONS) else []
                close = difflib.get_close_matches(key, siblings, n=1)
                hint = f" (did you mean {'.'.join([*walked, close[0]])}?)" if close else ""
                if not siblings:
                    hint = f" ({where} is a value, not a section)"
                return f"--config.{dotted}: unknown config field{hint}"
            walked.append(key)
            node = node[key]
    return None

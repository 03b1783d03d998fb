"""Typed configs from YAML files, presets and command-line overrides.

Stages take frozen dataclasses; this module turns nested dicts into them and refuses unknown keys, so a typo in a
config file is an error at start-up rather than a silently ignored setting hours into a run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclass fields."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        paths = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown setting(s) {paths}; {where or cls.__name__} takes {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kind = _dataclass_in(hints[name])
        if kind is not None and isinstance(value, Mapping):
            value = from_dict(kind, value, f"{where}.{name}" if where else name)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_in(hint) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """Deep merge; `override` wins. None values in `override` mean 'not given' and leave `base` alone."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            nested = merge(out.get(key) or {}, value)
            if nested:
                out[key] = nested
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping at top level, found {type(data).__name__}")
    return data


def load_named_yaml(name_or_path: str | Path, folder: Path, what: str, error: type[Exception], known: list[str],
                    file_name: str | None = None) -> tuple[Path, dict]:
    """A packaged YAML file by name (`folder/<file_name or name>.yaml`) or any YAML file by path, as a mapping;
    `known`: the packaged names, for the error message.

    Prompts and action vocabularies are data that users version and override; both resolve names the same way and
    fail with `error` naming the file and the problem.
    """
    packaged = folder / f"{file_name or name_or_path}.yaml"
    if isinstance(name_or_path, str) and packaged.is_file():
        path = packaged
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise error(f"{what} {str(name_or_path)!r} is neither a packaged name {known} nor a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid UTF-8 YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at top level, found {type(data).__name__}")
    return path, data


def load_preset(folder: Path, name_or_path: str | Path, what: str) -> dict:
    """A preset's settings: a packaged `folder/<name>.yaml` or any YAML file. Every kind of preset (a build's, a
    flow's, a stage's) is found this one way, and an unknown name lists the packaged ones."""
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    _, data = load_named_yaml(name_or_path, folder, what, ConfigError, known)
    return data

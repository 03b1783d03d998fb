"""The build config: named sets, each made by a recipe, plus what the whole build shares.

    sets:
      <name>:                  # [a-z0-9_]+: the folder under OUT, the Energon subflavor `set`, the card's section
        recipe: sekai          # pipelines.recipes: sekai, t2v_synthetic, i2v_event, shards, videos
        inputs: {...}          # the recipe's inputs
        <section>: {preset: P, ...}   # each of the recipe's stage sections: the stage's preset + overrides
        tasks: [t2v, i2v]      # default: the recipe's
        weight: 0.5            # the set's share of training samples
    generate: {clips, frames, openvid_captions}   # the demo's generated inputs (sets with `inputs.generate`)
    build_time: ...            # ISO 8601 or epoch seconds; default SOURCE_DATE_EPOCH, else 1970-01-01

A preset (`pipelines/build_presets/<name>.yaml`) is such a config; a user's file goes on top of it: a set named
again is deep-merged, a new name adds a set, `<name>: null` removes one. Everything is typed and checked here,
before any work, and an unknown key fails naming its path (`sets.drone.inputs.csvv`). A relative path under
`inputs:` is relative to the config file's folder (the build's `base`), so a config means the same files from
any working directory, and samples record such inputs relative to it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.recipes import BuildSet, recipe
from yume_core.config import ConfigError, from_dict, load_preset, merge, to_dict
from yume_core.samples import check_set_name, check_tasks

BUILD_PRESETS = Path(__file__).parent / "build_presets"
SET_KEYS = ("recipe", "inputs", "tasks", "weight")


@dataclass(frozen=True)
class GenerateConfig:
    clips: int = 8  # generated Sekai clips
    frames: int = 150  # frames per generated clip
    openvid_captions: int = 24  # generated OpenVid rows


@dataclass(frozen=True)
class BuildConfig:
    sets: tuple[BuildSet, ...]
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    build_time: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  # preset and settings merged (the record's)
    preset: str | None = None
    given: Mapping[str, Any] = field(default_factory=dict)  # the settings on top of the preset (a flow's parameter)
    base: str = ""  # the config file's folder, else the working directory: relative inputs are read from it

    def set(self, name: str) -> BuildSet:
        return next(s for s in self.sets if s.name == name)


def build_config(preset: str | None, settings: Mapping[str, Any] | None = None,
                 base: str | None = None) -> BuildConfig:
    """A build preset (`demo`, `yume15` or a YAML path), then `settings` (a config file + flags) on top; `base`:
    the config file's folder (default: the working directory)."""
    start = load_preset(BUILD_PRESETS, preset, "build preset") if preset else {}
    data = merge_settings(start, dict(settings or {}))
    unknown = sorted(set(data) - {"sets", "generate", "build_time"})
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in the build config; known: build_time, "
                          "generate, sets (the stage sections of the earlier layout now sit in each set: see the "
                          "README's \"sets\" mapping)")
    base = os.path.abspath(base or os.getcwd())
    sets = tuple(typed_set(name, spec, base) for name, spec in (data.get("sets") or {}).items())
    return BuildConfig(sets, from_dict(GenerateConfig, data.get("generate"), "generate"), data.get("build_time"),
                       data, preset, dict(settings or {}), base)


def merge_settings(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """`override` on `base`, deep; under `sets`, a set given as null is removed."""
    sets = dict(base.get("sets") or {})
    for name, spec in (override.get("sets") or {}).items():
        if spec is None:
            sets.pop(name, None)
        else:
            sets[name] = merge(sets.get(name) or {}, spec)
    out = merge({k: v for k, v in base.items() if k != "sets"}, {k: v for k, v in override.items() if k != "sets"})
    if sets:
        out["sets"] = sets
    return out


def typed_set(name: str, spec: Mapping[str, Any] | None, base: str | None = None) -> BuildSet:
    """One set of the config, typed and checked; its relative input paths joined to `base`."""
    where = f"sets.{name}"
    try:
        check_set_name(name, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(spec, Mapping) or "recipe" not in spec:
        raise ConfigError(f"{where}: a set names its recipe (recipe: sekai | t2v_synthetic | i2v_event | shards | "
                          "videos)")
    r = recipe(spec["recipe"], f"{where}.recipe")
    sections = r.sections
    unknown = sorted(set(spec) - set(SET_KEYS) - set(sections))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(f'{where}.{k}' for k in unknown)}; a {r.name} set takes "
                          f"{', '.join([*SET_KEYS, *sections])}")
    try:
        tasks = check_tasks(spec.get("tasks") or r.tasks, f"{where}.tasks")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    weight = spec.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"{where}.weight: {weight!r}; a weight is a number >= 0 (the set's share of samples)")
    inputs = from_dict(r.inputs, spec.get("inputs"), f"{where}.inputs")
    return BuildSet(name, r, based(inputs, base) if base else inputs,
                    {key: section.build(spec.get(key), f"{where}.{key}") for key, section in sections.items()},
                    tasks, float(weight))


def based(inputs, base: str):
    """`inputs` with each relative local path joined to `base` (URLs and absolute paths as they are)."""
    moved = {f.name: os.path.normpath(os.path.join(base, v)) for f in dataclasses.fields(inputs)
             if isinstance(v := getattr(inputs, f.name), str) and v and "://" not in v and not os.path.isabs(v)}
    return dataclasses.replace(inputs, **moved)


def set_settings(s: BuildSet) -> dict:
    """A typed set as plain data (the build record keeps it)."""
    return {"recipe": s.recipe.name, "inputs": to_dict(s.inputs), "tasks": list(s.tasks), "weight": s.weight,
            **{k: to_dict(v) for k, v in s.sections.items()}}


def cli_overrides(data: Mapping[str, Any], preset: str | None, runner: Mapping[str, Any] | None = None,
                  screening: Mapping[str, Any] | None = None, event_tasks: list[str] | None = None,
                  text_review: Mapping[str, Any] | None = None) -> dict:
    """The build command's flags as settings for every set they concern: the runner options reach every stage
    that runs tasks, screening and text review options and event tasks every set made by a recipe that screens
    (`i2v_event`)."""
    base = load_preset(BUILD_PRESETS, preset, "build preset") if preset else {}
    merged = merge_settings(base, data)
    sets: dict = {}
    for name, spec in (merged.get("sets") or {}).items():
        if not isinstance(spec, Mapping) or "recipe" not in spec:
            continue  # typed_set says what is wrong
        r = recipe(spec["recipe"], f"sets.{name}.recipe")
        mine: dict = {}
        if runner:
            mine.update({k: {"runner": dict(runner)} for k, sec in r.sections.items() if sec.runs_tasks})
        if r.waits_for_people:
            if screening:
                mine["screening"] = dict(screening)
            if text_review:
                mine["text_review"] = dict(text_review)
            if event_tasks:
                mine["tasks"] = list(event_tasks)
        if mine:
            sets[name] = mine
    return {"sets": sets} if sets else {}

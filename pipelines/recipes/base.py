"""What a recipe is: how one set of the mixture is made, declared in one module.

A recipe names its sample kind, its inputs (a dataclass), its stage sections (each a stage's own typed config, given
in the build config as the stage's preset plus overrides), its default tasks, the card's source and licence text,
and the steps that make the set (`steps`, over the build's `Layout`). `pipelines.recipes` registers the recipes; a
set in the build config names one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from yume_core import remote
from yume_core.config import ConfigError, from_dict, merge
from yume_core.errors import InputError


@dataclass(frozen=True)
class Section:
    """A stage's settings in a set: `preset:` names the stage's preset (as the stage's own command takes it), the
    other keys override it, and the result is the stage's typed config `cls`, built before any work starts."""

    cls: type
    preset: Callable[[str], dict] | None = None  # a preset's settings by name or path (None: the stage has none)
    default_preset: str | None = None

    def build(self, data: Mapping[str, Any] | None, where: str):
        data = dict(data or {})
        name = data.pop("preset", None) or self.default_preset
        if name is not None and self.preset is None:
            raise ConfigError(f"{where}.preset: this stage has no presets; give its settings")
        base = self.preset(name) if name is not None else {}
        return from_dict(self.cls, merge(base, data), where)

    @property
    def runs_tasks(self) -> bool:
        """Its stage runs tasks on a runner (threads, processes, Ray): the build's runner options reach it."""
        return any(f.name == "runner" for f in dataclasses.fields(self.cls))


@dataclass(frozen=True)
class BuildSet:
    """One set of a build, its settings checked and typed."""

    name: str
    recipe: Recipe
    inputs: Any  # the recipe's inputs dataclass
    sections: Mapping[str, Any]  # section name -> the stage's typed config
    tasks: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class BuildContext:
    """What the steps of every set share: where things go, and the demo's generated inputs (if any)."""

    layout: Any  # pipelines.build_layout.Layout
    generated: Mapping[str, str] = field(default_factory=dict)  # sekai_csv, videos, trajectories, openvid_csv
    base: str | None = None  # the config file's folder (relative inputs are read from it), else the working directory

    @property
    def roots(self) -> tuple[str, ...]:
        """What samples record their source paths relative to (`shards.SampleSpec.roots`): the build folder, then
        the config's folder."""
        return tuple(str(p) for p in (self.layout.out, self.base) if p is not None)


class Recipe:
    """Subclass per recipe; class attributes declare it, `steps` makes the set."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the samples' kind (`yume_core.samples.KINDS`)
    inputs: ClassVar[type]
    sections: ClassVar[Mapping[str, Section]] = {}
    tasks: ClassVar[tuple[str, ...]]
    card: ClassVar[Mapping[str, str]]  # source, url, licence, made: the card's words on where the data comes from
    waits_for_people: ClassVar[bool] = False  # a step may pause the build for a person (screening)

    def check_inputs(self, s: BuildSet, ctx: BuildContext) -> None:
        """Fail before any work on inputs that cannot be read (the default: every path given exists)."""
        for f in dataclasses.fields(s.inputs):
            value = getattr(s.inputs, f.name)
            if isinstance(value, str) and f.name != "generate":
                if not (remote.exists(value) if remote.is_url(value) else Path(value).exists()):
                    raise InputError(value, f"sets.{s.name}.inputs.{f.name} does not exist",
                                     "fix the path in the build config")

    def resolved_inputs(self, s: BuildSet, ctx: BuildContext) -> Any:
        """`s.inputs` with the demo's generated inputs filled in where the set asks for them."""
        return s.inputs

    def steps(self, s: BuildSet, ctx: BuildContext) -> list:
        raise NotImplementedError

    def record(self, s: BuildSet, ctx: BuildContext) -> dict:
        """What the build record and the card keep of the set beside its path, tasks and weight."""
        return {}


def shards_step(s: BuildSet, ctx: BuildContext, source: str, manifest: Path, provenance: dict | None = None):
    """The step that writes a set's shards (and its Energon metadata) from the manifest the step `source` wrote:
    the rows that were ok there are what reach it."""
    import shards
    from pipelines.build_graph import Step
    from yume_core.config import to_dict
    from yume_core.manifest import read_manifest

    set_dir = ctx.layout.set_dir(s.name)

    def write() -> dict:
        shards.write_set_shards(read_manifest(manifest), set_dir, s.name, s.sections["shards"],
                                provenance={"flow": "build", "set": s.name, **(provenance or {})}, tasks=s.tasks,
                                base_dir=manifest.parent, kind=s.recipe.kind, roots=ctx.roots)
        return {}

    return Step(f"{s.name}/shards", write, s.name, reads=(source,),
                settings=[to_dict(s.sections["shards"]), list(s.tasks), provenance], outputs={"set": set_dir},
                manifest=set_dir / shards.INDEX_FILE, counts_from=source)


def require(inputs: Any, set_name: str, *names: str) -> None:
    missing = [n for n in names if not getattr(inputs, n)]
    if missing:
        raise ConfigError(f"sets.{set_name}.inputs: missing {', '.join(missing)} (or generate: true for the "
                          "demo's generated inputs)")

"""The training mixture: one Megatron-Energon metadataset file of weighted sets, and the sampler that follows it.

`OUT/mixture.yaml` is what Megatron/NeMo users hand to Energon as it is, and what the bundled trainer reads:

    __module__: megatron.energon
    __class__: MetadatasetV2
    splits:
      train:
        blend:
          - weight: 0.4
            path: ./real_world            # a prepared Energon dataset (shards + .nv-meta/), relative to this file
            subflavors: {set: real_world, tasks: t2v+i2v}

`tasks` is `+`-joined (a subflavor is a plain value) and says which tasks the set trains.

Sampling (`MixtureSampler`): step s trains task `schedule[s % len(schedule)]` (Yume-1.5 alternates T2V and I2V);
each of its samples comes from a set that trains that task, drawn with probability proportional to the sets'
weights, from a generator seeded by (seed, step, slot). So the draw of any step is a pure function of the seed
and the step number: a resumed run draws exactly what an uninterrupted one would, and a simulation of N steps
(`simulate`) is the realised share per set and task of a real run. A set's realised share differs from its
requested weight when it does not train every task (the synthetic set trains T2V only): `simulate` reports both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from yume_core.samples import TASKS, check_tasks

MIXTURE_FILE = "mixture.yaml"


@dataclass(frozen=True)
class MixtureSource:
    name: str  # the set: real_world | synthetic | event (any name for a set of one's own)
    path: Path | str  # the set folder (absolute once read), or its URL (`s3://bucket/build/real_world`)
    weight: float
    tasks: tuple[str, ...]


def write_mixture(path: str | Path, sources: list[MixtureSource]) -> Path:
    """Write the metadataset; source paths are written relative to the file's folder."""
    path = Path(path)
    blend = []
    for s in sources:
        rel = Path(s.path).resolve()
        try:
            rel_text = "./" + rel.relative_to(path.parent.resolve()).as_posix()
        except ValueError:
            rel_text = str(rel)
        blend.append({"weight": float(s.weight), "path": rel_text,
                      "subflavors": {"set": s.name, "tasks": "+".join(check_tasks(s.tasks, s.name))}})
    doc = {"__module__": "megatron.energon", "__class__": "MetadatasetV2", "splits": {"train": {"blend": blend}}}
    from yume_core.storage import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def read_mixture(path: str | Path, split: str = "train") -> list[MixtureSource]:
    """The sources of one split of a metadataset written by `write_mixture` (or by hand in the same form). The file
    may be a URL: its relative set paths are then URLs beside it."""
    from yume_core import remote

    url = str(path) if remote.is_url(str(path)) else None
    path = Path(path) if url is None else url
    try:
        text = remote.read_bytes(url).decode("utf-8-sig") if url else path.read_text(encoding="utf-8-sig")
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the mixture ({e})") from None
    try:
        blend = doc["splits"][split]["blend"]
    except (TypeError, KeyError):
        raise ValueError(f"{path}: no splits.{split}.blend list; a mixture is an Energon MetadatasetV2 "
                         "with one blend entry (weight, path, subflavors) per set") from None
    sources = []
    for i, entry in enumerate(blend):
        where = f"{path}: splits.{split}.blend[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            raise ValueError(f"{where}: needs a path")
        sub = entry.get("subflavors") or {}
        p = Path(entry["path"])
        weight = float(entry.get("weight", 1.0))
        if not weight >= 0:
            raise ValueError(f"{where}: weight must be >= 0, got {entry.get('weight')!r}")
        tasks = check_tasks(str(sub.get("tasks", "+".join(TASKS))).split("+"), where)
        if url is not None:
            where_set = entry["path"] if remote.is_url(entry["path"]) else remote.join(url.rsplit("/", 1)[0], p.as_posix())
        else:
            where_set = p if p.is_absolute() else (path.parent / p).resolve()
        sources.append(MixtureSource(str(sub.get("set", p.name)), where_set, weight, tasks))
    if not sources or not sum(s.weight for s in sources) > 0:
        raise ValueError(f"{path}: the blend has no set with a positive weight")
    return sources


class MixtureSampler:
    """Which task each step trains and which set each of its samples comes from (see the module docstring)."""

    def __init__(self, sources: list[MixtureSource], schedule: tuple[str, ...] = ("t2v", "i2v"), seed: int = 0):
        self.sources = list(sources)
        bad = [t for t in schedule if t not in TASKS]
        if bad or not schedule:
            raise ValueError(f"schedule {list(schedule)!r}: a non-empty sequence of {list(TASKS)}")
        self.schedule = tuple(schedule)
        self.seed = seed
        self._eligible = {}
        for task in set(self.schedule):
            idx = [i for i, s in enumerate(self.sources) if task in s.tasks and s.weight > 0]
            if not idx:
                raise ValueError(f"the schedule trains {task!r} but no set with a positive weight trains it")
            w = np.array([self.sources[i].weight for i in idx], dtype=np.float64)
            self._eligible[task] = (np.array(idx), np.cumsum(w / w.sum()))

    def task(self, step: int) -> str:
        return self.schedule[step % len(self.schedule)]

    def draw(self, step: int, n: int = 1) -> list[int]:
        """Source indices of the step's `n` samples."""
        idx, cdf = self._eligible[self.task(step)]
        u = np.random.default_rng([self.seed, step]).random(n)
        return idx[np.minimum(np.searchsorted(cdf, u, side="right"), len(idx) - 1)].tolist()

    def requested(self) -> dict[str, float]:
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}

    def simulate(self, steps: int, batch: int = 1, start: int = 0) -> dict:
        """Realised against requested shares over `steps` steps of `batch` samples: per set, per task, per both."""
        by_set, by_task, by_both = Counter(), Counter(), Counter()
        for step in range(start, start + steps):
            task = self.task(step)
            for i in self.draw(step, batch):
                name = self.sources[i].name
                by_set[name] += 1
                by_task[task] += 1
                by_both[f"{name}/{task}"] += 1
        total = steps * batch
        share = lambda c: {k: c[k] / total for k in sorted(c)}  # noqa: E731
        return {"samples": total, "requested": self.requested(), "realized": share(by_set),
                "tasks": share(by_task), "sets_by_task": share(by_both)}

"""What each training step trains: its task and, for each of its windows, the set it comes from.

`MixtureWindows` follows the mixture file (`OUT/mixture.yaml`, an Energon metadataset read by
`yume_core.mixture.read_mixture`) or a single shard folder. `MixtureSampler` decides (a pure function of the seed
and the step number): step s trains task `schedule[s % len(schedule)]` (Yume-1.5 alternates T2V and I2V), and
each of its windows comes from a set that trains that task, drawn by that task's per-task weights, solved so that
every set gets its weight's share of all windows (`yume_core.mixture.task_weights`). The windows themselves come
from one `WindowLoader` per (set, task): a set's T2V stream holds the windows of its samples that train T2V, its
I2V stream those that train I2V. One stream per set would not do: samples of one set may train different tasks
(a real-world clip without an event caption trains T2V only), so a single stream would have to drop or park the
windows the step's task cannot use. Per (set, task), every stream position is exact and so is the resume: the
checkpoint holds the sampler's seed and schedule and every stream's position, and a resumed run draws the same sets
and windows as an uninterrupted one.

What a set can train is read from its `index.parquet` (the `tasks` of its ok samples) when it has one: a task the
mixture lists for a set but none of its samples trains is dropped for that set, and a task of the schedule that no
set can train is dropped from the schedule, each with a warning. The shares are then solved for what the sets can
train: a real-world set without event captions trains T2V only, and with the synthetic set it must fit into the
T2V steps, or the run stops with one line saying how large their shares can be. `MixtureWindows.simulate` reports
requested against realised shares of exactly that sampler.

`DataConfig.workers` applies to each stream (5 streams of 2 workers are 10 reader processes); with none, the
streams decode in the training process.

`StreamWindows` serves a single iterable of windows (e.g. windows held in memory) the same way: the schedule picks
each step's task; windows whose `tasks` leave it out are passed over.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from training_stub.data import DataConfig, WindowLoader
from yume_core import remote
from yume_core.mixture import InfeasibleShares, MixtureSampler, MixtureSource, read_mixture
from yume_core.samples import TASKS

STATE_FORMAT = "mixture/1"
INDEX_FILE = "index.parquet"  # a set folder's index (shards.writer writes it): one row per sample, with its tasks


@dataclass
class Draw:
    """One step's data: its task, its windows and the set each window came from."""

    step: int  # 0-based: the number of steps trained before this one
    task: str
    windows: list[dict]
    sets: list[str]
    draw_s: float = 0.0  # seconds spent deciding (sampler, routing to the streams)
    load_s: float = 0.0  # seconds spent waiting on the streams for windows


def is_mixture_file(path) -> bool:
    """A path that names a mixture file (by its suffix) rather than shards."""
    return isinstance(path, (str, Path)) and str(path).endswith((".yaml", ".yml"))


def trainable_tasks(folder: str | Path) -> dict[str, int] | None:
    """Samples per task among the ok samples of a set folder's index (a folder or a URL); None without an index."""
    index = remote.join(str(folder), INDEX_FILE)
    if not remote.exists(index):
        return None
    names = remote.read_parquet_schema(index).names
    if "tasks" not in names:  # an index written before sample schema v1: real-world clips
        return None
    table = remote.read_parquet(index, columns=[c for c in ("status", "tasks") if c in names]).to_pylist()
    counts = dict.fromkeys(TASKS, 0)
    for row in table:
        if row.get("status", "ok") == "ok":
            for task in row.get("tasks") or []:
                if task in counts:
                    counts[task] += 1
    return counts


def folder_set_name(folder: str | Path) -> str:
    """The set a shard folder holds, from its index (`set` column), else the folder's name."""
    index = remote.join(str(folder), INDEX_FILE)
    if remote.exists(index):
        if "set" in remote.read_parquet_schema(index).names:
            names = {s for s in remote.read_parquet(index, columns=["set"])["set"].to_pylist() if s}
            if len(names) == 1:
                return names.pop()
    return str(folder).rstrip("/").rsplit("/", 1)[-1] if remote.is_dir(str(folder)) else "shards"


def shard_sources(shards: str | Path | list[str]) -> list[MixtureSource]:
    """A plain shard folder (or pattern, or URL list) as a one-set mixture of weight 1 training every task."""
    if isinstance(shards, (list, tuple)):
        return [MixtureSource("shards", remote.as_path(shards[0]), 1.0, TASKS)]
    return [MixtureSource(folder_set_name(shards), remote.as_path(shards), 1.0, TASKS)]



def stream_seed(seed: int, name: str, task: str) -> int:
    """Each (set, task) stream reads its shards in its own order: a set's T2V and I2V streams are not in step."""
    return (seed + zlib.crc32(f"{name}/{task}".encode())) % 2**31


class MixtureWindows:
    """Windows per step from the sets of a mixture (see the module docstring).

    `sources`: the mixture's sets (`read_mixture`); `shards`: what each source's loader reads (default: its folder;
    a plain `--shards` pattern or URL list goes here).
    """

    def __init__(self, sources: Sequence[MixtureSource], data: DataConfig, schedule: Sequence[str] = ("t2v", "i2v"),
                 seed: int = 0, shards: Sequence | None = None, log: Callable[[str], None] = print,
                 origin: str | None = None):
        self.origin = origin
        self.declared = list(sources)
        self.data = data
        self.notes: list[str] = []
        effective = []
        for s in sources:
            counts = trainable_tasks(s.path) if remote.is_dir(str(s.path)) else None
            tasks = s.tasks if counts is None else tuple(t for t in s.tasks if counts[t] > 0)
            dropped = [t for t in s.tasks if t not in tasks]
            if dropped:
                self._note(f"set {s.name} ({s.path}) lists {'+'.join(s.tasks)} but none of its samples trains "
                           f"{', '.join(dropped)}: it trains {'+'.join(tasks) or 'nothing'}", log)
            effective.append(dataclasses.replace(s, tasks=tasks))
        able = {t for s in effective if s.weight > 0 for t in s.tasks}
        kept = tuple(t for t in schedule if t in able)
        if not kept:
            raise ValueError(f"no set of {origin or 'the data'} can train any task of the schedule {list(schedule)}: "
                             + "; ".join(self.notes or ["every set has weight 0"]))
        if len(kept) < len(schedule):
            self._note(f"the schedule {'/'.join(schedule)} becomes {'/'.join(kept)}: no set trains "
                       f"{', '.join(sorted(set(schedule) - set(kept)))}", log)
        self.sources = effective
        try:
            self.sampler = MixtureSampler(effective, kept, seed)
        except InfeasibleShares as e:
            raise InfeasibleShares(f"{e}" + (f" (of what the samples train: {'; '.join(self.notes)})"
                                               if self.notes else "")) from None
        names = [s.name for s in effective]
        self.streams: dict[tuple[int, str], _Stream] = {}
        for i, s in enumerate(effective):
            label = s.name if names.count(s.name) == 1 else f"{s.name}#{i}"
            for task in s.tasks:
                if task in kept and self.sampler.weights[task][i] > 0:  # drawn on that task's steps
                    target = shards[i] if shards is not None else s.path
                    config = dataclasses.replace(data, seed=stream_seed(data.seed, label, task))
                    self.streams[(i, task)] = _Stream(f"{label}/{task}", WindowLoader(target, config, task=task))

    def _note(self, text: str, log) -> None:
        self.notes.append(text)
        log(f"warning: {text}")

    @classmethod
    def open(cls, path: str | Path | list[str], data: DataConfig, schedule: Sequence[str] = ("t2v", "i2v"),
             seed: int = 0, log: Callable[[str], None] = print) -> MixtureWindows:
        """A mixture file (`*.yaml`) or shards (a folder, a brace pattern, URLs) as a one-set mixture."""
        if not isinstance(path, (list, tuple)) and is_mixture_file(path):
            return cls(read_mixture(path), data, schedule, seed, log=log, origin=str(path))
        sources = shard_sources(path)
        return cls(sources, data, schedule, seed, shards=[path], log=log, origin=str(path))

    @property
    def schedule(self) -> tuple[str, ...]:
        return self.sampler.schedule

    def step(self, step: int, n: int) -> Draw:
        """The task and `n` windows of step `step` (0-based)."""
        t0 = time.perf_counter()
        task = self.sampler.task(step)
        picks = self.sampler.draw(step, n)
        load = 0.0
        windows = []
        for i in picks:
            stream = self.streams[(i, task)]
            t1 = time.perf_counter()
            windows.append(stream.next())
            load += time.perf_counter() - t1
        sets = [self.sources[i].name for i in picks]
        return Draw(step, task, windows, sets, time.perf_counter() - t0 - load, load)

    def requested(self) -> dict[str, float]:
        return self.sampler.requested()

    def expected(self) -> dict[str, float]:
        """The share of windows each set gets in the long run under the sampler's per-task weights: the requested
        share (up to rounding), since the weights are solved for it."""
        return self.sampler.expected()

    def simulate(self, steps: int, batch: int, start: int = 0) -> dict:
        return self.sampler.simulate(steps, batch, start)

    def describe(self) -> list[dict]:
        """The sets as trained: name, path, weight, tasks (after dropping what no sample trains)."""
        return [{"set": s.name, "path": str(s.path), "weight": s.weight, "tasks": list(s.tasks)} for s in self.sources]

    def stats(self) -> dict[str, dict]:
        return {stream.key: dict(stream.loader.stats) for stream in self.streams.values()}

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "seed": self.sampler.seed, "schedule": list(self.schedule),
                "sources": self.describe(),
                "streams": {s.key: s.loader.state_dict() for s in self.streams.values()}}

    def load_state_dict(self, state: dict, log: Callable[[str], None] = print) -> None:
        """Continue every stream where `state` left it. The sampler is a function of (seed, step), so the draws of
        the next steps are those of an uninterrupted run; a stream `state` does not know starts at its beginning."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError("the checkpoint's data position is not a mixture's (it was saved by a run from before "
                             "mixtures, or on windows held in memory); train into a new output folder or without "
                             "resuming")
        if state["seed"] != self.sampler.seed or tuple(state["schedule"]) != self.schedule:
            raise ValueError(f"the checkpoint drew with seed {state['seed']} and schedule {state['schedule']}; "
                             f"this run has seed {self.sampler.seed} and schedule {list(self.schedule)}")
        if state.get("sources") != self.describe():
            log("warning: the mixture changed since the checkpoint; streams of unchanged (set, task) pairs continue "
                "where they were, new ones start at their beginning")
        for stream in self.streams.values():
            if stream.key in state["streams"]:
                stream.loader.load_state_dict(state["streams"][stream.key])


class _Stream:
    def __init__(self, key: str, loader: WindowLoader):
        self.key, self.loader = key, loader
        self._it: Iterator[dict] | None = None

    def next(self) -> dict:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            raise RuntimeError(
                f"stream {self.key} has no window to give: none of its samples trains the task in a clip long "
                f"enough for one window (stats: {dict(self.loader.stats)})"
            ) from None


class StreamWindows:
    """A single iterable of windows (with `state_dict`/`load_state_dict` for resuming) served per step."""

    def __init__(self, windows: Iterable[dict], schedule: Sequence[str] = ("t2v", "i2v"), patience: int = 10_000):
        self.windows, self.schedule, self.patience = windows, tuple(schedule), patience
        self._it: Iterator[dict] | None = None

    def step(self, step: int, n: int) -> Draw:
        t0 = time.perf_counter()
        task = self.schedule[step % len(self.schedule)]
        if self._it is None:
            self._it = iter(self.windows)
        out, passed = [], 0
        for window in self._it:
            if "tasks" in window and task not in window["tasks"]:
                passed += 1
                if passed > self.patience:
                    raise RuntimeError(f"{self.patience} windows in a row do not train {task}")
                continue
            out.append(window)
            if len(out) == n:
                break
        return Draw(step, task, out, [w.get("set", "windows") for w in out], 0.0, time.perf_counter() - t0)

    def state_dict(self) -> dict:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict, log: Callable[[str], None] = print) -> None:
        self.windows.load_state_dict(state)

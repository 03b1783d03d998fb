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

A weight is the set's share of the training samples (weights are normalised to sum to 1). Sampling
(`MixtureSampler`): step s trains task `schedule[s % len(schedule)]` (Yume-1.5 alternates T2V and I2V), and each of
its samples comes from a set that trains that task, drawn with that task's **per-task weights** (`task_weights`),
from a generator seeded by (seed, step). The draw of any step is a pure function of the seed and the step number: a
resumed run draws exactly what an uninterrupted one would, and a simulation of N steps (`simulate`) is the realised
share per set and task of a real run.

Drawing every task by the plain weights would not give the shares: a set that trains only T2V would be drawn on
T2V steps only (the demo's synthetic set, weight 0.25, would get 0.125 of the samples). The per-task weights w[s, t]
are solved instead: for each task t of the schedule (a fraction f(t) of the steps) they sum to 1 over the sets that
train t, and every set's share sum_t f(t) w[s, t] is its requested share p(s). That is a transport problem (the
sets' shares shipped to the tasks' fractions of the steps along "set s trains task t"). It has a solution exactly
when no group of sets asks for more than the steps of the tasks they can train: for every subset U of the
schedule's tasks, the sets that train only tasks of U ask for at most f(U) (Hall's condition, the min cut of the
flow; with few tasks every U is checked). When it fails, `InfeasibleShares` names the group, its tasks and its
largest possible share in one line.

Of the solutions, the one taken is the most even (maximum entropy), which is also the closest, in KL divergence, to
drawing every set in proportion to its share on every task: each set's weight is scaled by one factor, the same on
every task it trains, and each task draws its sets in proportion to the scaled weights. So when every set trains
every task the per-task weights are the shares themselves, and in any case two sets are drawn in the same ratio on
every task that draws both (the demo: synthetic takes half the T2V samples, real_world and event keep 2:1 on both
tasks). The solution is unique, so the same mixture and schedule always give the same per-task weights. It is
computed exactly (to rounding): the problem is first split at every group whose shares use all the steps of its
tasks (those tasks then draw only that group, so their other weights are exact zeros), then each part is solved by
Newton's method on one number per task.

Megatron-Energon draws a blend's samples by its weights whatever their task, so in `mixture.yaml` the weights are
the shares: a loop that trains each sample on a task its subflavor `tasks` allows gets every set's share as it is.
A loop that fixes one task per step (as Yume-1.5 and the bundled trainer do) draws with the per-task weights, which
`yume-data mix info` prints for a given schedule.
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


SHARE_TOLERANCE = 1e-9  # shares within this of a bound are on it (weights are user numbers, not exact fractions)
_NEWTON_STEPS = 100  # at most; a part with a solution that draws every pair takes a handful


class InfeasibleShares(ValueError):
    """Requested shares the sets' tasks and the schedule cannot give; the message is one line with the bound."""


def default_schedule(sources: list[MixtureSource]) -> tuple[str, ...]:
    """Each task some set with a positive weight trains, once, in canonical order (alternating T2V and I2V)."""
    return tuple(t for t in TASKS if any(t in s.tasks and s.weight > 0 for s in sources))


def task_weights(sources: list[MixtureSource], schedule: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per task of the schedule, the probability of drawing each source on that task's steps, such that every source
    gets its requested share of all samples (see the module docstring for the problem and the solution chosen).

    InfeasibleShares when no such weights exist; ValueError when the schedule has a task no set trains."""
    tasks = [t for t in TASKS if t in schedule]
    f = np.array([schedule.count(t) / len(schedule) for t in tasks])
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    p = weights / weights.sum()
    edges = np.array([[p[i] > 0 and t in s.tasks for t in tasks] for i, s in enumerate(sources)], dtype=bool)
    for j, t in enumerate(tasks):
        if not edges[:, j].any():
            raise ValueError(f"the schedule trains {t!r} but no set with a positive weight trains it")
    rows = np.flatnonzero(p > 0)
    for mask in _subsets(len(tasks), with_empty=True):
        group = rows[~edges[rows][:, ~mask].any(axis=1)]  # the sets that train only tasks of the subset
        if p[group].sum() > f[mask].sum() + SHARE_TOLERANCE:
            raise InfeasibleShares(_bound_message(sources, group, p, [t for t, m in zip(tasks, mask) if m],
                                                  f[mask].sum(), schedule))
    plan = np.zeros(edges.shape)
    for part_rows, part_cols in _parts(p, f, edges, rows, np.arange(len(tasks))):
        block = np.ix_(part_rows, part_cols)
        plan[block] = _fit(p[part_rows], f[part_cols], edges[block])
    return {t: plan[:, j] / plan[:, j].sum() for j, t in enumerate(tasks)}


def _subsets(n: int, with_empty: bool) -> list[np.ndarray]:
    """Boolean masks of the subsets of n tasks, fewest tasks first (so a message names the narrowest group);
    the whole set left out (its bound, all the steps, always holds), the empty set too unless `with_empty`."""
    masks = [np.array([(m >> j) & 1 for j in range(n)], dtype=bool) for m in range(2**n)]
    masks = [m for m in masks if (0 < m.sum() < n) or (with_empty and not m.any())]
    return sorted(masks, key=lambda m: (int(m.sum()), [not b for b in m]))


def _bound_message(sources, group, p, tasks, cap, schedule) -> str:
    names = [sources[i].name for i in group]
    one = len(names) == 1
    who = f"set {names[0]}" if one else f"sets {', '.join(names[:-1])} and {names[-1]}"
    steps = "/".join(schedule)
    if tasks:
        what = f"{'trains' if one else 'train'} {'+'.join(tasks)} only, which is {cap:.3g} of the steps ({steps})"
        fix = f"lower {'its weight' if one else 'their weights'} or give {'+'.join(tasks)} more of the schedule"
    else:
        what = f"{'trains' if one else 'train'} no task of the schedule ({steps})"
        fix = f"set {'its weight' if one else 'their weights'} to 0 or add {'its' if one else 'their'} tasks to it"
    bound = "its share can be at most" if one else "their shares can add up to at most"
    return f"{who} {what}: {bound} {cap:.3g} (asked {p[group].sum():.3g}); {fix}"


def _parts(p, f, edges, rows, cols) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split (rows, cols) wherever a group of sets needs every step of the tasks it trains: those tasks draw only
    that group, the other sets only the other tasks. What is left has a solution that draws every pair."""
    for mask in _subsets(len(cols), with_empty=False):
        group = ~edges[np.ix_(rows, cols[~mask])].any(axis=1)
        if p[rows[group]].sum() >= f[cols[mask]].sum() - SHARE_TOLERANCE:
            return (_parts(p, f, edges, rows[group], cols[mask]) +
                    _parts(p, f, edges, rows[~group], cols[~mask]))
    return [(rows, cols)]


def _fit(p, f, edges) -> np.ndarray:
    """The maximum-entropy plan with row sums p and column sums f on `edges`, for a part `_parts` left whole.

    Such a plan is x[s, t] = p[s] * softmax over the tasks s trains of b[t], one number b[t] per task: the row sums
    hold by construction, and b minimises the convex sum_s p[s] * logsumexp_s(b) - f.b, whose gradient is the
    column sums less f. Newton's method on b (one b fixed, the others move) with a backtracking line search on the
    gradient's norm (the Newton step always lowers it, and unlike the objective it is not lost in rounding near
    the end) reaches the column sums to rounding in a few steps, even where a share is close to its bound, where
    plain proportional fitting crawls."""
    p = p * (f.sum() / p.sum())  # the part's shares and steps agree to within the tolerance; make them equal
    off = np.where(edges, 0.0, -np.inf)  # a set is never drawn on a task it does not train

    def at(b):
        e = np.exp(off + b - (off + b).max(axis=1, keepdims=True))
        pi = e / e.sum(axis=1, keepdims=True)
        return pi, p @ pi - f

    b = np.zeros(len(f))
    pi, grad = at(b)
    for _ in range(_NEWTON_STEPS):
        size = np.abs(grad).max()
        if size <= 1e-14:
            break
        hess = np.diag(p @ pi) - pi.T @ (pi * p[:, None])
        step = np.zeros(len(f))
        step[1:] = np.linalg.solve(hess[1:, 1:], -grad[1:])
        for scale in 0.5 ** np.arange(40):
            new_pi, new_grad = at(b + scale * step)
            if np.abs(new_grad).max() < size:
                break
        else:  # no step lowers it: the column sums are as close as rounding allows
            break
        b, pi, grad = b + scale * step, new_pi, new_grad
    return p[:, None] * pi


class MixtureSampler:
    """Which task each step trains and which set each of its samples comes from (see the module docstring)."""

    def __init__(self, sources: list[MixtureSource], schedule: tuple[str, ...] = ("t2v", "i2v"), seed: int = 0):
        self.sources = list(sources)
        bad = [t for t in schedule if t not in TASKS]
        if bad or not schedule:
            raise ValueError(f"schedule {list(schedule)!r}: a non-empty sequence of {list(TASKS)}")
        self.schedule = tuple(schedule)
        self.seed = seed
        self.weights = task_weights(self.sources, self.schedule)
        self._eligible = {}
        for task, w in self.weights.items():
            idx = np.flatnonzero(w > 0)
            cdf = np.cumsum(w[idx])
            self._eligible[task] = (idx, cdf / cdf[-1])

    def task(self, step: int) -> str:
        return self.schedule[step % len(self.schedule)]

    def draw(self, step: int, n: int = 1) -> list[int]:
        """Source indices of the step's `n` samples."""
        idx, cdf = self._eligible[self.task(step)]
        u = np.random.default_rng([self.seed, step]).random(n)
        return idx[np.minimum(np.searchsorted(cdf, u, side="right"), len(idx) - 1)].tolist()

    def _by_name(self, values) -> dict[str, float]:
        out: dict[str, float] = {}
        for s, v in zip(self.sources, values):
            out[s.name] = out.get(s.name, 0.0) + float(v)
        return out

    def requested(self) -> dict[str, float]:
        """Each set's weight over the sum of the weights: the share of samples asked for."""
        total = sum(s.weight for s in self.sources)
        return self._by_name(s.weight / total for s in self.sources)

    def expected(self) -> dict[str, float]:
        """Each set's share of samples in the long run under the per-task weights (the requested share, up to the
        solver's rounding)."""
        return self._by_name(sum(self.schedule.count(t) / len(self.schedule) * w for t, w in self.weights.items()))

    def task_shares(self) -> dict[str, dict[str, float]]:
        """Per task, the per-task weight of each set it draws."""
        return {t: {k: v for k, v in self._by_name(w).items() if v > 0} for t, w in self.weights.items()}

    def simulate(self, steps: int, batch: int = 1, start: int = 0) -> dict:
        """Realised against requested shares over `steps` steps of `batch` samples: per set; per task (its share of
        the samples); per set and task (of all samples); and within each task, its per-task weights against the
        share of its samples each set got."""
        by_set, by_task, by_both = Counter(), Counter(), Counter()
        for step in range(start, start + steps):
            task = self.task(step)
            for i in self.draw(step, batch):
                name = self.sources[i].name
                by_set[name] += 1
                by_task[task] += 1
                by_both[(name, task)] += 1
        total = steps * batch
        per_task = self.task_shares()
        return {"samples": total, "schedule": list(self.schedule), "requested": self.requested(),
                "realized": {k: by_set[k] / total for k in sorted(by_set)},
                "tasks": {k: by_task[k] / total for k in sorted(by_task)},
                "sets_by_task": {f"{n}/{t}": by_both[n, t] / total for n, t in sorted(by_both)},
                "task_weights": per_task,
                "realized_by_task": {t: {n: by_both[n, t] / by_task[t] for n in per_task[t]}
                                     for t in per_task if by_task[t]}}

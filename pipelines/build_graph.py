"""The step graph of `yume-data build`: declared steps, each run once per distinct input and skipped on a rerun.

A recipe declares its set's steps (`Step`): a name, its set, the steps and files it reads, the settings that change
its outputs, the outputs themselves (paths from the build's `Layout`) and how the card's funnel counts its rows.
`Graph` runs them in order. A step is done when its marker (`Layout.marker`, written atomically, last, after the
step's own outputs) exists and holds the same fingerprint: the step's settings, the fingerprints of the steps it
reads and a digest of its input files. So changing one setting redoes that step and whatever reads it, and nothing
else; a new set runs only its own steps. Inside a step the flows resume on their own (parts, shards), so even a
redone step redoes only the batches whose inputs changed. The build record, the resume markers and the card's funnel
all come from the same declarations: there is no second table of steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yume_core import remote
from yume_core.storage import atomic_write_text


def files_digest(paths: Iterable[str | Path | None]) -> str:
    """What a step reads from disk, cheaply: a file's sha256 (CSV, events, decisions), or a folder's listing
    (relative name, size, mtime of every file below it: a changed clip shows without reading the clips). Where the
    inputs lie is left out, so a build folder with its generated inputs can be moved or copied and still resume."""
    h = hashlib.sha256()
    for p in paths:
        if p is None:
            h.update(b"-")
            continue
        if remote.is_url(str(p)):
            h.update(_url_digest(str(p)))
            continue
        p = Path(p)
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    st = os.stat(os.path.join(root, name))
                    h.update(f"{os.path.relpath(os.path.join(root, name), p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            h.update(b"missing")
    return h.hexdigest()[:16]


def _url_digest(url: str) -> bytes:
    """`files_digest` of an object (its bytes) or a prefix (relative key, size and ETag of every object below)."""
    fs, path = remote.filesystem(url)
    if not fs.exists(path):
        return b"missing"
    if not fs.isdir(path):
        return bytes.fromhex(remote.sha256_of(url))
    h = hashlib.sha256()
    found = fs.find(path, detail=True)
    for key in sorted(found):
        info = found[key]
        h.update(f"{key[len(path):]}\0{info.get('size')}\0{info.get('ETag') or info.get('etag')}\n".encode())
    return h.digest()


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Step:
    """One node of the build graph (see the module docstring)."""

    name: str  # `<set>/<stage>` for a set's step, a plain name for a build-wide one (`mixture`)
    run: Callable[[], dict | None]  # does the work; returns a small JSON-able result (paths, counts), never rows
    set: str | None = None
    reads: tuple[str, ...] = ()  # steps whose outputs it reads: their fingerprints are part of its own
    files: tuple[str | Path | None, ...] = ()  # input files or folders it reads (`files_digest`)
    settings: Any = None  # what changes its outputs (JSON-able)
    outputs: Mapping[str, Path] = field(default_factory=dict)  # what it writes, by name (manifest, summary, ...)
    gpu: bool = False  # runs a model: the record says on which device, and its GPU-hours
    # The card's funnel: `manifest` holds a verdict per row; `counts_from` is the step whose ok rows reached this
    # one; `extends`: the manifest keeps that step's rows and only adds verdicts (it is credited with those alone).
    manifest: Path | None = None
    counts_from: str | None = None
    extends: bool = False
    # A step that needs a person first: returns what to tell them (pages to open, how to resume), or None when its
    # input is there. Its marker is never written while it waits, so the next run looks again.
    waits: Callable[[], dict | None] | None = None


@dataclass
class StepRecord:
    name: str
    set: str | None
    fingerprint: str
    status: str  # done (ran now) | skipped (done before, same fingerprint) | waiting (needs a person) | blocked
    seconds: float  # of the run that did the work
    device: str = "cpu"
    gpus: int = 0
    result: dict = field(default_factory=dict)  # small: paths and counts, never rows
    outputs: dict = field(default_factory=dict)  # relative to OUT
    funnel: dict | None = None

    @property
    def gpu_hours(self) -> float | None:
        return round(self.seconds * self.gpus / 3600, 4) if self.gpus else None

    def to_dict(self) -> dict:
        return {"name": self.name, "set": self.set, "status": self.status, "seconds": round(self.seconds, 2),
                "device": self.device, "gpu_hours": self.gpu_hours, "fingerprint": self.fingerprint,
                "outputs": self.outputs, "funnel": self.funnel, **self.result}


class Graph:
    """Runs declared steps in order under their markers and keeps their records for the build record."""

    def __init__(self, layout, log: Callable[[str], None] = print):
        self.layout = layout
        self.records: list[StepRecord] = []
        self.fingerprints: dict[str, str] = {}
        self.log = log
        self._held: set[str] = set()  # steps waiting for a person, and every step reading one of them

    def run(self, steps: Sequence[Step]) -> None:
        for step in steps:
            self.run_step(step)

    def run_step(self, step: Step) -> StepRecord:
        unknown = [r for r in step.reads if r not in self.fingerprints and r not in self._held]
        if unknown:
            raise RuntimeError(f"step {step.name} reads {unknown}, which no earlier step declares")
        held = [r for r in step.reads if r in self._held]
        if held:
            self._held.add(step.name)
            return self._keep(StepRecord(step.name, step.set, "-", "blocked", 0.0, result={"waits_for": held}), step)
        fp = fingerprint(step.name, step.settings, files_digest(step.files) if step.files else None,
                         [self.fingerprints[r] for r in step.reads])
        if step.waits is not None and (needs := step.waits()) is not None:
            self._held.add(step.name)
            self.log(f"[build] {step.name}: waiting ({needs.get('message', 'needs a person')})")
            return self._keep(StepRecord(step.name, step.set, fp, "waiting", 0.0, result=needs), step)
        self.fingerprints[step.name] = fp
        device, gpus = _device() if step.gpu else ("cpu", 0)
        marker = self.layout.marker(step.name)
        old = _read(marker)
        if old and old.get("fingerprint") == fp:
            rec = StepRecord(step.name, step.set, fp, "skipped", old["seconds"], old.get("device", device),
                             old.get("gpus", 0), old.get("result", {}))
            self.log(f"[build] {step.name}: done before with these inputs and settings; skipped")
        else:
            self.log(f"[build] {step.name} ...")
            started = time.perf_counter()
            result = step.run() or {}
            rec = StepRecord(step.name, step.set, fp, "done", time.perf_counter() - started, device, gpus, result)
            atomic_write_text(marker, json.dumps({"fingerprint": fp, "seconds": rec.seconds, "device": device,
                                                  "gpus": gpus, "result": result}, indent=2, sort_keys=True))
            self.log(f"[build] {step.name}: {rec.seconds:.1f} s")
        return self._keep(rec, step)

    def _keep(self, rec: StepRecord, step: Step) -> StepRecord:
        rec.outputs = {k: self.layout.rel(v) for k, v in step.outputs.items()}
        if step.manifest is not None:
            rec.funnel = {"manifest": self.layout.rel(step.manifest), "counts_from": step.counts_from,
                          "extends": step.extends}
        self.records.append(rec)
        return rec

    @property
    def waiting(self) -> list[StepRecord]:
        return [r for r in self.records if r.status == "waiting"]

    def held(self, name: str) -> bool:
        return name in self._held


def _device() -> tuple[str, int]:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "cpu", 0


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

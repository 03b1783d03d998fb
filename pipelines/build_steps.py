"""The steps of `yume-data build`: each runs once per distinct input, and a rerun skips it.

A step is done when its marker `OUT/work/_steps/<name>.json` exists (written atomically, last, after the step's own
outputs) and holds the same fingerprint. The fingerprint hashes the step's settings, the fingerprints of the steps
it reads from and a digest of its input files, so changing one setting redoes that step and whatever is downstream
of it, and nothing else. Inside a step the flows resume on their own (parts, shards), so even a redone step redoes
only the batches whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
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
class StepRecord:
    name: str
    fingerprint: str
    status: str  # done (ran now) | skipped (done before, same fingerprint) | waiting (needs a person)
    seconds: float  # of the run that did the work
    device: str = "cpu"
    gpus: int = 0
    result: dict = field(default_factory=dict)  # small: paths and counts, never rows

    @property
    def gpu_hours(self) -> float | None:
        return round(self.seconds * self.gpus / 3600, 4) if self.gpus else None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2), "device": self.device,
                "gpu_hours": self.gpu_hours, "fingerprint": self.fingerprint, **self.result}


class Steps:
    """Runs named steps under `work/_steps/` markers and keeps their records in order for the build record."""

    def __init__(self, out: Path, log: Callable[[str], None] = print):
        self.dir = out / "work" / "_steps"
        self.records: list[StepRecord] = []
        self.fingerprints: dict[str, str] = {}
        self.log = log

    def run(self, name: str, parts: Any, fn: Callable[[], dict], device: str = "cpu", gpus: int = 0) -> dict:
        """`fn()` unless the marker says it ran with the same `parts`; returns its (small, JSON-able) result."""
        fp = fingerprint(name, parts)
        self.fingerprints[name] = fp
        marker = self.dir / f"{name}.json"
        old = _read(marker)
        if old and old.get("fingerprint") == fp:
            rec = StepRecord(name, fp, "skipped", old["seconds"], old.get("device", device), old.get("gpus", 0),
                             old.get("result", {}))
            self.log(f"[build] {name}: done before with these inputs and settings; skipped")
        else:
            self.log(f"[build] {name} ...")
            started = time.perf_counter()
            result = fn() or {}
            rec = StepRecord(name, fp, "done", time.perf_counter() - started, device, gpus, result)
            atomic_write_text(marker, json.dumps({"fingerprint": fp, "seconds": rec.seconds, "device": device,
                                                  "gpus": gpus, "result": result}, indent=2, sort_keys=True))
            self.log(f"[build] {name}: {rec.seconds:.1f} s")
        self.records.append(rec)
        return rec.result

    def waiting(self, name: str, parts: Any, result: dict) -> None:
        """Record a step that waits for a person (no marker: the next run looks again)."""
        self.records.append(StepRecord(name, fingerprint(name, parts), "waiting", 0.0, result=result))

    def fp(self, *names: str) -> list[str]:
        return [self.fingerprints[n] for n in names if n in self.fingerprints]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

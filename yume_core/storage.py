"""Atomic writes: a file appears under its final name complete or not at all.

A killed run therefore leaves only finished outputs (plus stray temp files, which are ignored and overwritten),
which is what lets a rerun skip whatever already exists.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp-"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def is_temp(path: str | Path) -> bool:
    return Path(path).name.startswith(TMP_MARK)


def file_sha256(path: str | Path, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in large chunks into one reused buffer (hashlib releases the GIL on them)."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def cache_root() -> Path:
    """Where built-once artefacts (tiny random checkpoints) live: `$YUME_DATA_CACHE`, else `~/.cache/yume-data`;
    a per-user temp dir when that is not writable (read-only homes on batch nodes)."""
    import tempfile

    root = Path(os.environ.get("YUME_DATA_CACHE") or Path.home() / ".cache" / "yume-data")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=root, prefix=".probe-").close()
    except OSError:
        root = Path(tempfile.gettempdir()) / f"yume-data-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        root.mkdir(parents=True, exist_ok=True)
    return root


def build_once(final: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """`final`, written by `write(folder)` into a temp folder beside it and renamed into place, unless `final/marker`
    already exists. Concurrent builders (workers starting together) are safe: the first rename wins and the others'
    copies are thrown away."""
    import shutil
    import tempfile

    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=".build-"))
    try:
        write(work)
        try:
            os.rename(work, final)  # atomic; fails if another builder got there first
        except OSError:
            if not (final / marker).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final

"""Atomic writes: a file appears under its final name complete or not at all.

A killed run therefore leaves only finished outputs (plus stray temp files, which are ignored and overwritten),
which is what lets a rerun skip whatever already exists. A folder that cannot take writes at all (read-only,
full) is caught before a command starts (`check_writable`) and named when a write fails later (`disk_problem`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp-"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block finishes. In a staging folder of an
    object-storage output the finished file is then uploaded whole (`yume_core.remote`), so the bucket too only
    ever holds complete files."""
    from yume_core.remote import push_if_mirrored

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
        push_if_mirrored(path)
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


# errno -> what a person is told about the folder a failed write was in
_DISK_PROBLEMS = {
    errno.ENOSPC: ("disk full", "free space there or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space there or write to another disk"),
    errno.EROFS: ("not writable (read-only file system)", "write to a writable disk"),
    errno.EACCES: ("not writable (permission denied)", "fix its permissions or write elsewhere"),
    errno.EPERM: ("not writable (operation not permitted)", "fix its permissions or write elsewhere"),
}


def disk_problem(exc: OSError) -> tuple[str, str, str] | None:
    """(folder, problem, fix) when `exc` says the disk is full or the folder not writable, else None.

    The folder is the one the failed write was in, since that is what a person frees or fixes."""
    if exc.errno not in _DISK_PROBLEMS:
        return None
    name = Path(exc.filename) if exc.filename else Path.cwd()
    folder = name if name.is_dir() else name.parent
    return (str(folder), *_DISK_PROBLEMS[exc.errno])


def check_writable(folder: str | Path, min_free_bytes: int = 1 << 20, what: str = "output folder") -> Path | str:
    """Create `folder` if needed and write a probe file there; InputError naming the folder when that fails or the
    disk has less than `min_free_bytes` free.

    Commands call it before their first unit of work, so that a read-only mount, a path under a regular file or a
    full disk stops them at once with the folder's name, not hours later at the first output (or inside Prefect).
    """
    from yume_core.errors import InputError
    from yume_core.remote import is_url

    if is_url(str(folder)):
        return folder  # object storage: its bucket is checked when the output is opened (`remote.open_output`)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f"{TMP_MARK}probe-")
        try:
            os.write(fd, b"\0" * 4096)  # creating an empty file can succeed on a full disk; a block cannot
        finally:
            os.close(fd)
            os.unlink(probe)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        found = disk_problem(exc)
        if found is None:
            problem = f"cannot be used as the {what} ({exc.strerror or exc})"
            raise InputError(folder, problem, "choose a folder that can be created and written") from exc
        raise InputError(folder, f"{what} {found[1]}", found[2]) from exc
    if free < min_free_bytes:
        raise InputError(folder, f"{what} disk full ({free} bytes free, {min_free_bytes} needed to start)",
                         "free space there or write to another disk")
    return folder

"""What a file is, without reading it: size and modification time for a local file, size and ETag (or version id)
for an object. A flow's batch is done only when the files it read still have the identities it read them with, so
a replaced video or trajectory is redone on resume, and an unchanged one is not. Objects are listed once per
folder (one paginated listing), never opened.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence

from yume_core import remote

MISSING = "missing"


def file_identities(paths: Sequence[str | None]) -> list[str | None]:
    """One identity string per path (None for None, `missing` for a file that is not there)."""
    out: list[str | None] = [None] * len(paths)
    by_folder: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        if not path:
            continue
        if remote.is_url(path):
            by_folder.setdefault(path.rsplit("/", 1)[0], []).append(i)
            continue
        try:
            st = os.stat(path)
            out[i] = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            out[i] = MISSING
    for folder, rows in by_folder.items():
        listing = _listing(folder)
        for i in rows:
            out[i] = listing.get(paths[i].rsplit("/", 1)[1], MISSING)
    return out


def _listing(folder: str) -> dict[str, str]:
    fs, path = remote.filesystem(folder)
    try:
        entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    found = {}
    for e in entries:
        if e.get("type") == "directory":
            continue
        tag = e.get("VersionId") or e.get("ETag") or e.get("etag") or e.get("mtime") or e.get("LastModified")
        found[e["name"].rsplit("/", 1)[-1]] = f"{e.get('size')}:{tag}"
    return found


def batch_keys(columns: Iterable[Sequence[str | None]], batch_size: int, rows: int) -> list[str]:
    """A key per batch of `batch_size` rows over the identities of the files each row reads (`columns`: one
    sequence of identities per kind of file, e.g. videos and trajectories)."""
    columns = [list(c) for c in columns]
    keys = []
    for start in range(0, rows, batch_size):
        chunk = [c[start:start + batch_size] for c in columns]
        keys.append(hashlib.sha256(json.dumps(chunk).encode()).hexdigest()[:16])
    return keys

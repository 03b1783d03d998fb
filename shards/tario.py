"""Fast tar I/O: one WebDataset tar written atomically from a shard's rows, with its index rows, sha256 and size.

Writing a shard is a copy of the source mp4s into one file plus a sha256 per member, so the work per byte is
one read, one write and one hash. Samples are read (or transcoded) and hashed by a few threads ahead of the
writer (file reads and hashlib release the GIL), within a bounded window of samples and bytes, while the main
thread only writes. The tar is written through webdataset's TarWriter with tarfile's seekable mode ("w") instead
of its stream mode ("w|"): the stream mode re-buffers every member in 10 KiB records (three extra copies and a
Python loop per record, ~30% slower here), while "w" hands each member's bytes to the file in a single write.
The file's buffer (1 MiB) collects the 512-byte headers, json and npy members; mp4 payloads larger than it go
straight to the OS without another copy (a buffer larger than the payloads would add a memcpy of every byte).

What makes a shard folder resumable (index parts, markers, fingerprints) is `shards.writer`'s.
"""

from __future__ import annotations

import functools
import hashlib
import tarfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
from webdataset import TarWriter

from shards.keys import sample_keys
from shards.plan import estimate_sample_bytes, ok_positions
from shards.sample import SampleContext, member_records, open_video
from yume_core import buildtime
from yume_core.errors import RowError
from yume_core.manifest import FAILED, OK
from yume_core.storage import atomic_path

MEMBER_TYPE = pa.struct([("ext", pa.string()), ("bytes", pa.int64()), ("sha256", pa.string())])
INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # sample key (sanitised clip id)
        ("shard", pa.string()),  # tar file name; null for rows that failed and are in no shard
        ("position", pa.int32()),  # sample's ordinal within its shard
        ("offset", pa.int64()),  # byte offset of the sample's first tar header (seek here to read it alone)
        ("member_bytes", pa.int64()),  # total bytes of the sample's members (without tar headers)
        ("members", pa.list_(MEMBER_TYPE)),  # per member, in tar order
        ("clip_id", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),  # ok, or failed: the row's input could not become a sample
        ("reason", pa.string()),
        ("error", pa.string()),
        ("set", pa.string()),  # real_world | synthetic | event
        ("tasks", pa.list_(pa.string())),  # the tasks the sample trains, as in its json (null for failed rows)
        ("seconds", pa.float64()),  # duration of the mp4 member (frames / fps)
    ]
)

FILE_BUFFER = 1 << 20
COPY_CHUNK = 256 << 20  # tarfile copies a member in chunks of this size; larger members are split
WINDOW_BYTES = 512 << 20  # estimated bytes read ahead of the writer, at most (always at least one sample)


class _TarWriter(TarWriter):
    """webdataset's TarWriter on tarfile's seekable mode, taking members as any bytes-like without copying them.

    TarWriter.write wraps each value in io.BytesIO, which copies anything that is not `bytes` (and the pooled
    buffers below are bytearrays); this `write` is TarWriter.write with encoder=False (same member names
    `<key>.<ext>` in sorted order, same TarInfo fields) handing tarfile a zero-copy reader instead.
    """

    @staticmethod
    def tarmode(fileobj, compress=None):
        return "w"

    def write(self, obj):
        if "__key__" not in obj:
            raise ValueError("object must contain a __key__")
        key = obj["__key__"]
        total = 0
        for ext in sorted(obj):
            if ext.startswith("_"):
                continue
            value = obj[ext]
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"{ext} doesn't map to bytes ({type(value)})")
            view = memoryview(value).cast("B")
            ti = tarfile.TarInfo(f"{key}.{ext}")
            ti.size = view.nbytes
            ti.mtime = self.mtime if self.mtime is not None else time.time()
            ti.mode, ti.uname, ti.gname = self.mode, self.user, self.group
            self.tarstream.addfile(ti, _ViewReader(view))
            total += ti.size
        return total


class _ViewReader:
    """A read-only file over a memoryview whose read() returns views, not copies (what tarfile.addfile reads)."""

    def __init__(self, view: memoryview):
        self.view, self.pos = view, 0

    def read(self, n: int = -1):
        end = len(self.view) if n is None or n < 0 else min(self.pos + n, len(self.view))
        out = self.view[self.pos : end]
        self.pos = end
        return out


class _BufferPool:
    """Reused read buffers: a fresh buffer per file costs a page fault per 4 KiB (the dominant cost of a copy on
    some VMs); reused ones are already mapped. Buffers grow to the largest file seen; at most `limit` bytes are
    kept (more are let go)."""

    def __init__(self, limit: int):
        self.free: list[bytearray] = []
        self.limit = limit
        self.lock = threading.Lock()

    def get(self, size: int) -> bytearray:
        with self.lock:
            fits = [b for b in self.free if len(b) >= size]
            buf = min(fits, key=len) if fits else (self.free[-1] if self.free else None)
            if buf is not None:
                self.free.remove(buf)
        if buf is None or len(buf) < size:
            buf = bytearray(size)
        return buf

    def put(self, buf: bytearray) -> None:
        with self.lock:
            if sum(map(len, self.free)) + len(buf) <= self.limit:
                self.free.append(buf)


def _read_into(pool: _BufferPool, row: Mapping[str, Any]) -> tuple[bytearray, memoryview, str | None]:
    """Read the row's mp4 into a pooled buffer; same checks and errors as sample.read_video_bytes.

    Also returns the sha256 recorded at probe time when the file is provably the one that was hashed."""
    f, size, digest = open_video(row)
    with f:
        buf = pool.get(size)
        view = memoryview(buf)[:size]
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                pool.put(buf)
                raise RowError("video_changed", f"{row.get('video_path')}: file shrank to {got} bytes while being read.")
            got += n
    return buf, view, digest


def _job(row: Mapping[str, Any], key: str, ctx: SampleContext, pool: _BufferPool):
    buf = None
    try:
        view, known = None, None
        if not ctx.config.transcodes:
            buf, view, digest = _read_into(pool, row)
            known = {"mp4": digest} if digest else None
        sample = ctx.spec.build(row, ctx, key, mp4=view)
        return sample, member_records(sample, known), None, buf
    except RowError as e:
        if buf is not None:
            pool.put(buf)
        return None, None, e, None


def _samples_in_order(rows: Sequence[Mapping], keys: Sequence[str], est: Sequence[int], ctx: SampleContext,
                      pool: _BufferPool):
    """Yield (row, key, sample, records, error, buffer) in row order, built by worker threads within a bounded
    window (count and estimated bytes). The caller returns `buffer` to the pool once the sample is written."""
    threads = ctx.config.worker_threads
    max_pending = 2 * threads
    pending: deque = deque()
    ex = ThreadPoolExecutor(threads, thread_name_prefix="shard-read")
    try:
        nxt, inflight = 0, 0
        while nxt < len(rows) or pending:
            while nxt < len(rows) and len(pending) < max_pending and (not pending or inflight + est[nxt] <= WINDOW_BYTES):
                pending.append((nxt, est[nxt], ex.submit(_job, rows[nxt], keys[nxt], ctx, pool)))
                inflight += est[nxt]
                nxt += 1
            i, size, fut = pending.popleft()
            inflight -= size
            sample, records, err, buf = fut.result()
            yield rows[i], keys[i], sample, records, err, buf
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _mtime(created: str) -> int:
    """Tar member mtimes: the sample's `created` time (the build time), so the tar bytes do not depend on the clock."""
    try:
        return int(datetime.fromisoformat(created).timestamp())
    except (TypeError, ValueError):
        return buildtime.build_epoch()


class _HashingFile:
    """A write-only file that hashes what goes through it, so a shard's sha256 (its completion marker's) costs no
    second read of the tar. The hashing runs on a thread of its own, a sample behind the writes (hashlib and file
    writes both release the GIL): each sample's pooled read buffer goes back to the pool only once it is hashed
    (`hand_off`), and at most `lag` samples wait to be hashed."""

    def __init__(self, f, lag: int = 4):
        self.f, self.sha, self.bytes, self.lag = f, hashlib.sha256(), 0, lag
        self.views: list[memoryview] = []
        self.pending: deque = deque()
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="shard-hash")

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.bytes += view.nbytes
        self.views.append(view)
        return self.f.write(data)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        self.f.flush()

    def hand_off(self, release: Callable[[], None] | None = None) -> None:
        """Hash what was written since the last call; `release()` once done (returns the sample's buffer)."""
        views, self.views = self.views, []
        done = self.hasher.submit(self._update, views)
        if release is not None:
            done.add_done_callback(lambda _: release())
        self.pending.append(done)
        while len(self.pending) > self.lag:
            self.pending.popleft().result()

    def _update(self, views: list[memoryview]) -> None:
        for view in views:
            self.sha.update(view)

    def hexdigest(self) -> str:
        self.hand_off()
        while self.pending:
            self.pending.popleft().result()
        return self.sha.hexdigest()

    def close(self) -> None:
        self.hasher.shutdown(wait=True, cancel_futures=True)


def write_tar(table_rows: pa.Table, path: Path, ctx: SampleContext) -> tuple[pa.Table, str, int]:
    """Write the ok rows of `table_rows` as one WebDataset tar at `path` (atomically); return its index rows, its
    sha256 and its size.

    Rows whose input cannot become a sample (video gone or changed, poses unreadable, transcode failure) are left
    out of the tar and returned as index rows with status `failed`, a reason code and a message; the others follow.
    Raises KeyCollisionError if two rows share a sample key.
    """
    path = Path(path)
    ok = table_rows.take(pa.array(ok_positions(table_rows)))
    keys = sample_keys(ok["clip_id"].to_pylist())
    est = estimate_sample_bytes(ok, ctx.config).tolist()
    rows = ok.to_pylist()
    cols: dict[str, list] = {f.name: [] for f in INDEX_SCHEMA}

    def add(**kw):
        for name in cols:
            cols[name].append(kw.get(name))

    with atomic_path(path) as tmp:
        with open(tmp, "wb", buffering=FILE_BUFFER) as raw:
            f = _HashingFile(raw)
            try:
                tw = _TarWriter(f, encoder=False, mtime=_mtime(ctx.created), format="PAX_FORMAT")
                tw.tarstream.copybufsize = COPY_CHUNK
                position = 0
                pool = _BufferPool(WINDOW_BYTES)
                for row, key, sample, records, err, buf in _samples_in_order(rows, keys, est, ctx, pool):
                    base = dict(key=key, clip_id=row.get("clip_id"), source=row.get("source"), set=ctx.spec.set_name)
                    if err is not None:
                        add(**base, member_bytes=0, members=[], status=FAILED, reason=err.reason, error=err.message)
                        continue
                    offset = tw.tarstream.offset
                    info = sample.get("_index") or {}
                    tw.write(sample)
                    sample.clear()  # only the hasher still holds the buffer's views
                    f.hand_off(None if buf is None else functools.partial(pool.put, buf))
                    add(**base, **info, shard=path.name, position=position, offset=offset,
                        member_bytes=sum(r["bytes"] for r in records), members=records, status=OK)
                    position += 1
                tw.close()
                digest = f.hexdigest()
            finally:
                f.close()
    return pa.Table.from_pydict(cols, schema=INDEX_SCHEMA), digest, f.bytes

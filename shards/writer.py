"""Writing shards: one tar per call, atomically, with its index rows; resumable over a whole manifest.

Layout of a shard folder:

    {prefix}-000000.tar, {prefix}-000001.tar, ...     plain WebDataset tars (uncompressed; mp4 is compressed already)
    _index/{prefix}-000000.parquet, ...               index part of each tar, written right after it
    index.parquet                                     all parts merged (what readers and `verify_shards` use)

A shard is done when its tar AND its index part exist (both are written atomically, tar first), and, when the
planned rows are known, the part was written from the same inputs (a fingerprint of the rows' sample columns,
the shard settings and the provenance, kept in the part's metadata). So a killed run leaves only complete shards and a rerun
redoes the rest; a flow can write shards in parallel tasks (`write_shard_part`) and merge at the end
(`merge_index`).

Speed. Writing a shard is a copy of the source mp4s into one file plus a sha256 per member, so the work per byte is
one read, one write and one hash. Samples are read (or transcoded) and hashed by a few threads ahead of the
writer (file reads and hashlib release the GIL), within a bounded window of samples and bytes, while the main
thread only writes. The tar is written through webdataset's TarWriter with tarfile's seekable mode ("w") instead
of its stream mode ("w|"): the stream mode re-buffers every member in 10 KiB records (three extra copies and a
Python loop per record, ~30% slower here), while "w" hands each member's bytes to the file in a single write.
The file's buffer (1 MiB) collects the 512-byte headers, json and npy members; mp4 payloads larger than it go
straight to the OS without another copy (a buffer larger than the payloads would add a memcpy of every byte).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tarfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from webdataset import TarWriter

from shards.config import ShardConfig
from shards.keys import sample_keys
from shards.plan import estimate_sample_bytes, ok_positions, plan_shards, shard_name
from shards.sample import SampleContext, SampleSpec, member_records, now_iso, open_video
from yume_core import buildtime
from yume_core.errors import RowError
from yume_core.manifest import FAILED, OK
from yume_core.remote import drop_uploaded, ensure_local
from yume_core.storage import TMP_MARK, atomic_path, atomic_write_text

INDEX_FILE = "index.parquet"
FINGERPRINT_KEY = b"yume_shard_fingerprint"  # index part metadata: what the shard was written from
INDEX_DIR = "_index"
MARKER_SUFFIX = ".done.json"  # `_index/<shard>.done.json`: size, sha256 and samples of a finished shard
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


def _write_shard(table_rows: pa.Table, path: Path, ctx: SampleContext) -> tuple[pa.Table, str, int]:
    """Write the tar; returns its index rows, sha256 and size."""
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


def write_shard(table_rows: pa.Table, path: str | Path, config: ShardConfig | None = None,
                provenance: Mapping | None = None, spec: SampleSpec | None = None) -> pa.Table:
    """Write the ok rows of `table_rows` as one WebDataset tar at `path` (atomically); return its index rows.

    Rows whose input cannot become a sample (video gone or changed, poses unreadable, transcode failure) are left
    out of the tar and returned as index rows with status `failed`, a reason code and a message; the others follow.
    Raises KeyCollisionError if two rows share a sample key.
    """
    return _write_shard(table_rows, Path(path), SampleContext(config or ShardConfig(), provenance, spec=spec))[0]


# ------------------------------------------------------------------------------------------------ folders, resume


def index_part_path(out_dir: str | Path, i_or_name: int | str, config: ShardConfig | None = None) -> Path:
    name = shard_name(i_or_name, config) if isinstance(i_or_name, int) else i_or_name
    return Path(out_dir) / INDEX_DIR / (Path(name).stem + ".parquet")


def _fingerprint(rows: pa.Table, ctx: SampleContext) -> str:
    """sha256 of what a shard's bytes are made of: the ok rows' sample columns, the shard settings (except
    `threads`), the caller's provenance (except `created`) and the set's sample settings (schema version, set,
    tasks, ...). Source files are represented by path and size."""
    ok = rows.take(pa.array(ok_positions(rows)))
    cols = sorted(c for c in ok.column_names if ctx.spec.covers(c))
    table = ok.select(cols).replace_schema_metadata(None).combine_chunks()
    settings = {k: v for k, v in ctx.shard_settings.items() if k != "threads"}
    prov = {k: v for k, v in ctx.provenance.items() if k != "created"}
    h = hashlib.sha256(json.dumps([settings, prov, ctx.spec.fingerprint_settings()], sort_keys=True,
                                  default=str).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    h.update(sink.getvalue())
    return h.hexdigest()


def _part_fingerprint(part: Path) -> str | None:
    try:
        meta = pq.read_schema(part).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    value = meta.get(FINGERPRINT_KEY)
    return value.decode() if value else None


def marker_path(out_dir: str | Path, i_or_name: int | str, config: ShardConfig | None = None) -> Path:
    """Shard i's completion marker: `_index/<shard>.done.json`, written after its tar and index part."""
    return index_part_path(out_dir, i_or_name, config).with_suffix(MARKER_SUFFIX)


def read_marker(path: str | Path) -> dict | None:
    """A completion marker; where the folder mirrors object storage, the bucket's (a run killed between writing
    the marker here and uploading it has not finished the shard)."""
    from yume_core.remote import mirror_for, read_bytes

    mirror = mirror_for(path)
    try:
        return json.loads(read_bytes(mirror.remote_of(path)) if mirror is not None else Path(path).read_text())
    except (OSError, ValueError):
        return None


def _tar_matches(tar: Path, marker: Mapping) -> bool:
    """The shard's bytes are the ones its marker describes: size, then sha256 read back. Where the folder mirrors
    object storage the bucket's copy is checked (it is what readers get), else the local file."""
    from yume_core.remote import mirror_for, sha256_of, size

    mirror = mirror_for(tar)
    where = mirror.remote_of(tar) if mirror is not None else str(tar)
    return size(where) == marker.get("bytes") and sha256_of(where) == marker.get("sha256")


def _complete(out_dir: Path, i: int, config: ShardConfig, fingerprint: str | None) -> bool:
    """Shard i is done: its index part and marker exist, agree on the fingerprint (when one is given), and the tar
    matches the marker. Checked, not trusted: a truncated or altered tar, or one whose upload never finished, is
    written again."""
    part, marker = index_part_path(out_dir, i, config), read_marker(marker_path(out_dir, i, config))
    if marker is None or not part.is_file():
        return False
    if fingerprint is not None and not (_part_fingerprint(part) == fingerprint == marker.get("fingerprint")):
        return False
    return _tar_matches(out_dir / shard_name(i, config), marker)


def shard_done(out_dir: str | Path, i: int, config: ShardConfig | None = None, rows: pa.Table | None = None,
               provenance: Mapping | None = None, spec: SampleSpec | None = None) -> bool:
    """True when shard i is complete: tar, index part and completion marker, the tar checked against the marker.

    Given the planned `rows` (and the `provenance` the shard would be written with), also true only if the part
    was written from the same inputs: the same ok rows with the same sample columns, the same shard settings and
    provenance (its `created` aside). So a rerun with another manifest, action stride or transcode setting
    rewrites the shard instead of keeping a stale one.
    """
    config = config or ShardConfig()
    fp = None if rows is None else _fingerprint(rows, SampleContext(config, provenance, created="-", spec=spec))
    return _complete(Path(out_dir), i, config, fp)


def _write_part(table_rows, out_dir, i, ctx, skip_existing) -> pa.Table:
    out_dir = Path(out_dir)
    tar, part = out_dir / shard_name(i, ctx.config), index_part_path(out_dir, i, ctx.config)
    fingerprint = _fingerprint(table_rows, ctx)
    if skip_existing and _complete(out_dir, i, ctx.config, fingerprint):
        return pq.read_table(part, schema=INDEX_SCHEMA)
    marker = marker_path(out_dir, i, ctx.config)
    marker.unlink(missing_ok=True)  # from here until the new marker, the shard is not done
    index, digest, nbytes = _write_shard(table_rows, tar, ctx)
    with atomic_path(part) as tmp:
        pq.write_table(index.replace_schema_metadata({FINGERPRINT_KEY: fingerprint}), tmp)
    samples = pc.sum(pc.equal(index["status"], OK)).as_py() or 0
    atomic_write_text(marker, json.dumps({"shard": tar.name, "bytes": nbytes, "sha256": digest, "samples": samples,
                                          "fingerprint": fingerprint}, sort_keys=True))
    drop_uploaded(tar)
    return index


def write_shard_part(table_rows: pa.Table, out_dir: str | Path, i: int, config: ShardConfig | None = None,
                     provenance: Mapping | None = None, skip_existing: bool = True,
                     spec: SampleSpec | None = None) -> pa.Table:
    """Write shard i of a plan (`out_dir/{prefix}-{i:06d}.tar`, its index part, then its completion marker) unless
    already done.

    What a flow runs as one task per shard: `groups = plan_shards(ok, cfg)`, then
    `write_shard_part(ok.take(groups[i]), out_dir, i, cfg, provenance)` for each i, then `merge_index(out_dir, n)`.
    `spec`: how rows become samples (default: real-world clips; `shards.set_spec` gives the other sets').
    """
    ctx = SampleContext(config or ShardConfig(), provenance, spec=spec)
    return _write_part(table_rows, out_dir, i, ctx, skip_existing)


def merge_index(out_dir: str | Path, shards: int | Sequence[str] | None = None,
                config: ShardConfig | None = None) -> pa.Table:
    """Concatenate the index parts into `out_dir/index.parquet` (atomically) and return the table.

    `shards`: the number of planned shards (parts 0..n-1 of `config.prefix`) or their tar names; None takes every
    part under `_index/` whose tar exists (pass the plan's size when a rerun may have left parts of a larger, older
    plan behind). Rows are sorted by shard, then position; failed rows (no shard) come last.
    """
    out_dir = Path(out_dir)
    if shards is None:
        parts = sorted(
            p for p in (out_dir / INDEX_DIR).glob("*.parquet")
            if not p.name.startswith(TMP_MARK) and (out_dir / (p.stem + ".tar")).is_file()
        )
    else:
        names = [shard_name(i, config) for i in range(shards)] if isinstance(shards, int) else list(shards)
        parts = [ensure_local(index_part_path(out_dir, n)) for n in names]  # written on another node, maybe
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{out_dir}: index parts missing for {len(missing)} shard(s), e.g. {missing[:3]}; "
                                    "write those shards first (a rerun resumes)")
    tables = [pq.read_table(p, schema=INDEX_SCHEMA) for p in parts]
    index = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
    if index.num_rows:
        # nulls sort last by default: failed rows (no shard) end up after every shard's samples
        order = pc.sort_indices(index, sort_keys=[("shard", "ascending"), ("position", "ascending")])
        index = index.take(order)
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        pq.write_table(index, tmp)
    return index


def write_shards(table: pa.Table, out_dir: str | Path, config: ShardConfig | None = None,
                 provenance: Mapping | None = None, skip_existing: bool = True,
                 spec: SampleSpec | None = None) -> pa.Table:
    """Plan the ok rows of `table` into shards, write `out_dir/{prefix}-{i:06d}.tar` in order (skipping shards
    already done when `skip_existing`), write `out_dir/index.parquet` and return the index."""
    config = config or ShardConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = ok_positions(table)
    sample_keys(table["clip_id"].take(pa.array(ok)).to_pylist())  # fail on a key collision before writing anything
    groups = plan_shards(table, config)
    ctx = SampleContext(config, provenance, created=(provenance or {}).get("created") or now_iso(), spec=spec)
    remove_stale_shards(out_dir, len(groups), config)
    from tqdm.auto import tqdm

    for i, rows in enumerate(tqdm(groups, desc="shards", unit="shard", disable=None, leave=False)):
        _write_part(table.take(pa.array(rows)), out_dir, i, ctx, skip_existing)
    remove_temp_files(out_dir)
    return merge_index(out_dir, len(groups), config)


def remove_stale_shards(out_dir: str | Path, planned: int, config: ShardConfig | None = None) -> list[str]:
    """Delete shards (and their index parts, markers, Energon offsets) numbered `planned` or higher, here and in
    the bucket the folder mirrors: left by an earlier, larger plan, they would otherwise be picked up by anyone
    listing `*.tar`. Returns the names removed."""
    from yume_core.remote import list_files, mirror_for

    out_dir = Path(out_dir)
    keep = {shard_name(i, config) for i in range(planned)}
    prefix = (config or ShardConfig()).prefix + "-"
    names = {p.name for p in out_dir.glob(f"{prefix}*.tar")}
    mirror = mirror_for(out_dir / INDEX_FILE)
    if mirror is not None:
        names |= {u.rsplit("/", 1)[-1] for u in list_files(mirror.remote_of(out_dir), ".tar")}
    removed = []
    for name in sorted(names):
        if name in keep or name.startswith(TMP_MARK) or not name.startswith(prefix):
            continue
        tar = out_dir / name
        # the tar last: while any of its files is left, the next run still sees the shard and removes it
        for p in (marker_path(out_dir, name), index_part_path(out_dir, name), tar.with_name(name + ".idx"), tar):
            p.unlink(missing_ok=True)
            if mirror is not None:
                mirror.remove(p)
        removed.append(name)
    return removed


def remove_temp_files(out_dir: str | Path) -> int:
    """Delete temp files a killed run left behind in `out_dir` and `out_dir/_index`; returns how many. Call it once
    every writer into the folder has finished: a half-written `.tmp-*-shard-000002.tar` matches a reader's `*.tar`."""
    n = 0
    for d in (Path(out_dir), Path(out_dir) / INDEX_DIR):
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(TMP_MARK) and p.is_file():
                    os.unlink(p)
                    n += 1
    return n

"""Map a stage over a manifest in batches as Prefect tasks, one output part per batch, resumable.

A batch is a contiguous slice of the input manifest, so batch i always holds the same rows and its part has a
deterministic name. Parts live in a folder keyed by a fingerprint of the input rows and the stage's config: a rerun
with the same inputs skips every part already written (writes are atomic, so an existing part is complete), and a
rerun with other settings cannot pick up stale parts.

Streaming. The flow's driver never holds the dataset: `map_batches` returns `Parts` (part paths, row counts and
one schema), tasks read their own rows from the parts they are given (a row range, or row positions), later steps
read just the columns they need, and `write_parts` writes the final manifest by streaming the parts into it. So
the driver's memory is bounded by a batch (times the thread runner's workers), not by the dataset: a 60 s clip's
row is ~35-40 KB with its per-frame action labels, ~11 GB for Sekai-Real-Walking's 299k clips if held at once.

Object storage. A part written on another node of a cluster, into an output that mirrors a bucket, is fetched when
first read (`yume_core.remote.ensure_local`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from tqdm.auto import tqdm

from pipelines.runners import CPU_TASK, Resources, Runner, worth_retrying
from yume_core.manifest import summarize, write_manifest
from yume_core.remote import ensure_local
from yume_core.storage import atomic_path, atomic_write_text

ROW_GROUP_BYTES = 64 << 20  # `write_parts`: rows buffered per row group of the merged file, at most (Arrow bytes)
ROW_GROUP_ROWS = 1 << 20  # and at most this many rows (Parquet's own default)


def _json_items(values: list) -> Iterator[bytes]:
    for v in values:
        yield json.dumps(v, default=str).encode()


def fingerprint(table: "pa.Table | Parts", settings: Any, columns: tuple[str, ...]) -> str:
    """Short hash of the given columns of the rows a stage will see, and of its settings.

    Hashes values, not Arrow buffers, so the same rows give the same hash however they were chunked, sliced or
    split into parts. `table` may be `Parts`: each column is then read part by part, never whole.
    """
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in columns:
        # the bytes of json.dumps(whole column as a list), produced a chunk at a time
        h.update(b"[")
        first = True
        for chunk in _column_chunks(table, name):
            for item in _json_items(chunk.to_pylist()):
                if not first:
                    h.update(b", ")
                h.update(item)
                first = False
        h.update(b"]")
    return h.hexdigest()[:12]


def _column_chunks(table: "pa.Table | Parts", name: str) -> Iterator[pa.Array]:
    if isinstance(table, Parts):
        for t in table.iter_tables([name]):
            yield from t[name].chunks
    else:
        yield from table[name].chunks


def conform_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the fields of `schema`, in its order and types (absent columns become nulls)."""
    n = table.num_rows
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


@dataclass(frozen=True)
class Parts:
    """A manifest held as Parquet files in order (a map's parts, or one manifest file): paths, row counts and the
    schema every part is read as. Small and picklable: what the driver keeps and what tasks are handed, instead of
    rows. `read`, `read_range` and `take` read only the rows (and columns) asked for."""

    paths: tuple[str, ...]
    counts: tuple[int, ...]
    schema: pa.Schema
    starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "starts", tuple(np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)]).tolist()))

    @classmethod
    def of_files(cls, paths: Sequence[str | Path], schema: pa.Schema | None = None) -> "Parts":
        """Parts over existing files; the schema is theirs unified (as concatenating them would), unless given."""
        paths = tuple(str(p) for p in paths)
        metas = [pq.read_metadata(ensure_local(p)) for p in paths]
        if schema is None:
            schemas = [pq.read_schema(p) for p in paths]  # the stored Arrow schema, as read_table restores it
            schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        return cls(paths, tuple(m.num_rows for m in metas), schema)

    @property
    def num_rows(self) -> int:
        return self.starts[-1]

    @property
    def column_names(self) -> list[str]:
        return self.schema.names

    def with_schema(self, schema: pa.Schema) -> "Parts":
        return Parts(self.paths, self.counts, schema)

    def _schema(self, columns: Sequence[str] | None) -> pa.Schema:
        if columns is None:
            return self.schema
        return pa.schema([self.schema.field(c) for c in columns], metadata=self.schema.metadata)

    def read(self, i: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Part i, conformed to the schema (or to its `columns`)."""
        schema = self._schema(columns)
        f = pq.ParquetFile(ensure_local(self.paths[i]))
        have = [c for c in schema.names if c in f.schema_arrow.names]
        return conform_to(f.read(columns=have), schema)

    def read_range(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows [start, stop) across the parts; reads only the row groups that hold them."""
        schema = self._schema(columns)
        stop = min(stop, self.num_rows)
        tables = []
        for i in range(len(self.paths)):
            lo, hi = self.starts[i], self.starts[i + 1]
            if hi <= start or lo >= stop or lo == hi:
                continue
            f = pq.ParquetFile(ensure_local(self.paths[i]))
            have = [c for c in schema.names if c in f.schema_arrow.names]
            a, b = max(start, lo) - lo, min(stop, hi) - lo  # rows wanted within this file
            groups, first, offset = [], None, 0
            for g in range(f.metadata.num_row_groups):
                n = f.metadata.row_group(g).num_rows
                if offset < b and offset + n > a:
                    groups.append(g)
                    first = offset if first is None else first
                offset += n
            t = f.read_row_groups(groups, columns=have)
            tables.append(conform_to(t.slice(a - first, b - a), schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def take(self, positions: np.ndarray | Sequence[int], columns: Sequence[str] | None = None) -> pa.Table:
        """Rows at sorted global `positions`, in that order; reads only the parts that hold them."""
        positions = np.asarray(positions, dtype=np.int64)
        schema = self._schema(columns)
        if not len(positions):
            return schema.empty_table()
        tables = []
        which = np.searchsorted(np.asarray(self.starts[1:]), positions, side="right")
        for i in np.unique(which):
            mine = positions[which == i] - self.starts[i]
            lo, hi = int(mine.min()), int(mine.max()) + 1
            part = self.with_schema(schema).read_range(self.starts[i] + lo, self.starts[i] + hi)
            tables.append(part.take(pa.array(mine - lo)))
        return pa.concat_tables(tables)

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Every row in order, a row group at a time (a part, or a row group of a large manifest file)."""
        schema = self._schema(columns)
        for path in self.paths:
            f = pq.ParquetFile(ensure_local(path))
            have = [c for c in schema.names if c in f.schema_arrow.names]
            for g in range(f.metadata.num_row_groups):
                yield conform_to(f.read_row_group(g, columns=have), schema)

    def columns(self, columns: Sequence[str]) -> pa.Table:
        """Just these columns of every row (for what needs a few small columns of all rows at once)."""
        cols = [c for c in columns if c in self.schema.names]
        tables = list(self.iter_tables(cols))
        return pa.concat_tables(tables) if tables else self._schema(cols).empty_table()

    def summarize(self) -> dict:
        return summarize(self.iter_tables(["status", "reason"]))


@dataclass(frozen=True)
class BatchPlan:
    parts_dir: Path
    batch_size: int
    num_rows: int

    @property
    def num_batches(self) -> int:
        return max(1, math.ceil(self.num_rows / self.batch_size)) if self.num_rows else 0

    def part(self, i: int) -> Path:
        return self.parts_dir / f"part-{i:05d}.parquet"

    def done(self, i: int, key: str | None = None) -> bool:
        """Part i exists (a part another node wrote into a mirrored output counts) and, given the batch's `key`
        (the identities of the files it reads, `yume_core.identity`), was written from files that are still those."""
        if not ensure_local(self.part(i)).exists():
            return False
        return key is None or read_key(key_path(self.part(i))) == key


def key_path(part: str | Path) -> Path:
    """Where a part's batch key is kept: beside it, not inside it, so the part's bytes (and the manifest merged from
    the parts) do not depend on when its input files were written."""
    return Path(part).with_suffix(".key")


def read_key(path: Path) -> str | None:
    try:
        return ensure_local(path).read_text().strip()
    except OSError:
        return None


def batch_rows(source: "pa.Table | Parts", start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of an in-memory table or of parts on disk."""
    if isinstance(source, Parts):
        return source.read_range(start, stop)
    return source.slice(start, stop - start)


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, retry_condition_fn=worth_retrying)
def run_batch(step: Callable[[pa.Table], pa.Table], batch: "pa.Table | Parts", part: str,
              rows: tuple[int, int] | None = None, key: str | None = None) -> dict:
    """`write_batch` as a Prefect task."""
    return write_batch(step, batch, part, rows, key)


def write_batch(step: Callable[[pa.Table], pa.Table], batch: "pa.Table | Parts", part: str,
                rows: tuple[int, int] | None = None, key: str | None = None) -> dict:
    """Run one stage over one batch and write its part; returns the batch's counts, not its rows.

    `batch`: the batch's rows, or `Parts` with `rows=(start, stop)`: the task reads its rows itself, so nothing
    larger than a reference crosses from the driver to the worker. `key`: the batch's file identities, kept in the
    part (`BatchPlan.done`)."""
    if rows is not None:
        batch = batch_rows(batch, *rows)
    out = step(batch)
    if out.num_rows != batch.num_rows:
        raise RuntimeError(f"stage {step} returned {out.num_rows} rows for a batch of {batch.num_rows}")
    write_manifest(out, part)
    if key:  # after the part: a part without its key is done again, never trusted with another batch's key
        atomic_write_text(key_path(part), key)
    return summarize(out)


def map_batches(
    step: Callable[[pa.Table], pa.Table],
    table: "pa.Table | Parts",
    parts_dir: str | Path,
    batch_size: int,
    name: str,
    runner: Runner,
    resources: Resources = CPU_TASK,
    keys: Sequence[str] | None = None,
    holds_model: bool = False,
) -> Parts:
    """Submit one task per batch not yet done through `runner` (each asking for `resources` on Ray), wait, and
    return the parts (in input order), not their rows.

    `table` in memory (an input just read) is sliced into the tasks; `Parts` (an earlier map's output) are read by
    each task itself, its batch's rows only. `keys`: per batch, the identities of the files it reads
    (`yume_core.identity.batch_keys`): a part written from files since replaced is done again. `holds_model`: the
    step loads a model and keeps it per process; on Ray its batches then go to restartable actors that keep it
    loaded (`pipelines.ray_actors`) instead of tasks, which Ray would give a fresh process each."""
    plan = BatchPlan(Path(parts_dir), batch_size, table.num_rows)
    plan.parts_dir.mkdir(parents=True, exist_ok=True)
    key = (lambda i: keys[i]) if keys is not None else (lambda i: None)
    todo = [i for i in range(plan.num_batches) if not plan.done(i, key(i))]

    def batch(i: int) -> dict:
        """Batch i's arguments of `write_batch`, less the step."""
        start, stop = i * batch_size, min((i + 1) * batch_size, table.num_rows)
        if isinstance(table, Parts):
            return {"batch": table, "part": str(plan.part(i)), "rows": (start, stop), "key": key(i)}
        return {"batch": table.slice(start, stop - start), "part": str(plan.part(i)), "key": key(i)}

    skipped = plan.num_batches - len(todo)
    if todo:
        runner.require(resources, name)  # on Ray: stops before the progress bar when no node can take a batch
    with tqdm(total=plan.num_batches, initial=skipped, desc=name, unit="batch", leave=False) as bar:
        if holds_model and runner.on_ray:
            from pipelines.ray_actors import run_on_actors

            jobs = [(f"{name}-{i:05d}", batch(i)) for i in todo]
            run_on_actors(step, jobs, runner, resources, name, on_done=lambda: bar.update(1))
        else:
            futures = [runner.submit(run_batch, {"step": step, **batch(i)}, f"{name}-{i:05d}", resources)
                       for i in todo]
            for fut in as_completed(futures):
                fut.result()  # re-raise a batch's crash here, after its retries
                bar.update(1)
    return plan_parts(plan, table)


def plan_parts(plan: BatchPlan, table: "pa.Table | Parts") -> Parts:
    """The plan's parts, checked to hold as many rows as its input (an empty input gives no parts)."""
    parts = Parts.of_files([plan.part(i) for i in range(plan.num_batches)])
    if not parts.paths:
        return Parts((), (), table.schema)
    if parts.num_rows != table.num_rows:
        raise RuntimeError(f"parts in {plan.parts_dir} hold {parts.num_rows} rows, expected {table.num_rows}")
    return parts


def read_parts(plan: BatchPlan, table: pa.Table) -> pa.Table:
    """All parts concatenated in memory (for small manifests, e.g. a few thousand prompts; flows over clips stream
    `Parts` instead)."""
    parts = [pq.read_table(plan.part(i)) for i in range(plan.num_batches)]
    if not parts:
        return table
    out = pa.concat_tables(parts, promote_options="permissive")
    if out.num_rows != table.num_rows:
        raise RuntimeError(f"parts in {plan.parts_dir} hold {out.num_rows} rows, expected {table.num_rows}")
    return out


def write_parts(tables: "Iterator[pa.Table] | Parts", path: str | Path, schema: pa.Schema,
                metadata: dict[str, str] | None = None) -> Path:
    """Write a manifest (atomically, zstd, as `write_manifest`) from tables streamed in order, holding at most one
    row group's rows (`ROW_GROUP_BYTES`, `ROW_GROUP_ROWS`) at a time.

    Row groups close at those bounds, a deterministic function of the rows, so the same rows give the same bytes;
    a manifest within one row group is byte for byte the file `write_manifest` writes from the tables concatenated.
    """
    if isinstance(tables, Parts):
        tables = tables.iter_tables()
    if metadata:
        merged = dict(schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        schema = schema.with_metadata(merged)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = None
        buffer: list[pa.Table] = []
        rows = size = 0

        def flush():
            nonlocal writer, buffer, rows, size
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            if buffer:
                writer.write_table(pa.concat_tables(buffer).replace_schema_metadata(schema.metadata),
                                   row_group_size=ROW_GROUP_ROWS)
            buffer, rows, size = [], 0, 0

        for t in tables:
            t = t.replace_schema_metadata(schema.metadata)
            while t.num_rows:
                take = min(t.num_rows, ROW_GROUP_ROWS - rows)
                buffer.append(t.slice(0, take))
                rows += take
                size += t.slice(0, take).nbytes
                t = t.slice(take)
                if rows >= ROW_GROUP_ROWS or size >= ROW_GROUP_BYTES:
                    flush()
        if buffer or writer is None:
            flush()
        writer.close()
    return path

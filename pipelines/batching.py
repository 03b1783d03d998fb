"""Map a stage over a manifest in batches as Prefect tasks, one output part per batch, resumable.

A batch is a contiguous slice of the input manifest, so batch i always holds the same rows and its part has a
deterministic name. Parts live in a folder keyed by a fingerprint of the input rows and the stage's config: a rerun
with the same inputs skips every part already written (writes are atomic, so an existing part is complete), and a
rerun with other settings cannot pick up stale parts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from tqdm.auto import tqdm

from yume_core.manifest import summarize, write_manifest


def fingerprint(table: pa.Table, settings: Any, columns: tuple[str, ...]) -> str:
    """Short hash of the given columns of the rows a stage will see, and of its settings.

    Hashes values, not Arrow buffers, so the same rows give the same hash however they were chunked or sliced.
    """
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in columns:
        h.update(json.dumps(table[name].to_pylist(), default=str).encode())
    return h.hexdigest()[:12]


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

    def done(self, i: int) -> bool:
        return self.part(i).exists()


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def run_batch(step: Callable[[pa.Table], pa.Table], batch: pa.Table, part: str) -> dict:
    """Run one stage over one batch and write its part; returns the batch's counts, not its rows."""
    out = step(batch)
    if out.num_rows != batch.num_rows:
        raise RuntimeError(f"stage {step} returned {out.num_rows} rows for a batch of {batch.num_rows}")
    write_manifest(out, part)
    return summarize(out)


def map_batches(
    step: Callable[[pa.Table], pa.Table],
    table: pa.Table,
    parts_dir: str | Path,
    batch_size: int,
    name: str,
) -> pa.Table:
    """Submit one task per batch not yet done, wait, and return all parts concatenated in input order."""
    plan = BatchPlan(Path(parts_dir), batch_size, table.num_rows)
    plan.parts_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(plan.num_batches) if not plan.done(i)]
    futures = [
        run_batch.with_options(task_run_name=f"{name}-{i:05d}").submit(
            step, table.slice(i * batch_size, batch_size), str(plan.part(i))
        )
        for i in todo
    ]
    skipped = plan.num_batches - len(todo)
    with tqdm(total=plan.num_batches, initial=skipped, desc=name, unit="batch", leave=False) as bar:
        for fut in as_completed(futures):
            fut.result()  # re-raise a batch's crash here, after its retries
            bar.update(1)
    return read_parts(plan, table)


def read_parts(plan: BatchPlan, table: pa.Table) -> pa.Table:
    parts = [pq.read_table(plan.part(i)) for i in range(plan.num_batches)]
    if not parts:
        return table
    out = pa.concat_tables(parts, promote_options="permissive")
    if out.num_rows != table.num_rows:
        raise RuntimeError(f"parts in {plan.parts_dir} hold {out.num_rows} rows, expected {table.num_rows}")
    return out

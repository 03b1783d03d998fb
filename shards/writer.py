"""The shard folder's protocol: which shards are done, how a rerun resumes, and the merged index.

Layout of a shard folder:

    {prefix}-000000.tar, {prefix}-000001.tar, ...     plain WebDataset tars (uncompressed; mp4 is compressed already)
    _index/{prefix}-000000.parquet, ...               index part of each tar, written right after it
    _index/{prefix}-000000.done.json, ...             completion marker of each tar, written after its index part
    index.parquet                                     all parts merged (what readers and `verify_shards` use)

A shard is done when its tar, its index part and its marker exist (each written atomically, in that order), the tar
matches the marker, and, when the planned rows are known, the part was written from the same inputs (a fingerprint
of the rows' sample columns, the shard settings and the provenance, kept in the part's metadata). So a killed run
leaves only complete shards and a rerun redoes the rest; a flow can write shards in parallel tasks
(`write_shard_part`) and merge at the end (`merge_index`). The tar bytes themselves come from `shards.tario`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.config import ShardConfig
from shards.keys import sample_keys
from shards.plan import ok_positions, plan_shards, shard_name
from shards.sample import SampleContext, SampleSpec, now_iso
from shards.tario import INDEX_SCHEMA, write_tar
from yume_core.manifest import OK, mark_each, put_column
from yume_core.remote import drop_uploaded, ensure_local
from yume_core.storage import TMP_MARK, atomic_path, atomic_write_text

INDEX_FILE = "index.parquet"
FINGERPRINT_KEY = b"yume_shard_fingerprint"  # index part metadata: what the shard was written from
INDEX_DIR = "_index"
MARKER_SUFFIX = ".done.json"  # `_index/<shard>.done.json`: size, sha256 and samples of a finished shard


def index_part_path(out_dir: str | Path, i_or_name: int | str, config: ShardConfig | None = None) -> Path:
    name = shard_name(i_or_name, config) if isinstance(i_or_name, int) else i_or_name
    return Path(out_dir) / INDEX_DIR / (Path(name).stem + ".parquet")


def _fingerprint(rows: pa.Table, ctx: SampleContext) -> str:
    """sha256 of what a shard's bytes are made of: the ok rows' sample columns, the shard settings (except
    `threads`), the caller's provenance (except `created`) and the set's sample settings (schema version, set,
    tasks, ...). Source files are represented by path (as provenance records it, so a build moved elsewhere still
    resumes) and size."""
    ok = rows.take(pa.array(ok_positions(rows)))
    cols = sorted(c for c in ok.column_names if ctx.spec.covers(c))
    table = ok.select(cols).replace_schema_metadata(None).combine_chunks()
    for i, name in enumerate(cols):
        if name.endswith("_path") and pa.types.is_string(table.schema.field(name).type):
            recorded = pa.array([ctx.spec.source(p) for p in table[name].to_pylist()], pa.string())
            table = table.set_column(i, name, recorded)
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
    index, digest, nbytes = write_tar(table_rows, tar, ctx)
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


def attach_shards(manifest: pa.Table, index: pa.Table, key_column: str = "clip_id") -> pa.Table:
    """Record each ok row's shard in the manifest (its `shard` column); a row whose sample could not be written
    fails with the reason from the index, so every row of the manifest ends ok, dropped or failed.

    `key_column`: the manifest column the index's `clip_id` was made from (a set manifest's `prompt_id`)."""
    by_clip = {r["clip_id"]: r for r in index.select(["clip_id", "shard", "status", "reason", "error"]).to_pylist()}
    keys = manifest[key_column].cast(pa.string()).to_pylist()
    rows = [by_clip.get(c) if s == OK else None for c, s in zip(keys, manifest["status"].to_pylist())]
    shard = pa.array([r and r["shard"] for r in rows], pa.string())
    manifest = put_column(manifest, pa.field("shard", pa.string()), shard)
    failed = [r if r and r["status"] != OK else None for r in rows]
    return mark_each(manifest, [r and r["reason"] for r in failed], [r and r["error"] for r in failed])


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

"""A set folder as a prepared Megatron-Energon dataset, written from the shard index (no tar is read again).

Energon (v7) loads a webdataset folder that has

    .nv-meta/dataset.yaml   the sample type: here a crude webdataset (raw member bytes; a cooker in the user's
                            task encoder picks them up) with subflavors naming the set and its tasks
    .nv-meta/split.yaml     split_parts: {train: [shard names]}
    .nv-meta/.info.json     {energon_version, shard_counts: {shard name: samples}}
    <shard>.tar.idx         beside each tar: the byte offset of every sample's first member, then the offset where
                            the archive's end blocks start (little-endian uint64s), which lets Energon slice shards

`energon prepare` writes the same by reading every tar; here the writer's index already holds each sample's offset
so preparing a set costs a Parquet read and the last sample's tar headers per shard. Files are written atomically and in a
fixed order, so a rebuild gives the same bytes.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from shards.writer import INDEX_FILE
from yume_core.manifest import OK
from yume_core.remote import open_staged
from yume_core.storage import atomic_path, atomic_write_text

META_DIR = ".nv-meta"
IDX_SUFFIX = ".idx"  # energon's `<shard>.tar.idx`
ENERGON_FORMAT = "7"  # the energon_version recorded: the format written here is Energon 7's


def _archive_end(tar_path: Path, last_offset: int) -> int:
    """Where the tar's end blocks start: read the last sample's member headers only (tarfile seeks over data)."""
    with open_staged(tar_path) as f:  # in a folder that mirrors a bucket, the tar may be there only
        f.seek(last_offset)
        with tarfile.open(fileobj=f, mode="r:") as tar:  # starts at the file's position
            for _ in tar:
                pass
            return tar.offset


def _shard_offsets(tar_path: Path, rows: list[dict]) -> np.ndarray:
    """A shard's `.tar.idx` values from its index rows (in tar order)."""
    offsets = [int(r["offset"]) for r in rows]
    offsets.append(_archive_end(tar_path, offsets[-1]))
    return np.asarray(offsets, dtype="<u8")


def prepare_energon(set_dir: str | Path, set_name: str, index: pa.Table | None = None,
                    tasks: tuple[str, ...] | None = None) -> Path:
    """Write `.nv-meta/` and the `.tar.idx` files of `set_dir` from its index (default: `set_dir/index.parquet`).

    `tasks` (default: those the samples train, from the index) goes into the subflavors beside the set name."""
    set_dir = Path(set_dir)
    if index is None:
        index = pq.read_table(set_dir / INDEX_FILE)
    ok = index.filter(pc.equal(index["status"], OK)).select(["shard", "position", "offset", "tasks"])
    by_shard: dict[str, list[dict]] = {}
    for row in ok.to_pylist():
        by_shard.setdefault(row["shard"], []).append(row)
    counts = {}
    for shard in sorted(by_shard):
        rows = sorted(by_shard[shard], key=lambda r: r["position"])
        counts[shard] = len(rows)
        with atomic_path(set_dir / f"{shard}{IDX_SUFFIX}") as tmp:
            Path(tmp).write_bytes(_shard_offsets(set_dir / shard, rows).tobytes())
    if tasks is None:
        found = {t for r in ok.column("tasks").to_pylist() for t in (r or [])}
        tasks = tuple(t for t in ("t2v", "i2v") if t in found)
    meta = set_dir / META_DIR
    dataset = {
        "__module__": "megatron.energon",
        "__class__": "CrudeWebdataset",
        "subflavors": {"set": set_name, "tasks": "+".join(tasks)},
    }
    atomic_write_text(meta / "dataset.yaml", yaml.safe_dump(dataset, sort_keys=False))
    atomic_write_text(meta / "split.yaml", yaml.safe_dump({"split_parts": {"train": sorted(counts)}, "exclude": []},
                                                          sort_keys=False))
    atomic_write_text(meta / ".info.json", json.dumps({"energon_version": ENERGON_FORMAT, "shard_counts": counts},
                                                      indent=2, sort_keys=True) + "\n")
    return meta

"""Which rows go into which shard: a deterministic function of the manifest and the config.

Rows are the manifest's `ok` rows in manifest order. Shards are filled greedily: a shard takes rows while it holds
at most `max_count` samples and its estimated size (the samples' estimates plus the tar trailer) stays at or below
`max_bytes`; the row that would break either limit opens the next shard. A row whose estimate alone exceeds
`max_bytes` gets a shard to itself. Each boundary is one `searchsorted` on the cumulative byte estimate, so planning
a million rows takes milliseconds, and a rerun (or a flow task per shard) maps the same rows to the same names.

The byte estimate of a sample (`estimate_sample_bytes`) is computed from manifest columns only, never by opening
files (except `stat` for rows whose `video_bytes` is missing): the mp4's size, the npy's exact size
(128 + 64 per pose), the start image's size (`image_bytes`, event samples), the json's string columns plus a
per-frame allowance for the action lists, and 1 KiB of tar header and padding per member. When transcoding, the source's size stands in for the (unknown) output size.
"""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shards.config import ShardConfig
from shards.sample import CAPTION_PREFIXES, META_FIELDS
from yume_core.manifest import OK

TAR_MEMBER_OVERHEAD = 2 * tarfile.BLOCKSIZE  # header block + at most one block of padding
PAX_OVERHEAD = 3 * tarfile.BLOCKSIZE  # per member, for keys too long for a plain ustar name
TAR_TRAILER_BYTES = 2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE  # end-of-archive blocks + record padding, at most
JSON_BASE_BYTES = 4096  # field names, numbers, shard settings, the caller's provenance
JSON_BYTES_PER_FRAME = 24  # one key and one mouse label per step (~14 B) + segments and chunks


def shard_name(i: int, config: ShardConfig | None = None) -> str:
    """`{prefix}-{i:06d}.tar`."""
    prefix = (config or ShardConfig()).prefix
    return f"{prefix}-{i:06d}.tar"


def ok_positions(table: pa.Table) -> np.ndarray:
    """Positions of the `ok` rows, in manifest order."""
    if "status" not in table.column_names:
        return np.arange(table.num_rows, dtype=np.int64)
    mask = pc.fill_null(pc.equal(table["status"], OK), False)
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False)).astype(np.int64)


def _int_column(table: pa.Table, name: str) -> np.ndarray | None:
    if name not in table.column_names:
        return None
    return pc.fill_null(table[name].cast(pa.int64()), -1).to_numpy(zero_copy_only=False)


def _str_bytes(table: pa.Table, name: str) -> np.ndarray:
    col = table[name]
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return np.zeros(table.num_rows, np.int64)
    return pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def estimate_sample_bytes(table: pa.Table, config: ShardConfig | None = None) -> np.ndarray:
    """Estimated tar bytes of each row's sample (all rows of `table`, int64); see the module docstring."""
    config = config or ShardConfig()
    n = table.num_rows
    video = _int_column(table, "video_bytes")
    video = np.full(n, -1, np.int64) if video is None else video.astype(np.int64)
    missing = np.flatnonzero(video < 0)
    if len(missing):
        paths = table["video_path"].to_pylist() if "video_path" in table.column_names else [None] * n
        for i in missing:
            try:
                video[i] = os.stat(paths[i]).st_size if paths[i] else 0
            except OSError:
                video[i] = 0  # will fail as video_missing when written

    frames = _int_column(table, "num_poses")
    vframes = _int_column(table, "video_frames")
    if frames is None:
        frames = vframes if vframes is not None else np.zeros(n, np.int64)
    elif vframes is not None:
        frames = np.where(frames >= 0, frames, vframes)
    frames = np.maximum(frames, 0)

    strings = ["caption", "video_path", "camera_path", "clip_id", "source", *META_FIELDS]
    strings += [c for c in table.column_names if c.startswith(CAPTION_PREFIXES)]
    json_bytes = np.full(n, JSON_BASE_BYTES, np.int64)
    for name in strings:
        if name in table.column_names:
            json_bytes += _str_bytes(table, name)
    json_bytes += JSON_BYTES_PER_FRAME * frames

    members = np.full(n, 2, np.int64)
    est = video + json_bytes
    image = _int_column(table, "image_bytes")  # an event sample's start image (`<key>.jpg`)
    if image is not None:
        est += np.maximum(image, 0)
        members += image >= 0
    if config.include_poses and "camera_path" in table.column_names:
        has_poses = pc.is_valid(table["camera_path"]).to_numpy(zero_copy_only=False)
        est += np.where(has_poses, 128 + 64 * frames, 0)
        members += has_poses
    per_member = np.full(n, TAR_MEMBER_OVERHEAD, np.int64)
    if "clip_id" in table.column_names:
        per_member += np.where(_str_bytes(table, "clip_id") > 90, PAX_OVERHEAD, 0)
    return est + members * per_member


PLAN_COLUMNS = ("status", "video_bytes", "video_path", "num_poses", "video_frames", "image_bytes", "camera_path",
                "caption", "clip_id", "source", *META_FIELDS)


def plan_columns(names) -> list[str]:
    """The columns of a manifest with these column names that planning reads (`status` and what
    `estimate_sample_bytes` looks at): a flow reads just these to plan, never the action lists."""
    wanted = set(PLAN_COLUMNS) | {n for n in names if n.startswith(CAPTION_PREFIXES)}
    return [n for n in names if n in wanted]


def plan_shards(table: pa.Table, config: ShardConfig | None = None) -> list[np.ndarray]:
    """Group the ok rows of `table` into shards; returns one int64 array of row positions in `table` per shard."""
    config = config or ShardConfig()
    pos = ok_positions(table)
    if len(pos) == 0:
        return []
    return group_rows(pos, estimate_sample_bytes(table.take(pa.array(pos)), config), config)


def group_rows(pos: np.ndarray, est: np.ndarray, config: ShardConfig | None = None) -> list[np.ndarray]:
    """The greedy grouping of `plan_shards`, given the ok rows' positions and their estimates, in order. A flow that
    holds its manifest as parts computes both part by part (both are per row) and plans the whole set here."""
    config = config or ShardConfig()
    pos = np.asarray(pos, dtype=np.int64)
    if len(pos) == 0:
        return []
    cum = np.concatenate([[0], np.cumsum(est, dtype=np.int64)])
    budget = config.max_bytes - TAR_TRAILER_BYTES
    groups, start, n = [], 0, len(pos)
    while start < n:
        end = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1  # last prefix within budget
        end = max(start + 1, min(end, start + config.max_count, n))
        groups.append(pos[start:end])
        start = end
    return groups

"""WebDataset shards of the clip manifest, their Parquet index and checks, and Yume's own folder layout.

    config = ShardConfig(max_count=1000, max_bytes=2_000_000_000)
    index = write_shards(manifest, "out/shards", config, provenance={"actions": {...}})   # resumable
    report = verify_shards("out/shards"); print(format_report(report))
    export_yume(manifest, "out/yume")                                                   # Keys_*_Mouse_*/...
    write_set_shards("filtered/manifest.parquet", "out/synthetic", "synthetic")         # + .nv-meta/ (Energon)

A flow writes shards in parallel with `plan_shards` + `write_shard_part` (one task per shard, skipped when
`shard_done`) + `merge_index`, then `attach_shards` records each row's shard (or why it failed) in its manifest.
Formats are described in shards/README.md.
"""

from shards.config import ShardConfig
from shards.energon import prepare_energon
from shards.keys import KeyCollisionError, sample_keys, sanitize_key
from shards.plan import TAR_TRAILER_BYTES, estimate_sample_bytes, group_rows, plan_columns, plan_shards, shard_name
from shards.sample import REQUIRED_JSON_FIELDS, build_sample, load_poses, member_records
from shards.sets import set_spec, set_stats, start_image_jpeg, write_set_shards
from shards.tario import INDEX_SCHEMA
from shards.verify import VerifyReport, format_report, verify_shards
from shards.writer import (
    INDEX_FILE,
    attach_shards,
    index_part_path,
    marker_path,
    merge_index,
    read_marker,
    remove_stale_shards,
    remove_temp_files,
    shard_done,
    write_shard_part,
    write_shards,
)
from shards.yume_layout import EXPORT_SCHEMA, MOUSE_WORDS, export_yume, folder_name, segment_stem, segment_text

__all__ = [
    "EXPORT_SCHEMA",
    "INDEX_FILE",
    "INDEX_SCHEMA",
    "KeyCollisionError",
    "MOUSE_WORDS",
    "REQUIRED_JSON_FIELDS",
    "ShardConfig",
    "TAR_TRAILER_BYTES",
    "VerifyReport",
    "attach_shards",
    "build_sample",
    "estimate_sample_bytes",
    "export_yume",
    "folder_name",
    "format_report",
    "group_rows",
    "index_part_path",
    "marker_path",
    "load_poses",
    "member_records",
    "merge_index",
    "plan_columns",
    "plan_shards",
    "prepare_energon",
    "read_marker",
    "remove_stale_shards",
    "remove_temp_files",
    "sample_keys",
    "sanitize_key",
    "segment_stem",
    "segment_text",
    "set_spec",
    "set_stats",
    "shard_done",
    "shard_name",
    "start_image_jpeg",
    "verify_shards",
    "write_shard_part",
    "write_set_shards",
    "write_shards",
]

"""The clip manifest: one Parquet row per input item, with a declared Arrow schema.

Every stage adds columns and never drops rows; each row carries a status so that counts in equal counts out.
`reason` is a short machine-readable code (what a summary counts by), `error` the sentence a person acts on.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yume_core.errors import InputError
from yume_core.storage import atomic_path

OK = "ok"
DROPPED = "dropped"
FAILED = "failed"
STATUSES = (OK, DROPPED, FAILED)

SEGMENT_TYPE = pa.struct(
    [
        ("start_frame", pa.int32()),  # first frame of the run (inclusive)
        ("end_frame", pa.int32()),  # last frame of the run (inclusive), Yume's convention
        ("keys", pa.string()),
        ("mouse", pa.string()),
        ("agreement", pa.float32()),  # share of steps that carry the label (1.0 for runs)
        ("phrase", pa.string()),  # the label in words, from the configured action vocabulary
    ]
)

# The figures behind a clip's trajectory flags (quantize_actions/checks.py); ratios are in the clip's own steps,
# frames are the clip's own (0 = its first pose); null where a check had nothing to judge.
TRAJECTORY_FIGURES_TYPE = pa.struct(
    [
        ("step", pa.float64()),  # typical frame-to-frame step while moving, in the trajectory's units
        ("path_step", pa.float64()),  # path speed per frame over 0.5 s moving windows (null: the clip never moves)
        ("jitter", pa.float32()),  # worst rolling median prediction error, in path steps
        ("jitter_frame", pa.int32()),
        ("jump", pa.float32()),  # longest step, in typical steps
        ("jump_frame", pa.int32()),
        ("frozen_frames", pa.int32()),  # longest run of unchanged poses (0: none)
        ("frozen_frame", pa.int32()),
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source", pa.string()),
        ("csv_row", pa.int64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
        # as given in the Sekai CSV
        ("video_file", pa.string()),
        ("camera_file", pa.string()),
        ("youtube_id", pa.string()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("caption", pa.string()),
        ("location", pa.string()),
        ("scene", pa.string()),
        ("crowd_density", pa.string()),
        ("weather", pa.string()),
        ("time_of_day", pa.string()),
        # resolved inputs and what probing them found
        ("video_path", pa.string()),
        ("camera_path", pa.string()),
        ("video_bytes", pa.int64()),
        ("video_mtime_ns", pa.int64()),  # with video_bytes: tells later steps whether the file changed
        ("video_sha256", pa.string()),  # hashed once while probing; shards reuse it for an unchanged file
        ("video_codec", pa.string()),
        ("video_fps", pa.float64()),
        ("video_frames", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_poses", pa.int64()),
        # actions: one label per frame step, then runs and fixed chunks
        ("keys", pa.list_(pa.string())),
        ("mouse", pa.list_(pa.string())),
        ("segments", pa.list_(SEGMENT_TYPE)),
        ("chunks", pa.list_(SEGMENT_TYPE)),
        ("speed", pa.float64()),
        ("turn_deg", pa.float64()),
        ("view_rotation_deg", pa.float64()),
        # trajectory checks: jitter / jump / frozen ([] when clean) and the figures behind them
        ("trajectory_flags", pa.list_(pa.string())),
        ("trajectory_figures", TRAJECTORY_FIGURES_TYPE),
        # where the clip landed: shard file name (null for rows that are not ok)
        ("shard", pa.string()),
    ]
)


def conform(table: pa.Table, schema: pa.Schema = CLIP_SCHEMA) -> pa.Table:
    """Order and type columns as the schema says; missing columns become nulls, extra ones are kept at the end.

    Keeping extras lets later stages (captions, scores) ride along without this module knowing them.
    """
    n = table.num_rows
    cols, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
        fields.append(f)
    for name in table.column_names:
        if name not in schema.names:
            cols.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=table.schema.metadata))


def put_column(table: pa.Table, field: pa.Field | str, values) -> pa.Table:
    """Replace the column if the table has it, else append it: a stage run again over its own output (a filtered
    manifest filtered again, a second decisions file) must not end with two columns of one name."""
    name = field.name if isinstance(field, pa.Field) else field
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), field, values)
    return table.append_column(field, values)


def write_manifest(table: pa.Table, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write atomically, so a reader (or a resumed run) never sees half a manifest."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_manifest(path: str | Path) -> pa.Table:
    """The table; InputError naming the file when it is missing or not Parquet (a CSV passed by mistake, a
    truncated download)."""
    from yume_core import remote

    try:
        return remote.read_parquet(str(path)) if remote.is_url(str(path)) else pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(path, f"cannot be read as a Parquet manifest ({exc})",
                         "pass a manifest.parquet that a yume-data command wrote") from exc


def read_manifest_schema(path: str | Path) -> pa.Schema:
    """The manifest's schema, from its footer alone (no rows read); the same errors as `read_manifest`. Both take
    a URL too."""
    from yume_core import remote

    try:
        return remote.read_parquet_schema(str(path)) if remote.is_url(str(path)) else pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(path, f"cannot be read as a Parquet manifest ({exc})",
                         "pass a manifest.parquet that a yume-data command wrote") from exc


def mark(table: pa.Table, mask: pa.Array, status: str, reason: str, error: pa.Array | str) -> pa.Table:
    """Set status/reason/error where `mask` is true and the row is still ok; earlier verdicts win."""
    assert status in STATUSES
    still_ok = pc.equal(table["status"], OK)
    hit = pc.and_(pc.fill_null(mask, False), still_ok)
    n = table.num_rows
    err = pa.array([error] * n, pa.string()) if isinstance(error, str) else error
    out = table
    for name, value in (("status", pa.array([status] * n)), ("reason", pa.array([reason] * n)), ("error", err)):
        idx = out.schema.get_field_index(name)
        out = out.set_column(idx, name, pc.if_else(hit, value, out[name]))
    return out


def mark_each(table: pa.Table, reasons: list, messages: list, status: str = FAILED) -> pa.Table:
    """Per-row verdicts: row i gets `status` with reasons[i] and messages[i] where reasons[i] is set."""
    msgs = pa.array(messages, pa.string())
    for reason in sorted({r for r in reasons if r}):
        table = mark(table, pa.array([r == reason for r in reasons]), status, reason, msgs)
    return table


def summarize(tables: Iterable[pa.Table] | pa.Table) -> dict:
    """Counts in / ok / dropped / failed, and dropped and failed by reason."""
    if isinstance(tables, pa.Table):
        tables = [tables]
    status: Counter = Counter()
    reasons: Counter = Counter()
    for t in tables:
        for s, r in zip(t["status"].to_pylist(), t["reason"].to_pylist()):
            status[s] += 1
            if s != OK:
                reasons[(s, r)] += 1
    total = sum(status.values())
    return {
        "in": total,
        "ok": status[OK],
        "dropped": status[DROPPED],
        "failed": status[FAILED],
        "by_reason": [
            {"status": s, "reason": r, "count": c} for (s, r), c in sorted(reasons.items(), key=lambda kv: -kv[1])
        ],
    }


def format_summary(summary: dict, title: str = "summary") -> str:
    lines = [
        f"{title}: in {summary['in']} | ok {summary['ok']} | dropped {summary['dropped']} | failed {summary['failed']}"
    ]
    for row in summary["by_reason"]:
        lines.append(f"  {row['status']:<8} {row['reason']:<28} {row['count']}")
    return "\n".join(lines)

"""The manifest stage: camera files -> per-step action labels, segments, chunks and motion metrics as columns.

Rows are processed in batches of a few hundred clips. A thread pool reads the files (the next batch loads while the
current one is computed); the batch is then screened for non-finite or non-rigid poses in one vectorised pass (only
clips that fail are re-checked one by one, to word their error), and the rule, segmentation and metrics run over
the whole batch as one flat array. Arrow columns are assembled from flat code arrays and offsets, with no Python
string per frame. A file that cannot be used marks its row failed with the RowError's reason and message; every
row is kept, in order.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.checks import check_batch, drop_flagged
from quantize_actions.config import QuantizeConfig
from quantize_actions.labels import key_strings, mouse_strings
from quantize_actions.metrics import motion_metrics_batch
from quantize_actions.modes import label_batch
from quantize_actions.segments import fixed_chunks, segment_runs
from quantize_actions.trajectory_io import find_trajectory_files, read_or_error
from quantize_actions.validate import invalid_frames, validate_poses
from yume_core.errors import RowError
from yume_core.manifest import FAILED, OK, conform

ACTION_COLUMNS = ("num_poses", "keys", "mouse", "segments", "chunks", "speed", "turn_deg", "view_rotation_deg",
                  "trajectory_flags", "trajectory_figures")
FILE_COLUMNS = ("clip_id", "path", "status", "reason", "error") + ACTION_COLUMNS
CONFIG_METADATA_KEY = b"yume_data.quantize_actions.config"
DEFAULT_BATCH_SIZE = 256  # ~60 MB of float64 poses for 1800-frame clips: large enough to amortise, small to hold


def action_columns(batch: TrajectoryBatch, config: QuantizeConfig = QuantizeConfig()) -> dict[str, pa.Array]:
    """All action columns for a batch of valid trajectories, one entry per trajectory."""
    labels = label_batch(batch, config)
    offsets = pa.array(labels.offsets, pa.int32())
    metrics = motion_metrics_batch(batch, config.fps)
    flags, figures = check_batch(batch, config.checks).to_arrow()
    return {
        "num_poses": pa.array(batch.lengths, pa.int64()),
        "keys": pa.ListArray.from_arrays(offsets, key_strings(labels.keys)),
        "mouse": pa.ListArray.from_arrays(offsets, mouse_strings(labels.mouse)),
        "segments": segment_runs(labels, config).to_arrow(),
        "chunks": fixed_chunks(labels, config).to_arrow(),
        **{name: pa.array(values, pa.float64()) for name, values in metrics.items()},
        "trajectory_flags": flags,
        "trajectory_figures": figures,
    }


def _screen(loaded: list, sources: list[str | None]) -> tuple[TrajectoryBatch, list[int], list[tuple[int, RowError]]]:
    """The batch of usable trajectories, their positions in `loaded`, and (position, error) for the others."""
    errors = [(i, x) for i, x in enumerate(loaded) if isinstance(x, RowError)]
    read = [i for i, x in enumerate(loaded) if not isinstance(x, RowError)]
    batch = TrajectoryBatch.from_list([loaded[i] for i in read])
    bad_frames = invalid_frames(batch.columns)
    if not bad_frames.any():
        return batch, read, errors
    bad_clip = np.bincount(batch.clip_of_frame[bad_frames], minlength=len(read)) > 0
    for j in np.flatnonzero(bad_clip):
        try:
            validate_poses(loaded[read[j]], source=str(sources[read[j]]))
        except RowError as e:
            errors.append((read[j], e))
        else:  # the screen and the per-clip check share their arithmetic; they cannot disagree
            raise AssertionError(f"{sources[read[j]]}: batch screen and validate_poses disagree")
    return batch.select(~bad_clip), [i for i, bad in zip(read, bad_clip) if not bad], errors


def _replace_rows(table: pa.Table, name: str, rows: np.ndarray, values: pa.Array) -> pa.Table:
    """Column `name` with rows[i] set to values[i]: one concat + take, however many rows change."""
    if len(rows) == 0:
        return table
    i = table.schema.get_field_index(name)
    base = table.column(i).combine_chunks()
    order = np.arange(len(base))
    order[rows] = len(base) + np.arange(len(rows))
    merged = pa.concat_arrays([base, values.cast(base.type)]).take(pa.array(order))
    return table.set_column(i, table.schema.field(i), merged)


def quantize_table(
    table: pa.Table,
    config: QuantizeConfig = QuantizeConfig(),
    *,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> pa.Table:
    """Fill the action columns of every `ok` row from its `camera_path`; other rows pass through untouched. A row
    whose trajectory carries a flag named in `config.drop_flags` is dropped (reason `trajectory_<flag>`), its
    columns kept for inspection.

    Returns the table conformed to CLIP_SCHEMA, same rows in the same order, with the config in the schema metadata.
    """
    table = conform(table)
    todo = np.flatnonzero(pc.fill_null(pc.equal(table["status"], OK), False).to_numpy(zero_copy_only=False))
    paths = table["camera_path"].take(pa.array(todo, pa.int64())).to_pylist()
    done_rows, done_parts, failed_rows, failed = [], [], [], []
    if len(todo):
        with ThreadPoolExecutor(workers) as pool:

            def submit(lo: int) -> list[Future]:
                return [pool.submit(read_or_error, p) for p in paths[lo : lo + batch_size]]

            ahead = submit(0)
            for lo in range(0, len(todo), batch_size):
                current, ahead = ahead, submit(lo + batch_size)
                batch, good, errors = _screen([f.result() for f in current], paths[lo : lo + batch_size])
                failed_rows.extend(todo[lo + i] for i, _ in errors)
                failed.extend(e for _, e in errors)
                if good:
                    done_rows.append(todo[lo + np.array(good)])
                    done_parts.append(action_columns(batch, config))

    out = table
    if done_parts:
        rows = np.concatenate(done_rows)
        for name in ACTION_COLUMNS:
            out = _replace_rows(out, name, rows, pa.concat_arrays([part[name] for part in done_parts]))
    rows = np.array(failed_rows, np.int64)
    out = _replace_rows(out, "status", rows, pa.array([FAILED] * len(failed), pa.string()))
    out = _replace_rows(out, "reason", rows, pa.array([e.reason for e in failed], pa.string()))
    out = _replace_rows(out, "error", rows, pa.array([e.message for e in failed], pa.string()))
    out = drop_flagged(out, config)
    metadata = dict(out.schema.metadata or {})
    metadata[CONFIG_METADATA_KEY] = json.dumps(config.to_dict()).encode()
    return out.replace_schema_metadata(metadata)


def quantize_files(
    paths: str | Path | Iterable[str | Path],
    config: QuantizeConfig = QuantizeConfig(),
    workers: int | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> pa.Table:
    """One row per trajectory file found under `paths` (see `find_trajectory_files`): FILE_COLUMNS, with bad files
    as `failed` rows carrying a reason and a message, so a run over a whole dataset never stops on one file."""
    files = find_trajectory_files(paths)
    manifest = pa.table(
        {
            "clip_id": pa.array([f.stem for f in files], pa.string()),
            "status": pa.array([OK] * len(files), pa.string()),
            "camera_path": pa.array([str(f) for f in files], pa.string()),
        }
    )
    out = quantize_table(manifest, config, workers=workers, batch_size=batch_size)
    files_table = out.select(["camera_path" if c == "path" else c for c in FILE_COLUMNS])
    return files_table.rename_columns(list(FILE_COLUMNS)).replace_schema_metadata(out.schema.metadata)

"""Sekai's on-disk format -> clip manifest rows.

Reading the CSV is cheap and done once; probing videos is I/O-bound and done per batch (`probe_clips`), so a flow
can spread it over workers. Ids follow Sekai: `<youtubeId>_<start:07d>_<end:07d>.mp4`, frames at 30 fps, half-open.
YouTube ids contain `_` and `-` and may start with `_`, hence `rsplit("_", 2)`.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from yume_core.errors import RowError
from yume_core.manifest import CLIP_SCHEMA, DROPPED, FAILED, OK, conform, mark, mark_each
from yume_core.storage import file_sha256

# CSV header -> manifest column
CSV_COLUMNS = {
    "videoFile": "video_file",
    "cameraFile": "camera_file",
    "caption": "caption",
    "location": "location",
    "scene": "scene",
    "crowdDensity": "crowd_density",
    "weather": "weather",
    "timeOfDay": "time_of_day",
}


class SekaiFormatError(ValueError):
    """The file as a whole is not a Sekai annotation CSV (not a per-row problem)."""


def parse_video_stem(stem: str) -> tuple[str, int, int] | None:
    """`<youtubeId>_<start>_<end>` -> (youtube_id, start, end), or None when the stem does not follow Sekai."""
    parts = stem.rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def read_sekai_csv(
    csv_path: str | Path,
    videos_dir: str | Path,
    cameras_dir: str | Path,
    source: str | None = None,
) -> pa.Table:
    """One manifest row per CSV data row, in file order; malformed and duplicate rows are kept with a status."""
    csv_path = Path(csv_path)
    videos_dir, cameras_dir = Path(videos_dir), Path(cameras_dir)
    source = source or csv_path.stem
    try:
        fh = open(csv_path, newline="", encoding="utf-8")
    except OSError as exc:
        raise SekaiFormatError(f"cannot open annotation CSV {csv_path}: {exc.strerror}") from exc
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or "videoFile" not in header:
            raise SekaiFormatError(
                f"{csv_path} has no 'videoFile' column (header: {header}); "
                f"expected Sekai's columns {', '.join(CSV_COLUMNS)}"
            )
        index = {name: header.index(name) for name in CSV_COLUMNS if name in header}
        cols: dict[str, list] = {c: [] for c in CSV_COLUMNS.values()}
        line_nos, bad = [], []
        for fields in reader:
            line_nos.append(reader.line_num)
            if len(fields) != len(header):
                bad.append(len(line_nos) - 1)
                fields = fields + [""] * (len(header) - len(fields))
            for name, col in CSV_COLUMNS.items():
                value = fields[index[name]].strip() if name in index else ""
                cols[col].append(value or None)
    n = len(line_nos)
    table = pa.table({col: pa.array(values, pa.string()) for col, values in cols.items()})
    return _derive_columns(table, n, bad, line_nos, header, source, csv_path, videos_dir, cameras_dir)


def _derive_columns(table, n, bad, line_nos, header, source, csv_path, videos_dir, cameras_dir) -> pa.Table:
    video_files = table["video_file"].to_pylist()
    camera_files = table["camera_file"].to_pylist()
    stems = [Path(v).stem if v else None for v in video_files]
    parsed = [parse_video_stem(s) if s else None for s in stems]
    video_paths = [str(videos_dir / v) if v else None for v in video_files]
    camera_paths = [
        str(cameras_dir / (c if c else f"{s}.npz")) if s else None for c, s in zip(camera_files, stems)
    ]
    table = table.append_column("clip_id", pa.array(stems, pa.string()))
    table = table.append_column("source", pa.array([source] * n, pa.string()))
    table = table.append_column("csv_row", pa.array(np.arange(n), pa.int64()))
    table = table.append_column("youtube_id", pa.array([p[0] if p else None for p in parsed], pa.string()))
    table = table.append_column("start_frame", pa.array([p[1] if p else None for p in parsed], pa.int64()))
    table = table.append_column("end_frame", pa.array([p[2] if p else None for p in parsed], pa.int64()))
    table = table.append_column("video_path", pa.array(video_paths, pa.string()))
    table = table.append_column("camera_path", pa.array(camera_paths, pa.string()))
    table = table.append_column("status", pa.array([OK] * n, pa.string()))
    table = table.append_column("reason", pa.nulls(n, pa.string()))
    table = table.append_column("error", pa.nulls(n, pa.string()))
    table = conform(table, CLIP_SCHEMA)

    if bad:
        is_bad = np.zeros(n, bool)
        is_bad[bad] = True
        msgs = [
            f"{csv_path.name} line {line_nos[i]} has a wrong number of fields (expected {len(header)}); "
            "fix the quoting of that row" if is_bad[i] else None
            for i in range(n)
        ]
        table = mark(table, pa.array(is_bad), FAILED, "csv_malformed", pa.array(msgs, pa.string()))
    no_video = pc.is_null(table["video_file"])
    table = mark(
        table, no_video, FAILED, "csv_missing_video_file", f"{csv_path.name}: the row has an empty videoFile"
    )
    return _drop_duplicates(table)


def _drop_duplicates(table: pa.Table) -> pa.Table:
    """Keep the first row of each videoFile; later ones are dropped and point at the row they repeat."""
    files = table["video_file"].to_numpy(zero_copy_only=False).astype(object)
    valid = np.array([f is not None for f in files])
    if not valid.any():
        return table
    keys = np.where(valid, files, "").astype(str)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    first_row = first[inverse]
    dup = valid & (first_row != np.arange(len(files)))
    if not dup.any():
        return table
    csv_rows = table["csv_row"].to_numpy()
    msgs = [
        f"same videoFile as CSV row {csv_rows[first_row[i]]}; only the first occurrence is kept" if dup[i] else None
        for i in range(len(files))
    ]
    return mark(table, pa.array(dup), DROPPED, "duplicate_video", pa.array(msgs, pa.string()))


def probe_clips(table: pa.Table, workers: int = 4) -> pa.Table:
    """Attach each ok row's video facts (frames, fps, size, codec, bytes, sha256); unreadable videos fail with a reason.

    The content hash is taken here, right after the demuxer has pulled the file into the page cache, so that it is
    computed once per clip; the shard writer reuses it when size and mtime show the file is unchanged.
    Threads, because demuxing, file reads and hashing run in C and release the GIL.
    """
    from yume_core.media import probe_video  # PyAV is heavy to import; only batches that probe pay for it

    status = table["status"].to_pylist()
    paths = table["video_path"].to_pylist()
    todo = [i for i, s in enumerate(status) if s == OK]

    def probe(i):
        try:
            info = probe_video(paths[i])
            stat = os.stat(paths[i])
            return info, stat.st_mtime_ns, file_sha256(paths[i])
        except RowError as exc:
            return exc
        except OSError as exc:  # vanished or unreadable between demuxing and hashing
            return RowError("video_unreadable", f"{paths[i]}: cannot read the file ({exc.strerror}); check it exists and is readable")

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(probe, todo))
    n = table.num_rows
    names = ("video_bytes", "video_mtime_ns", "video_sha256", "video_codec", "video_fps", "video_frames", "width", "height")
    cols = {k: [None] * n for k in names}
    fail_reason, fail_msg = [None] * n, [None] * n
    for i, res in zip(todo, results):
        if isinstance(res, RowError):
            fail_reason[i], fail_msg[i] = res.reason, res.message
            continue
        res, cols["video_mtime_ns"][i], cols["video_sha256"][i] = res
        cols["video_bytes"][i] = res.bytes
        cols["video_codec"][i] = res.codec
        cols["video_fps"][i] = res.fps
        cols["video_frames"][i] = res.frames
        cols["width"][i] = res.width
        cols["height"][i] = res.height
    for name, values in cols.items():
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, name, pa.array(values, table.schema.field(name).type))
    return mark_each(table, fail_reason, fail_msg)


def check_frame_counts(table: pa.Table, tolerance: int = 1) -> pa.Table:
    """Fail rows whose video and trajectory disagree on length by more than `tolerance` frames.

    A larger gap means the poses belong to another cut of the video, so every action label would be misplaced.
    """
    frames = table["video_frames"]
    poses = table["num_poses"]
    gap = pc.abs(pc.subtract(frames, poses))
    bad = pc.fill_null(pc.greater(gap, tolerance), False)
    if not pc.any(bad).as_py():
        return table
    msgs = [
        f"video has {f} frames but the trajectory has {p} poses (allowed difference: {tolerance}); "
        "the camera file belongs to another cut of the video"
        if b
        else None
        for f, p, b in zip(frames.to_pylist(), poses.to_pylist(), bad.to_pylist())
    ]
    return mark(table, bad, FAILED, "frame_count_mismatch", pa.array(msgs, pa.string()))

"""Sekai's on-disk format -> clip manifest rows.

Reading the CSV is cheap and done once; probing videos is I/O-bound and done per batch (`probe_clips`), so a flow
can spread it over workers. Ids follow Sekai: `<youtubeId>_<start:07d>_<end:07d>.mp4`, frames at 30 fps, half-open.
YouTube ids contain `_` and `-` and may start with `_`, hence `rsplit("_", 2)`.

A CSV saved by Excel as "CSV UTF-8" starts with a byte-order mark; it is read like any other. `videoFile` and
`cameraFile` name files inside the videos and cameras folders: a row whose path leaves its folder (`../`, an
absolute path, or a symlink inside the folder that points out, since the check is on the resolved path) fails as
`path_outside_root` unless the caller trusts the CSV (`allow_outside_root`), so a CSV from elsewhere cannot pull
arbitrary local files into the shards.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from yume_core import remote
from yume_core.errors import InputError, RowError
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


class SekaiFormatError(InputError, ValueError):
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
    allow_outside_root: bool = False,
) -> pa.Table:
    """One manifest row per CSV data row, in file order; malformed and duplicate rows are kept with a status.

    SekaiFormatError (an InputError) when the file as a whole cannot be used: missing, not UTF-8, no header.
    Each of the three may be an object-storage URL (`s3://bucket/sekai/...`); the rows' paths are then URLs."""
    csv_path = remote.as_path(csv_path)
    videos_dir, cameras_dir = remote.as_path(videos_dir), remote.as_path(cameras_dir)
    source = source or Path(str(csv_path)).stem
    try:
        fh = _open_csv(csv_path)
    except OSError as exc:
        raise SekaiFormatError(csv_path, f"cannot open the annotation CSV ({exc.strerror})",
                               "check the path and that the file is readable") from exc
    reader = csv.reader(fh)
    try:
        with fh:
            header = _header(reader, csv_path)
            index, cols, line_nos, bad = _read_rows(reader, header)
    except UnicodeDecodeError as exc:
        raise SekaiFormatError(csv_path, f"is not UTF-8 text (near line {reader.line_num + 1})",
                               'save it as UTF-8 (Excel: "CSV UTF-8")') from exc
    except csv.Error as exc:
        raise SekaiFormatError(csv_path, f"line {reader.line_num} cannot be parsed as CSV ({exc})",
                               "save it as plain comma-separated text") from exc
    n = len(line_nos)
    table = pa.table({col: pa.array(values, pa.string()) for col, values in cols.items()})
    table = _derive_columns(table, n, bad, line_nos, header, source, csv_path, videos_dir, cameras_dir)
    if not allow_outside_root:
        table = _fail_outside_root(table, line_nos, csv_path, videos_dir, cameras_dir)
    return _drop_duplicates(table)


def check_sekai_csv(csv_path: str | Path) -> list[str]:
    """The CSV's header, or SekaiFormatError: what a flow checks before it starts, reading one line."""
    csv_path = remote.as_path(csv_path)
    try:
        with _open_csv(csv_path) as fh:
            return _header(csv.reader(fh), csv_path)
    except OSError as exc:
        raise SekaiFormatError(csv_path, f"cannot open the annotation CSV ({exc.strerror})",
                               "check the path and that the file is readable") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SekaiFormatError(csv_path, f"the header line cannot be read ({exc})",
                               'save it as UTF-8 comma-separated text (Excel: "CSV UTF-8")') from exc


def _open_csv(path: str | Path):
    """The CSV as text (BOM dropped, newlines as the csv module wants them), from disk or object storage."""
    if remote.is_url(path):
        return io.TextIOWrapper(remote.open_input(path), encoding="utf-8-sig", newline="")
    return open(path, newline="", encoding="utf-8-sig")


def _header(reader, csv_path: Path) -> list[str]:
    header = next(reader, None)
    if not header or "videoFile" not in header:
        raise SekaiFormatError(
            csv_path, f"has no 'videoFile' column (header: {header})",
            f"export it with Sekai's columns {', '.join(CSV_COLUMNS)} in the first line",
        )
    return header


def _read_rows(reader, header: list[str]):
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
    return index, cols, line_nos, bad


def _fail_outside_root(table: pa.Table, line_nos, csv_path: Path, videos_dir: Path, cameras_dir: Path) -> pa.Table:
    """Fail rows whose videoFile or cameraFile resolves (symlinks followed) outside its folder."""
    status = table["status"].to_pylist()
    reasons, msgs = [None] * table.num_rows, [None] * table.num_rows
    dirs: dict[str, str] = {}
    checks = (("videoFile", videos_dir, "video_path"), ("cameraFile", cameras_dir, "camera_path"))
    for column, root, path_column in checks:
        given = table[CSV_COLUMNS[column]].to_pylist()
        url = isinstance(root, str)  # object storage has no symlinks: the key itself must stay under the prefix
        inside = root.rstrip("/") + "/" if url else os.path.join(os.path.realpath(root), "")
        for i, (name, path) in enumerate(zip(given, table[path_column].to_pylist())):
            if reasons[i] or status[i] != OK or not name:
                continue
            real = _normalise_url(path) if url else _resolve(path, dirs)
            if not real.startswith(inside):
                reasons[i] = "path_outside_root"
                msgs[i] = (f"{Path(str(csv_path)).name} line {line_nos[i]}: {column} {name!r} resolves to {real}, "
                           f"outside {root}; give a path inside that folder, or pass --allow-outside-root "
                           "if the CSV is trusted")
    return mark_each(table, reasons, msgs)


def _normalise_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}"


def _resolve(path: str, dirs: dict[str, str]) -> str:
    """os.path.realpath(path), with each folder resolved once: one lstat per file instead of one per component
    (rows share a handful of folders, so this is what keeps the check cheap on a million-row CSV)."""
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    if folder not in dirs:
        dirs[folder] = os.path.realpath(folder)
    full = os.path.join(dirs[folder], name)
    return os.path.realpath(full) if os.path.islink(full) else full


def _derive_columns(table, n, bad, line_nos, header, source, csv_path, videos_dir, cameras_dir) -> pa.Table:
    video_files = table["video_file"].to_pylist()
    camera_files = table["camera_file"].to_pylist()
    stems = [Path(v).stem if v else None for v in video_files]
    parsed = [parse_video_stem(s) if s else None for s in stems]
    video_paths = [remote.join(str(videos_dir), v) if v else None for v in video_files]
    camera_paths = [remote.join(str(cameras_dir), c if c else f"{s}.npz") if s else None for c, s in zip(camera_files, stems)]
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
            f"{Path(str(csv_path)).name} line {line_nos[i]} has a wrong number of fields (expected {len(header)}); "
            "fix the quoting of that row" if is_bad[i] else None
            for i in range(n)
        ]
        table = mark(table, pa.array(is_bad), FAILED, "csv_malformed", pa.array(msgs, pa.string()))
    no_video = pc.is_null(table["video_file"])
    return mark(
        table, no_video, FAILED, "csv_missing_video_file", f"{Path(str(csv_path)).name}: the row has an empty videoFile"
    )


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
            if remote.is_url(paths[i]):  # demuxing every packet reads the whole file: fetch it once, then probe
                if not remote.exists(paths[i]):
                    raise RowError("video_missing", f"{paths[i]}: no such object; check the videos URL and the CSV")
                with remote.input_file(paths[i]) as local:
                    return probe_video(local), None, file_sha256(local)
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

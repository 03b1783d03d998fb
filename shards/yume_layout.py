"""Export action segments in the folder layout Yume's trainer reads (FACTS §3, Yume's `test_video/`).

For each ok clip and each of its `segments` (a constant-label run, frames a..b inclusive):

    out_dir/Keys_<keys, + as _>_Mouse_<word>/<clipstem>_frames_<a:05d>-<b:05d>.mp4   frames a..b, re-encoded
                                                                      .txt   five lines, see `segment_text`
                                                                      .npy   poses a..b, float32 (b-a+1, 4, 4)

`clipstem` is the stem of the clip's Sekai video file (`<youtubeId>_<start:07d>_<end:07d>`). Frame numbers are
the clip's own (0 = its first frame). Keys `None` (or a missing label) give `Keys_None`.
Mouse folder words: → Right, ← Left, ↑ Up, ↓ Down, · `·` (Yume's own folder names). Yume's released folders only
show single directions; a combined label is named vertical first, joined by `_`, the way Yume writes the arrows:
↑→ `Up_Right`, ↑← `Up_Left`, ↓→ `Down_Right`, ↓← `Down_Left`. The .txt keeps the arrows as they are.

Every file is written atomically; a segment whose three files exist is skipped, so a rerun resumes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

from shards.plan import ok_positions
from shards.sample import load_poses
from yume_core.errors import RowError
from yume_core.manifest import DROPPED, FAILED, OK
from yume_core.storage import atomic_path, atomic_write_text

MOUSE_WORDS = {
    "→": "Right",
    "←": "Left",
    "↑": "Up",
    "↓": "Down",
    "·": "·",
    "↑→": "Up_Right",
    "↑←": "Up_Left",
    "↓→": "Down_Right",
    "↓←": "Down_Left",
}
KEY_LABELS = {"None", "W", "S", "D", "A", "W+D", "W+A", "S+D", "S+A"}
DEFAULT_CRF = 18  # segments are training data: keep the re-encode close to the source

EXPORT_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("folder", pa.string()),
        ("stem", pa.string()),
        ("start_frame", pa.int32()),
        ("end_frame", pa.int32()),
        ("keys", pa.string()),
        ("mouse", pa.string()),
        ("status", pa.string()),  # ok (written now or already there), dropped (too short) or failed
        ("reason", pa.string()),  # written | exists | too_short | the error's reason code
        ("error", pa.string()),
    ]
)


def folder_name(keys: str | None, mouse: str | None) -> str:
    """`Keys_W_A_Mouse_Left` for keys `W+A`, mouse `←`."""
    k = keys or "None"
    m = mouse or "·"
    if k not in KEY_LABELS:
        raise ValueError(f"unknown keys label {keys!r}; expected one of {sorted(KEY_LABELS)}")
    if m not in MOUSE_WORDS:
        raise ValueError(f"unknown mouse label {mouse!r}; expected one of {sorted(MOUSE_WORDS)}")
    return f"Keys_{k.replace('+', '_')}_Mouse_{MOUSE_WORDS[m]}"


def segment_stem(clip_stem: str, start_frame: int, end_frame: int) -> str:
    return f"{clip_stem}_frames_{start_frame:05d}-{end_frame:05d}"


def segment_text(start_frame: int, end_frame: int, keys: str | None, mouse: str | None) -> str:
    """Yume's .txt: `Start Frame: a`, `End Frame: b`, `Duration: n frames`, `Keys: W+A`, `Mouse: ←`, one per line."""
    return (
        f"Start Frame: {start_frame}\n"
        f"End Frame: {end_frame}\n"
        f"Duration: {end_frame - start_frame + 1} frames\n"
        f"Keys: {keys or 'None'}\n"
        f"Mouse: {mouse or '·'}\n"
    )


def clip_stem(row: dict) -> str:
    for name in ("video_file", "video_path"):
        if row.get(name):
            return Path(row[name]).stem
    return str(row.get("clip_id"))


def _export_clip(row: dict, out_dir: Path, min_frames: int | None, codec: str, crf: int, mine) -> list[dict]:
    from yume_core.media import transcode  # lazily: PyAV only when exporting

    out: list[dict] = []
    stem0 = clip_stem(row)
    poses = None
    clip_error: RowError | None = None
    for seg in row.get("segments") or []:
        a, b = seg.get("start_frame"), seg.get("end_frame")
        keys, mouse = seg.get("keys"), seg.get("mouse")
        rec = dict(clip_id=row.get("clip_id"), start_frame=a, end_frame=b, keys=keys, mouse=mouse)
        out.append(rec)
        if not isinstance(a, int) or not isinstance(b, int) or a < 0 or b < a:
            rec.update(status=FAILED, reason="segment_invalid", error=f"segment frames [{a}, {b}] are not a range")
            continue
        try:
            folder = folder_name(keys, mouse)
        except ValueError as e:
            rec.update(status=FAILED, reason="label_unknown", error=str(e))
            continue
        stem = segment_stem(stem0, a, b)
        rec.update(folder=folder, stem=stem)
        if min_frames is not None and b - a + 1 < min_frames:
            rec.update(status=DROPPED, reason="too_short", error=f"{b - a + 1} frames < min_frames {min_frames}")
            continue
        if not mine((folder, stem)):
            rec.update(status=FAILED, reason="duplicate_segment",
                       error=f"{folder}/{stem} is written by another row; two clips share the video stem {stem0!r}")
            continue
        base = out_dir / folder / stem
        paths = [base.with_suffix(s) for s in (".mp4", ".txt", ".npy")]
        if all(p.is_file() for p in paths):
            rec.update(status=OK, reason="exists")
            continue
        try:
            if clip_error is not None:
                raise clip_error
            if poses is None:
                try:
                    poses = load_poses(row.get("camera_path"), row.get("clip_id"))
                except RowError as e:
                    clip_error = e
                    raise
            if not (0 <= a <= b < len(poses)):
                raise RowError("segment_out_of_range",
                               f"segment frames [{a}, {b}] outside the clip's {len(poses)} poses; rerun the actions step.")
            with atomic_path(paths[2]) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(poses[a : b + 1], dtype=np.float32), allow_pickle=False)
            atomic_write_text(paths[1], segment_text(a, b, keys, mouse))
            if not row.get("video_path"):
                raise RowError("video_missing", f"clip {row.get('clip_id')!r} has no video_path.")
            transcode(row["video_path"], paths[0], start_frame=a, end_frame=b, codec=codec, crf=crf)
            rec.update(status=OK, reason="written")
        except RowError as e:
            rec.update(status=FAILED, reason=e.reason, error=e.message)
    return out


def export_yume(table: pa.Table, out_dir: str | Path, min_frames: int | None = None, codec: str = "libx264",
                crf: int = DEFAULT_CRF, workers: int | None = None) -> pa.Table:
    """Write every segment of every ok row in Yume's layout; one result row per segment (see EXPORT_SCHEMA).

    `min_frames`: segments shorter than this (b-a+1 frames) are skipped with status dropped/too_short.
    Clips are exported by `workers` threads (default min(4, CPU count); decoding and encoding release the GIL).
    Bad inputs (missing video or poses, a segment outside the clip, an unknown label) fail that segment with a
    reason code; the export goes on.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table.take(pa.array(ok_positions(table))).to_pylist()
    # Which row writes each (folder, stem): the first in manifest order, decided before any thread runs, so a
    # second clip with the same video stem fails instead of racing the first or silently counting as done.
    owner: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        for seg in row.get("segments") or []:
            try:
                key = (folder_name(seg.get("keys"), seg.get("mouse")),
                       segment_stem(clip_stem(row), seg.get("start_frame"), seg.get("end_frame")))
            except (ValueError, TypeError):
                continue
            owner.setdefault(key, i)

    def run(i: int) -> list[dict]:
        return _export_clip(rows[i], out_dir, min_frames, codec, crf, lambda key: owner.get(key, i) == i)

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(run, range(len(rows))))
    flat = [r for rs in results for r in rs]
    cols = {f.name: [r.get(f.name) for r in flat] for f in EXPORT_SCHEMA}
    return pa.Table.from_pydict(cols, schema=EXPORT_SCHEMA)

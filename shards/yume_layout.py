"""Export action segments in the folder layout Yume's trainer reads (FACTS §3, Yume's `test_video/`).

For each ok clip and each of its `segments` (a constant-label run, frames a..b inclusive):

    out_dir/Keys_<keys, + as _>_Mouse_<word>/<clipstem>_frames_<a:05d>-<b:05d>.mp4   frames a..b, re-encoded
                                                                      .txt   five lines, see `segment_text`
                                                                      .npy   poses a..b, float32 (b-a+1, 4, 4)
    out_dir/full_mp4/<youtubeId>/<clipstem>.mp4                       the whole clip (a hard link, else a copy)
    out_dir/README.md                                                 which folder is which, for Yume's loader

`clipstem` is the stem of the clip's Sekai video file (`<youtubeId>_<start:07d>_<end:07d>`). Frame numbers are
the clip's own (0 = its first frame). Keys `None` (or a missing label) give `Keys_None`.
Mouse folder words: → Right, ← Left, ↑ Up, ↓ Down, · `·` (Yume's own folder names). Yume's released folders only
show single directions; a combined label is named vertical first, joined by `_`, the way Yume writes the arrows:
↑→ `Up_Right`, ↑← `Up_Left`, ↓→ `Down_Right`, ↓← `Down_Left`. The .txt keeps the arrows as they are.

What Yume's loader (`StableVideoAnimationDataset`) needs, and so what every export guarantees:
- History frames come from the full clip at `FULL_MP4/<youtubeId>/<clipstem>.mp4`, taken before `Start Frame`; a
  segment starting at frame 0 makes that branch raise IndexError (the loader then silently draws another sample).
  So full clips are written under `full_mp4/`, and every segment starts at frame 1 or later.
- Yume's own segments never share a frame, while runs of labels do (one run ends at the frame where the next
  begins: Yume's both-ends-inclusive convention). So a segment starts after the last frame of the clip's previous
  exported segment. On the runs the actions stage writes, these rules move a start by one frame at most; every
  remaining step still carries the segment's label.
- It needs at least 33 frames (`min_frames`): shorter segments, after those moves, are dropped as too_short.
The folder for Yume's `ROOT/*/*.mp4` glob is `out_dir` itself: the full clips sit one level deeper, out of it.

Every file is written atomically; a segment whose three files exist (and a full clip of the right size) is skipped,
so a rerun resumes.
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
DEFAULT_MIN_FRAMES = 33  # Yume's loader samples 33 frames
FULL_MP4 = "full_mp4"  # folder of the whole clips, Yume's FULL_MP4

EXPORT_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("folder", pa.string()),
        ("stem", pa.string()),
        ("start_frame", pa.int32()),  # as written: after the moves described in the module docstring
        ("end_frame", pa.int32()),
        ("keys", pa.string()),
        ("mouse", pa.string()),
        ("full_clip", pa.string()),  # the whole clip's path under out_dir (full_mp4/<youtubeId>/<clipstem>.mp4)
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


def youtube_id(row: dict) -> str:
    """The clip's YouTube id: the manifest's, else the stem's part before `_<start>_<end>` (ids contain `_`)."""
    if row.get("youtube_id"):
        return row["youtube_id"]
    parts = clip_stem(row).rsplit("_", 2)
    return parts[0] if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() else clip_stem(row)


def plan_segments(row: dict, min_frames: int | None) -> list[dict]:
    """The row's segments as export records (EXPORT_SCHEMA fields), in frame order, each with the range it is
    written with: it starts at frame 1 or later and after the end of the clip's previous written segment. Records
    that cannot be written already carry their status (failed: not a range or an unknown label; dropped:
    too_short)."""

    def order(seg: dict) -> tuple:
        a, b = seg.get("start_frame"), seg.get("end_frame")
        return (a if isinstance(a, int) else -1, b if isinstance(b, int) else -1)

    planned, last_end = [], 0  # frame 0 is never written: the loader takes history from before the start
    for seg in sorted(row.get("segments") or [], key=order):
        a, b = seg.get("start_frame"), seg.get("end_frame")
        keys, mouse = seg.get("keys"), seg.get("mouse")
        rec = dict(clip_id=row.get("clip_id"), start_frame=a, end_frame=b, keys=keys, mouse=mouse)
        planned.append(rec)
        if not isinstance(a, int) or not isinstance(b, int) or a < 0 or b < a:
            rec.update(status=FAILED, reason="segment_invalid", error=f"segment frames [{a}, {b}] are not a range")
            continue
        try:
            folder = folder_name(keys, mouse)
        except ValueError as e:
            rec.update(status=FAILED, reason="label_unknown", error=str(e))
            continue
        start = max(a, last_end + 1)
        rec.update(start_frame=start, folder=folder, stem=segment_stem(clip_stem(row), start, b))
        if min_frames is not None and b - start + 1 < min_frames:
            moved = f" (from frame {start}: frames up to {last_end} are history or the previous segment's)" \
                if start > a else ""
            rec.update(status=DROPPED, reason="too_short",
                       error=f"{max(b - start + 1, 0)} frames{moved} < min_frames {min_frames}")
            continue
        last_end = b
    return planned


def _link_full_clip(src: str, dst: Path) -> None:
    """`dst` as a hard link to `src` (no bytes copied), else a copy (another file system, a URL); atomic either way,
    and skipped when a file of the source's size is already there."""
    import shutil

    from yume_core import remote

    size = remote.size(src) if remote.is_url(src) else (Path(src).stat().st_size if Path(src).is_file() else None)
    if size is None:
        raise RowError("video_missing", f"{src}: the clip's video is missing, so its full clip cannot be exported; "
                                        "check the video path or re-download it")
    if dst.is_file() and dst.stat().st_size == size:
        return
    with atomic_path(dst) as tmp:
        if remote.is_url(src):
            with remote.open_input(src) as f, open(tmp, "wb") as out:
                shutil.copyfileobj(f, out, 8 << 20)
            return
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(src, tmp)


def _export_clip(row: dict, out_dir: Path, min_frames: int | None, codec: str, crf: int, mine) -> list[dict]:
    from yume_core.media import transcode  # lazily: PyAV only when exporting

    out = plan_segments(row, min_frames)
    full = f"{FULL_MP4}/{youtube_id(row)}/{clip_stem(row)}.mp4"
    poses = None
    clip_error: RowError | None = None
    for rec in out:
        if rec.get("status"):
            continue
        folder, stem, a, b = rec["folder"], rec["stem"], rec["start_frame"], rec["end_frame"]
        if not mine((folder, stem)):
            rec.update(status=FAILED, reason="duplicate_segment",
                       error=f"{folder}/{stem} is written by another row; two clips share the video stem "
                             f"{clip_stem(row)!r}")
            continue
        rec["full_clip"] = full
        base = out_dir / folder / stem
        paths = [base.with_suffix(s) for s in (".mp4", ".txt", ".npy")]
        try:
            if clip_error is not None:
                raise clip_error
            if not row.get("video_path"):
                raise RowError("video_missing", f"clip {row.get('clip_id')!r} has no video_path.")
            try:
                _link_full_clip(row["video_path"], out_dir / full)
            except RowError as e:
                clip_error = e
                raise
            if all(p.is_file() for p in paths):
                rec.update(status=OK, reason="exists")
                continue
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
            atomic_write_text(paths[1], segment_text(a, b, rec["keys"], rec["mouse"]))
            transcode(row["video_path"], paths[0], start_frame=a, end_frame=b, codec=codec, crf=crf)
            rec.update(status=OK, reason="written")
        except RowError as e:
            rec.update(status=FAILED, reason=e.reason, error=e.message)
    return out


def readme_text(min_frames: int | None) -> str:
    """The export's README: which folder Yume's loader takes as what."""
    return (
        "# Action segments in Yume's layout (written by `yume-data export-yume`)\n\n"
        "- `Keys_<keys>_Mouse_<mouse>/<clipstem>_frames_<a>-<b>.{mp4,txt,npy}`: one action segment each (frames a..b "
        "of the clip, both inclusive; the .txt holds Start Frame, End Frame, Duration, Keys and Mouse; the .npy the "
        "camera-to-world poses).\n"
        "- `full_mp4/<youtubeId>/<clipstem>.mp4`: the whole clip of every exported segment, from which Yume's loader "
        "takes the history frames before `Start Frame`.\n\n"
        "For Yume's training loader (`fastvideo/dataset/t2v_datasets.py`, `StableVideoAnimationDataset`) pass this "
        "folder as the dataset root (it globs `ROOT/*/*.mp4`; the full clips sit one level deeper and are not "
        "matched) and `full_mp4/` inside it as the full-video folder (`FULL_MP4`).\n\n"
        "Every segment starts at frame 1 or later and shares no frame with another segment of its clip"
        + (f"; every segment has at least {min_frames} frames" if min_frames else "") + ".\n"
    )


def export_yume(table: pa.Table, out_dir: str | Path, min_frames: int | None = DEFAULT_MIN_FRAMES,
                codec: str = "libx264", crf: int = DEFAULT_CRF, workers: int | None = None) -> pa.Table:
    """Write every segment of every ok row in Yume's layout, the full clips under `full_mp4/` and a README; one
    result row per segment (see EXPORT_SCHEMA), in frame order within each clip.

    `min_frames`: segments shorter than this (b-a+1 frames, after the start moves described in the module
    docstring) are skipped with status dropped/too_short; None keeps every length.
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
        for rec in plan_segments(row, min_frames):
            if not rec.get("status"):
                owner.setdefault((rec["folder"], rec["stem"]), i)

    def run(i: int) -> list[dict]:
        return _export_clip(rows[i], out_dir, min_frames, codec, crf, lambda key: owner.get(key, i) == i)

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(run, range(len(rows))))
    readme = out_dir / "README.md"
    if not readme.is_file() or readme.read_text(encoding="utf-8") != readme_text(min_frames):  # reruns rewrite nothing
        atomic_write_text(readme, readme_text(min_frames))
    flat = [r for rs in results for r in rs]
    cols = {f.name: [r.get(f.name) for r in flat] for f in EXPORT_SCHEMA}
    return pa.Table.from_pydict(cols, schema=EXPORT_SCHEMA)

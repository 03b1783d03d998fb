"""`videos`: a lab's own footage, a CSV of mp4 paths and captions, as a T2V set without action labels.

The CSV has a `video` column (a path, relative to the CSV's folder, or a URL) and a `caption` column; an `id`
column names the clips (default: the file names). Steps: read and probe every clip (a row whose file is missing,
unreadable or uncaptioned fails with its reason), then the set's shards.
"""

from __future__ import annotations

import csv as csvlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipelines.build_graph import Step
from pipelines.recipes.base import BuildContext, BuildSet, Recipe, Section, require, shards_step
from pipelines.recipes.t2v_synthetic import shards_section
from yume_core import remote
from yume_core.errors import InputError


# what probing a clip finds (`yume_core.sekai.probe_clips` fills these columns)
PROBED = ("video_bytes", "video_mtime_ns", "video_sha256", "video_codec", "video_fps", "video_frames", "width",
          "height")


@dataclass(frozen=True)
class VideosInputs:
    csv: str | None = None  # columns: video, caption (and optionally id)


@dataclass(frozen=True)
class ProbeConfig:
    io_threads: int = 4  # threads probing videos (demuxing and hashing run in C)


class Videos(Recipe):
    name = "videos"
    kind = "footage"
    inputs = VideosInputs
    tasks = ("t2v",)
    card = {
        "source": "footage supplied to the build, with its captions",
        "url": "",
        "licence": "as supplied to the build: the owner of the footage sets its terms",
        "made": "probed and written as it is; trains T2V on its caption",
    }

    @property
    def sections(self):
        return {"probe": Section(ProbeConfig), "shards": shards_section()}

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        from yume_core.manifest import write_manifest
        from yume_core.sekai import probe_clips

        require(s.inputs, s.name, "csv")
        layout, cfg, name, source = ctx.layout, s.sections, s.name, s.inputs.csv
        manifest = layout.work(name, "manifest.parquet")

        def probe() -> dict:
            table = probe_clips(read_footage_csv(source), workers=cfg["probe"].io_threads)
            write_manifest(table, manifest)
            return {}

        return [
            Step(f"{name}/probe", probe, name, files=(source,), outputs={"manifest": manifest}, manifest=manifest),
            shards_step(s, ctx, f"{name}/probe", manifest),
        ]


def read_footage_csv(path: str) -> pa.Table:
    """One manifest row per CSV row: ok, or failed with the reason (no video, no caption, a repeated id)."""
    from yume_core.manifest import CLIP_SCHEMA, FAILED, OK

    text = remote.read_bytes(path).decode("utf-8-sig") if remote.is_url(path) else \
        Path(path).read_text(encoding="utf-8-sig")
    reader = csvlib.DictReader(text.splitlines())
    missing = {"video", "caption"} - set(reader.fieldnames or ())
    if missing:
        raise InputError(path, f"has no column(s) {', '.join(sorted(missing))}",
                         "a footage CSV has the columns video (a path or URL) and caption, optionally id")
    base = path.rsplit("/", 1)[0] if remote.is_url(path) else str(Path(path).resolve().parent)
    rows, seen = [], set()
    for i, r in enumerate(reader):
        video, caption = (r.get("video") or "").strip(), (r.get("caption") or "").strip()
        clip = (r.get("id") or "").strip() or Path(video).stem
        status, reason, error = OK, None, None
        if not video:
            status, reason, error = FAILED, "video_missing", f"row {i + 1}: no video path"
        elif not caption:
            status, reason, error = FAILED, "caption_missing", f"row {i + 1}: {video} has no caption to train on"
        elif clip in seen:
            status, reason, error = FAILED, "duplicate", f"row {i + 1}: clip id {clip!r} appears earlier"
        seen.add(clip)
        resolved = video if not video or remote.is_url(video) or os.path.isabs(video) else remote.join(base, video)
        rows.append({"clip_id": clip, "csv_row": i, "status": status, "reason": reason, "error": error,
                     "video_path": resolved or None, "caption": caption or None})
    names = ("clip_id", "csv_row", "status", "reason", "error", "video_path", "caption", *PROBED)
    return pa.Table.from_pylist(rows, pa.schema([CLIP_SCHEMA.field(n) for n in names]))

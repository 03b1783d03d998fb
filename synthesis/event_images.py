"""First-person start images from real walking clips (Sekai), to pair with written events for I2V synthesis.

The event set needs images a world model would really start from: frames of first-person walking video. This
takes Sekai clips (`yume_core.sekai`: the CSV, probing, which also proves each file is complete), decodes the first
frame after an optional skip (or `per_clip` frames spread evenly from there to the end), scales each to cover the
target size and centre-crops it (aspect kept, default 1280x720, Wan's 720p), and writes it atomically.

Frames that would make a useless start image are `dropped`, not written: `frame_dark` (mean grey level under
`min_mean`, a fade from black) and `frame_uniform` (grey-level standard deviation under `min_std`: a flat or
blurred-out picture, a title card). Clips that fail ingest or probing (missing, unreadable, truncated) keep one
`failed` row each with their reason, so every clip of the CSV is accounted for.

Outputs in the output folder: `images/<image_id>.<jpg|png>`, `manifest.parquet` (one row per requested frame or
failed clip: `image_id`, `image_path` relative to the folder, `clip_id`, `frame_index`, `width`, `height`, grey
`mean`/`std`, status/reason/error), `events_template.jsonl` (an event set, `synthesis.events`, with `event_id` and
`image` filled and `category`/`description` empty for a person to write) and `summary.json`.

Work is per clip on a thread pool: PyAV decodes and PIL resizes and encodes in C with the GIL released. At the
event set's scale (thousands of images) a plain function is enough; a rerun rewrites the images.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from yume_core import remote
from yume_core.errors import RowError
from yume_core.manifest import DROPPED, FAILED, OK, summarize, write_manifest
from yume_core.storage import atomic_write_bytes, atomic_write_text

IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("image_path", pa.string()),  # relative to the output folder
    ("clip_id", pa.string()),
    ("video_path", pa.string()),
    ("frame_index", pa.int64()),  # in the clip's decode order, from 0
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mean", pa.float32()),  # grey level 0..255 of the written image
    ("std", pa.float32()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("error", pa.string()),
])
FORMATS = {"jpg": "JPEG", "png": "PNG"}


@dataclass(frozen=True)
class EventImageConfig:
    per_clip: int = 1  # frames per clip: the first after the skip, or this many spread evenly from there
    size: tuple[int, int] = (1280, 720)  # width, height of the written images
    skip_seconds: float = 0.0  # skip an intro (fade-in, title) before the first frame
    format: str = "jpg"
    quality: int = 95  # JPEG quality
    min_mean: float = 12.0  # grey level under which a frame is near-black
    min_std: float = 6.0  # grey-level spread under which a frame is near-uniform
    workers: int = 4

    def __post_init__(self):
        if self.per_clip < 1:
            raise ValueError("per_clip must be >= 1")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (width, height) > 0, got {self.size}")
        if self.skip_seconds < 0:
            raise ValueError("skip_seconds must be >= 0")


def frame_indices(frames: int, fps: float, per_clip: int, skip_seconds: float) -> np.ndarray:
    """The first frame after the skip, and for per_clip > 1 the starts of equal spans from there to the end."""
    skip = round(skip_seconds * fps)
    if frames <= skip:
        return np.zeros(0, np.int64)
    n = min(per_clip, frames - skip)
    return skip + (np.arange(n) * (frames - skip)) // n


def fit(frame: np.ndarray, size: tuple[int, int]):
    """Scale to cover `size` keeping the aspect ratio, then centre-crop; a PIL image."""
    from PIL import Image, ImageOps

    return ImageOps.fit(Image.fromarray(frame), size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def grey_stats(img) -> tuple[float, float]:
    g = np.asarray(img.convert("L"), np.float32)
    return float(g.mean()), float(g.std())


def _clip_rows(clip: dict, out_dir: Path, cfg: EventImageConfig) -> list[dict]:
    """One row per wanted frame of an ok clip (images written), or one row carrying the clip's verdict."""
    base = {"clip_id": clip["clip_id"], "video_path": clip["video_path"]}
    if clip["status"] != OK:
        return [{**base, "status": clip["status"], "reason": clip["reason"], "error": clip["error"]}]
    frames, fps = int(clip["video_frames"] or 0), float(clip["video_fps"] or 0.0)
    wanted = frame_indices(frames, fps, cfg.per_clip, cfg.skip_seconds)
    if len(wanted) == 0:
        return [{**base, "status": DROPPED, "reason": "clip_too_short",
                 "error": f"{frames} frames, all within the {cfg.skip_seconds} s skipped at the start"}]
    from yume_core.media import iter_frames

    rows = []
    for idx in wanted.tolist():
        image_id = f"{clip['clip_id']}_{idx:06d}"
        row = {**base, "image_id": image_id, "frame_index": idx}
        try:
            with remote.input_file(clip["video_path"]) as video:  # a URL: fetched for the frame, then removed
                frame = next(iter_frames(video, idx, idx + 1), None)
        except RowError as exc:
            rows.append({**row, "status": FAILED, "reason": exc.reason, "error": exc.message})
            continue
        if frame is None:
            rows.append({**row, "status": FAILED, "reason": "frame_unreadable",
                         "error": f"{clip['video_path']}: frame {idx} did not decode; re-download the clip"})
            continue
        img = fit(frame, tuple(cfg.size))
        mean, std = grey_stats(img)
        row.update(width=img.width, height=img.height, mean=mean, std=std)
        if mean < cfg.min_mean:
            rows.append({**row, "status": DROPPED, "reason": "frame_dark",
                         "error": f"mean grey level {mean:.1f} < {cfg.min_mean}; skip the fade with --skip-seconds"})
            continue
        if std < cfg.min_std:
            rows.append({**row, "status": DROPPED, "reason": "frame_uniform",
                         "error": f"grey-level spread {std:.1f} < {cfg.min_std}: a flat picture, not a scene"})
            continue
        rel = f"images/{image_id}.{cfg.format}"
        buf = io.BytesIO()
        img.save(buf, FORMATS[cfg.format], **({"quality": cfg.quality} if cfg.format == "jpg" else {}))
        atomic_write_bytes(out_dir / rel, buf.getvalue())
        rows.append({**row, "image_path": rel, "status": OK, "reason": None, "error": None})
    return rows


def extract_event_images(clips: pa.Table, out_dir: str | Path, cfg: EventImageConfig, progress: bool = False) -> pa.Table:
    """Images for the ok rows of a probed clip manifest; the image manifest (see the module docstring)."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    records = clips.select(["clip_id", "video_path", "video_frames", "video_fps", "status", "reason", "error"])
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        jobs = pool.map(lambda c: _clip_rows(c, out_dir, cfg), records.to_pylist())
        rows = [r for rs in tqdm(jobs, total=clips.num_rows, desc="event images", disable=not progress) for r in rs]
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in IMAGE_SCHEMA}, schema=IMAGE_SCHEMA)


def template_lines(manifest: pa.Table) -> list[str]:
    """The event-set template: one JSON line per written image, category and description left empty."""
    lines = []
    for r in manifest.to_pylist():
        if r["status"] == OK:
            rec = {"event_id": r["image_id"], "category": "", "description": "", "image": r["image_path"]}
            lines.append(json.dumps(rec, ensure_ascii=False))
    return lines


def event_images(
    csv_path: str | Path, videos_dir: str | Path, out_dir: str | Path, cfg: EventImageConfig, progress: bool = False
) -> dict:
    """Sekai CSV + clips -> images, manifest, event template, summary (returned, with the output paths)."""
    from yume_core.sekai import probe_clips, read_sekai_csv

    out_dir = Path(out_dir)
    clips = read_sekai_csv(csv_path, videos_dir, videos_dir)  # camera files are not needed here
    clips = probe_clips(clips, workers=cfg.workers)
    manifest = extract_event_images(clips, out_dir, cfg, progress=progress)
    paths = {
        "manifest": out_dir / "manifest.parquet",
        "template": out_dir / "events_template.jsonl",
        "images": out_dir / "images",
        "summary": out_dir / "summary.json",
    }
    write_manifest(manifest, paths["manifest"])
    lines = template_lines(manifest)
    atomic_write_text(paths["template"], "\n".join(lines) + ("\n" if lines else ""))
    summary = summarize(manifest)
    summary["clips"] = clips.num_rows
    summary["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}
    summary["outputs"] = {k: str(v) for k, v in paths.items()}
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2))
    return summary

"""An action overlay page: a sample of clips per label, each video with its per-step keys and mouse drawn under it
as a timeline and the current label shown as it plays, for both labelling modes where both could be computed.

Labels are numbers derived from poses; the only way to trust them is to watch them against the pictures (GameFactory
overlays its actions on the video for the same reason). The page is static (one HTML file with its data inline
and small H.264 previews beside it), so it opens from disk, from a bucket or from any web server.

- Clips are grouped by their dominant label (the (keys, mouse) pair that covers most of their steps) and up to
  `per_label` are drawn per group with a generator seeded by (seed, label), so the same manifest gives the same
  page.
- The manifest's own labels come first; the other mode's are computed from the clip's poses with the manifest's
  settings (read from its metadata), so a person sees where `published` and `heading` part ways.
- Previews are 320 pixels wide at the source frame rate (so frame = time x fps), H.264 without B-frames (libx264
  is then byte-reproducible; browsers do not play Sekai's HEVC).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quantize_actions.config import MODES, QuantizeConfig
from quantize_actions.modes import label
from quantize_actions.trajectory_io import load_trajectory
from yume_core.actions import KEY_LABELS, MOUSE_LABELS, NUM_LABELS
from yume_core.errors import RowError
from yume_core.manifest import OK
from yume_core.storage import atomic_write_text

TEMPLATE = Path(__file__).with_name("overlay.html")
PREVIEW_WIDTH = 320
PREVIEW_CRF = 30
CONFIG_KEYS = (b"yume_data.quantize_actions.config", b"yume_data")  # `actions` output, then a flow's provenance


def manifest_config(table: pa.Table) -> QuantizeConfig:
    """The labelling settings a manifest was made with, from its metadata; the defaults when it records none."""
    from yume_core.config import ConfigError, from_dict

    metadata = table.schema.metadata or {}
    for key in CONFIG_KEYS:
        if key in metadata:
            data = json.loads(metadata[key])
            data = data.get("actions", data) if key == b"yume_data" else data
            try:
                return from_dict(QuantizeConfig, data, "manifest actions settings")
            except (ConfigError, TypeError, ValueError):
                break  # settings of another version: label with the defaults rather than fail the page
    return QuantizeConfig()


def dominant_labels(table: pa.Table) -> np.ndarray:
    """Per row, the (keys, mouse) pair code (keys * 9 + mouse) covering most of its steps; -1 without labels."""
    keys, mouse = (table[c].combine_chunks() for c in ("keys", "mouse"))
    k = pc.index_in(pc.list_flatten(keys), value_set=pa.array(KEY_LABELS)).to_numpy(zero_copy_only=False)
    m = pc.index_in(pc.list_flatten(mouse), value_set=pa.array(MOUSE_LABELS)).to_numpy(zero_copy_only=False)
    row = pc.list_parent_indices(keys).to_numpy()
    pairs = NUM_LABELS * NUM_LABELS
    counts = np.bincount(row * pairs + k * NUM_LABELS + m, minlength=table.num_rows * pairs)
    counts = counts.reshape(table.num_rows, pairs)
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)


def sample_rows(dominant: np.ndarray, eligible: np.ndarray, per_label: int,
                seed: int) -> list[tuple[int, list[int], int]]:
    """[(pair code, rows, clips with that label)] in label order: up to `per_label` eligible rows of each dominant
    label, drawn with a generator seeded by (seed, code) so one label's sample does not change when another's
    clips change."""
    groups = []
    for code in np.unique(dominant[eligible & (dominant >= 0)]):
        rows = np.flatnonzero(eligible & (dominant == code))
        rng = np.random.default_rng([seed, int(code)])
        picked = np.sort(rng.choice(rows, size=min(per_label, len(rows)), replace=False))
        groups.append((int(code), picked.tolist(), len(rows)))
    return groups


def _codes(labels, table: tuple[str, ...]) -> str:
    """A label list as one digit per step (the page decodes it with the label tables)."""
    return "".join(str(table.index(x)) for x in labels)


def _find_video(row: dict, videos: Path | None) -> str | None:
    if row.get("video_path"):
        return row["video_path"]
    if videos is None:
        return None
    stem = Path(row.get("video_file") or row.get("path") or row.get("camera_path") or "").stem
    found = sorted(videos.rglob(f"{stem}.mp4")) if stem else []
    return str(found[0]) if found else None


def _preview(src: str, dst: Path) -> tuple[float, str | None]:
    """Write the H.264 preview; (fps, None) or (fps, why there is no preview)."""
    from yume_core.media import iter_frames, probe_video, write_video  # lazily: PyAV only for pages with videos

    try:
        info = probe_video(src, count_frames=False)
        height = max(2, round(PREVIEW_WIDTH * info.height / info.width / 2) * 2)
        write_video(dst, iter_frames(src, size=(PREVIEW_WIDTH, height)), info.fps, codec="libx264",
                    crf=PREVIEW_CRF, options={"x264-params": "bframes=0"})
        return info.fps, None
    except (RowError, ValueError, OSError) as e:
        return 0.0, f"no preview: {getattr(e, 'message', e)}"


def _clip_data(row: dict, index: int, out: Path, config: QuantizeConfig, videos: Path | None) -> dict:
    modes = [{"name": config.mode, "keys": _codes(row["keys"], KEY_LABELS),
              "mouse": _codes(row["mouse"], MOUSE_LABELS)}]
    notes = []
    camera = row.get("camera_path") or row.get("path")
    try:
        poses = load_trajectory(camera) if camera else None
    except RowError as e:
        poses = None
        notes.append(f"only {config.mode} labels: {e.message}")
    if poses is not None:
        for other in (m for m in MODES if m != config.mode):
            keys, mouse = label(poses, replace(config, mode=other))
            modes.append({"name": other, "keys": "".join(map(str, keys)), "mouse": "".join(map(str, mouse))})
    video, fps = _find_video(row, videos), config.fps
    name = None
    if video:
        name = f"clips/clip-{index:04d}.mp4"
        fps, problem = _preview(video, out / name)
        if problem:
            name, fps = None, config.fps
            notes.append(problem)
    else:
        notes.append("no video: the manifest names none (pass --videos to look for <stem>.mp4)")
    return {
        "id": row.get("clip_id"),
        "video": name,
        "fps": fps,
        "stride": config.stride,
        "frames": row.get("num_poses") or (len(row["keys"]) * config.stride + 1),
        "modes": modes,
        "flags": list(row.get("trajectory_flags") or []),
        "figures": row.get("trajectory_figures"),
        "notes": notes,
    }


def write_overlay(table: pa.Table, out_dir: str | Path, per_label: int = 2, videos: str | Path | None = None,
                  seed: int = 0) -> Path:
    """Write `out_dir/index.html` (and `out_dir/clips/*.mp4`) for the ok, labelled rows of a clip manifest (of
    `yume-data actions` or of the real-world flow); returns the page's path."""
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    config = manifest_config(table)
    ok = pc.fill_null(pc.equal(table["status"], OK), False).to_numpy(zero_copy_only=False)
    groups = sample_rows(dominant_labels(table), ok, per_label, seed)
    videos = Path(videos) if videos else None
    clips, sections = [], []
    for code, rows, total in groups:
        picked = table.take(pa.array(rows, pa.int64())).to_pylist()
        start = len(clips)
        clips += [_clip_data(row, start + i, out, config, videos) for i, row in enumerate(picked)]
        sections.append({"keys": KEY_LABELS[code // NUM_LABELS], "mouse": MOUSE_LABELS[code % NUM_LABELS],
                         "clips": list(range(start, len(clips))), "of": total})
    data = {"keys": KEY_LABELS, "mouse": MOUSE_LABELS, "mode": config.mode, "settings": config.to_dict(),
            "sections": sections, "clips": clips, "labelled": int(np.count_nonzero(ok))}
    inline = json.dumps(data, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    page = TEMPLATE.read_text(encoding="utf-8").replace("/*DATA*/null", inline)
    return atomic_write_text(out / "index.html", page)


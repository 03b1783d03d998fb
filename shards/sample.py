"""One manifest row -> one WebDataset sample: `<key>.mp4`, `<key>.json` and, with poses, `<key>.npy`.

The json (UTF-8) holds everything a trainer or a person needs besides the pixels. It follows the sample schema
(yume_core.samples, version 1: `schema_version, set, key, tasks, event_text`, the mp4's size, `actions`,
`provenance`); a real-world clip trains T2V on Sekai's scene caption (`caption`) and I2V on its event caption
(`caption_event`; without one the clip trains T2V only). Besides those:

    clip_id, source                 as in the manifest
    fps, frames, width, height      of the mp4 member as stored (after transcoding, when asked)
    captions    {"scene": Sekai's original caption, plus every `caption_*` / `prompt_*` column of the manifest}
    actions     {"keys": [...], "mouse": [...]  one label per frame step of the pose timeline,
                 "segments": [...], "chunks": [...]  {start_frame, end_frame (inclusive), keys, mouse, agreement, phrase},
                 "frames": length of the pose timeline the labels and frame ranges index,
                 "stride": ..., plus the quantizer's settings (thresholds, vocabulary, fps, ...) when the
                 caller passes them as provenance["actions"]; labels made otherwise than by Yume's published
                 rule as released add the `mode` and its settings there, and the row's "trajectory_flags" (the
                 trajectory checks' flags: jitter, jump, frozen; [] when clean)}
    metrics     {speed, turn_deg, view_rotation_deg}
    meta        {location, scene, crowd_density, weather, time_of_day, youtube_id, start_frame, end_frame}
    provenance  {sources: {video, camera, image (null here), csv_row}, pipeline_version, created, shards: the ShardConfig,
                 config: the caller's provenance dict as given}

Labels and segment ranges refer to the source's frame timeline (`actions.frames` frames at `actions.fps`), which
is also the npy's first axis. When the mp4 is resampled (`ShardConfig.fps`), `frames`/`fps` describe the mp4 and
differ from the timeline; without transcoding they are the source video's own.
Missing lists are written as `[]` and missing numbers/strings as `null`, so every sample has the same fields
(Hugging Face `datasets` infers one schema from the first samples). Non-finite floats become `null` (JSON has no NaN).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Sequence

import numpy as np

from shards.config import ShardConfig
from shards.keys import sanitize_key
from yume_core import buildtime, remote
from yume_core.errors import RowError
from yume_core.samples import DEFAULT_TASKS, SCHEMA_VERSION, check_tasks, task_fields

CAPTION_PREFIXES = ("caption_", "prompt_")
META_FIELDS = ("location", "scene", "crowd_density", "weather", "time_of_day", "youtube_id", "start_frame", "end_frame")
METRIC_FIELDS = ("speed", "turn_deg", "view_rotation_deg")
REQUIRED_JSON_FIELDS = (
    "clip_id", "source", "fps", "frames", "width", "height", "captions", "actions", "metrics", "meta", "provenance",
)
# Manifest columns a sample is made of (plus every caption_*/prompt_* column): what a shard's fingerprint covers.
# A video is there by path, size and sha256, not mtime: the same inputs copied elsewhere (another staging folder, a
# regenerated demo input) resume, and a replaced file has another sha256 once its batch is probed again.
SAMPLE_COLUMNS = (
    "clip_id", "source", "csv_row", "video_path", "camera_path", "video_bytes", "video_sha256",
    "video_fps", "video_frames",
    "width", "height", "num_poses", "caption", "stride", "keys", "mouse", "segments", "chunks", "trajectory_flags",
    *META_FIELDS, *METRIC_FIELDS,
)
# actions.* entries that come from the row, never from provenance["actions"]
_ROW_ACTION_FIELDS = ("keys", "mouse", "segments", "chunks", "frames", "trajectory_flags")
EVENT_CAPTION = "caption_event"  # the real-world clip's event caption: the text its I2V samples train on


@dataclass(frozen=True)
class SampleSpec:
    """How the rows of one set's manifest become samples, so one writer, index and resume serve every set.

    `build(row, ctx, key, mp4)` returns the sample dict (see `make_sample`); `covers(column)` says which manifest
    columns the samples are made of and `settings` what else they depend on: both go into a shard's fingerprint,
    so a changed column or setting rewrites the shard."""

    set_name: str
    tasks: tuple[str, ...]
    build: Callable[..., dict]
    covers: Callable[[str], bool]
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Source paths under one of `roots` (a build's output folder, then the folder its config file is in) are
    # recorded relative to the first that holds them, so the same inputs built into another folder, from another
    # staging folder or on another machine give the same bytes. Where the folders lie is not part of what a sample
    # is made of, so they stay out of the fingerprint.
    roots: tuple[str, ...] = ()

    def fingerprint_settings(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "set": self.set_name, "tasks": list(self.tasks),
                **dict(self.settings)}

    def source(self, path: str | None) -> str | None:
        """`path` as provenance records it: relative to the first of `roots` it lies under, else as given."""
        return recorded_path(path, self.roots)


def recorded_path(path: str | None, roots: Sequence[str | Path | None]) -> str | None:
    """A local `path` under one of `roots` (the first that holds it) as a normalised relative POSIX path; anything
    else (a URL, a path elsewhere) as it is."""
    if not path or "://" in path:
        return path
    for root in roots:
        if root is None:
            continue
        rel = os.path.relpath(os.path.normpath(os.path.abspath(path)), os.path.abspath(root))
        if rel != ".." and not rel.startswith("../"):
            return Path(rel).as_posix()
    return path


def now_iso() -> str:
    """The build time (yume_core.buildtime), never the clock: a rerun writes the same bytes."""
    return buildtime.build_time_iso()


def _pipeline_version() -> str:
    try:
        from yume_core import __version__
    except ImportError:  # pragma: no cover - yume_core always ships it
        return "unknown"
    return __version__


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean(obj):
    """JSON-safe copy of a small nested value: non-finite floats -> None, tuples -> lists, numpy -> Python.

    Used on the caller's provenance (once per shard), not per sample: per-sample values are built clean."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


class SampleContext:
    """What every sample of one write shares: config, the caller's provenance and the creation time.

    Built once per shard, so per-sample work is the row's own bytes only.
    """

    def __init__(self, config: ShardConfig, provenance: Mapping[str, Any] | None = None, created: str | None = None,
                 spec: SampleSpec | None = None):
        self.config = config
        self.spec = spec or real_world_spec()
        self.provenance = _clean(dict(provenance or {}))
        actions = self.provenance.get("actions")
        self.action_settings = (
            {k: v for k, v in actions.items() if k not in _ROW_ACTION_FIELDS} if isinstance(actions, dict) else {}
        )
        self.created = created or (provenance or {}).get("created") or now_iso()
        self.version = _pipeline_version()
        self.shard_settings = config.to_dict()


# ------------------------------------------------------------------------------------------------ members


def open_video(row: Mapping[str, Any]) -> tuple[BinaryIO, int, str | None]:
    """Open the row's source mp4 unbuffered: (file, size, sha256 recorded at probe time if still valid).

    RowError if the file is gone or its size differs from the probe's. The recorded digest is returned only when
    size and mtime both match the probe's, i.e. the bytes are the ones that were hashed.
    """
    path = row.get("video_path")
    if not path:
        raise RowError("video_missing", f"clip {row.get('clip_id')!r} has no video_path; nothing to put in a shard.")
    if remote.is_url(path):
        return _open_remote_video(row, path)
    remote.ensure_local(path)  # a video another node of the cluster wrote into the mirrored output
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise RowError("video_missing", f"{path}: video file not found (moved or deleted since it was probed).") from None
    except IsADirectoryError:
        raise RowError("video_unreadable", f"{path}: is a directory, not a video file.") from None
    stat = os.fstat(f.fileno())
    expected = row.get("video_bytes")
    if expected is not None and expected != stat.st_size:
        f.close()
        raise RowError(
            "video_changed",
            f"{path}: file has {stat.st_size} bytes but the manifest recorded {expected} when it was probed; "
            "it was replaced or truncated since. Re-probe it (rerun the clips step) or restore the file.",
        )
    unchanged = expected is not None and row.get("video_mtime_ns") == stat.st_mtime_ns
    return f, stat.st_size, row.get("video_sha256") if unchanged else None


def _open_remote_video(row: Mapping[str, Any], url: str) -> tuple[BinaryIO, int, None]:
    """`open_video` for an object-storage URL: a ranged reader; no recorded digest is trusted (an object has no
    mtime to prove it unchanged), so the writer hashes the bytes it copies."""
    try:
        f = remote.open_input(url)
    except FileNotFoundError:
        raise RowError("video_missing", f"{url}: video object not found (moved or deleted since it was probed).") from None
    expected = row.get("video_bytes")
    if expected is not None and expected != f.size:
        f.close()
        raise RowError("video_changed", f"{url}: object has {f.size} bytes but the manifest recorded {expected} when "
                       "it was probed; it was replaced since. Re-probe it (rerun the clips step) or restore it.")
    return f, f.size, None


def read_video_bytes(row: Mapping[str, Any]) -> bytes:
    """The source mp4 exactly as stored; RowError if it is gone or changed size since it was probed."""
    f, _, _ = open_video(row)
    with f:
        return f.read()


def transcode_video(row: Mapping[str, Any], config: ShardConfig) -> tuple[bytes, dict]:
    """Re-encode the whole clip to config.fps / config.size; returns the bytes and the mp4's fps/frames/size."""
    from yume_core.media import transcode  # imported lazily: PyAV is only needed when transcoding

    src = row.get("video_path")
    if not src:
        raise RowError("video_missing", f"clip {row.get('clip_id')!r} has no video_path; nothing to transcode.")
    with tempfile.TemporaryDirectory(prefix="yume-shard-") as tmp, remote.input_file(src) as local:
        dst = Path(tmp) / "clip.mp4"
        info = transcode(local, dst, fps=config.fps, size=config.size, codec=config.codec, crf=config.crf)
        data = dst.read_bytes()
    return data, {"fps": float(info.fps), "frames": int(info.frames), "width": int(info.width), "height": int(info.height)}


def load_poses(path: str | None, clip_id: str | None = None) -> np.ndarray:
    """Camera-to-world poses, float32 (T,4,4), from a Sekai `.npz` (key `extrinsic`) or a `.npy`."""
    if not path:
        raise RowError("poses_missing", f"clip {clip_id!r} has no camera_path.")
    p = Path(path)
    try:
        source = io.BytesIO(remote.read_bytes(path)) if remote.is_url(path) else p
        if p.suffix.lower() == ".npz":
            with np.load(source, allow_pickle=False) as z:
                if "extrinsic" not in z.files:
                    raise RowError("poses_invalid", f"{p}: no 'extrinsic' array (has {sorted(z.files)}); not a Sekai camera file.")
                poses = z["extrinsic"]
        else:
            poses = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise RowError("poses_missing", f"{p}: camera file not found (moved or deleted since actions were computed).") from None
    except RowError:
        raise
    except (OSError, ValueError) as e:
        raise RowError("poses_invalid", f"{p}: cannot read poses ({e}).") from None
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise RowError("poses_invalid", f"{p}: poses have shape {poses.shape}, expected (T, 4, 4).")
    return np.ascontiguousarray(poses, dtype=np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ json


def caption_columns(names) -> list[str]:
    return [n for n in names if n.startswith(CAPTION_PREFIXES)]


def _segments(items) -> list[dict]:
    return [{k: _finite(v) for k, v in s.items()} for s in items or []]


def sample_json(
    row: Mapping[str, Any],
    ctx: SampleContext,
    video: Mapping[str, Any] | None = None,
    timeline_frames: int | None = None,
    key: str | None = None,
) -> dict:
    """The json record of a row (see the module docstring). `video` overrides fps/frames/size (after transcoding)."""
    video = video or {}
    texts = {"t2v": row.get("caption"), "i2v": row.get(EVENT_CAPTION)}
    common = task_fields(ctx.spec.set_name, key or sanitize_key(row.get("clip_id")), texts, ctx.spec.tasks)
    captions = {"scene": row.get("caption")}
    for name in caption_columns(row.keys()):
        captions[name] = row.get(name)
    if timeline_frames is None:
        timeline_frames = row.get("num_poses") if row.get("num_poses") is not None else row.get("video_frames")
    stride = row.get("stride") if row.get("stride") is not None else ctx.action_settings.get("stride")
    actions = dict(ctx.action_settings)
    actions.update(
        keys=list(row.get("keys") or []),
        mouse=list(row.get("mouse") or []),
        segments=_segments(row.get("segments")),
        chunks=_segments(row.get("chunks")),
        frames=timeline_frames,
        stride=stride,
    )
    if "mode" in ctx.action_settings:  # labelled otherwise than by the published rule as released: say how
        actions["trajectory_flags"] = list(row.get("trajectory_flags") or [])
    return {
        **common,
        "clip_id": row.get("clip_id"),
        "source": row.get("source"),
        "fps": _finite(video.get("fps", row.get("video_fps"))),
        "frames": video.get("frames", row.get("video_frames")),
        "width": video.get("width", row.get("width")),
        "height": video.get("height", row.get("height")),
        "captions": captions,
        "actions": actions,
        "metrics": {k: _finite(row.get(k)) for k in METRIC_FIELDS},
        "meta": {k: row.get(k) for k in META_FIELDS},
        "provenance": {
            "sources": {"video": ctx.spec.source(row.get("video_path")),
                        "camera": ctx.spec.source(row.get("camera_path")), "image": None,
                        "csv_row": row.get("csv_row")},
            "pipeline_version": ctx.version,
            "created": ctx.created,
            "shards": ctx.shard_settings,
            "config": ctx.provenance,
        },
    }


def encode_json(record: dict) -> bytes:
    """Compact UTF-8 JSON. `record` must already be clean (sample_json's is); label lists go to the C encoder as
    they are, which matters for 60 s clips with 1,800 labels per list."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_json_default).encode("utf-8")


# ------------------------------------------------------------------------------------------------ sample


def video_member(row: Mapping[str, Any], config: ShardConfig, mp4=None) -> tuple[Any, dict | None]:
    """The mp4 member of `row` and, when it was transcoded, its fps/frames/size (None: the source's own)."""
    if config.transcodes:
        return transcode_video(row, config)
    return (read_video_bytes(row) if mp4 is None else mp4), None


def index_info(record: Mapping[str, Any]) -> dict:
    """What the index keeps of a sample's json: its tasks and the mp4's duration (for per-set figures without
    opening a tar)."""
    fps, frames = record.get("fps"), record.get("frames")
    seconds = frames / fps if isinstance(frames, int) and isinstance(fps, (int, float)) and fps > 0 else None
    return {"tasks": list(record["tasks"]), "seconds": seconds}


def make_sample(row: Mapping[str, Any], ctx: SampleContext, key: str | None = None, mp4=None) -> dict:
    """The sample of `row`; `mp4`: the source bytes already read (any bytes-like; the shard writer passes a view
    of a reused buffer), else they are read (or transcoded) here. `_index` holds `index_info` (not a member)."""
    config = ctx.config
    key = key or sanitize_key(row.get("clip_id"))
    mp4, video = video_member(row, config, mp4)
    sample = {"__key__": key, "mp4": mp4}
    timeline = None
    if config.include_poses and row.get("camera_path"):
        poses = load_poses(row.get("camera_path"), row.get("clip_id"))
        sample["npy"] = npy_bytes(poses)
        timeline = len(poses)
    record = sample_json(row, ctx, video, timeline, key)
    sample["json"] = encode_json(record)
    sample["_index"] = index_info(record)
    return sample


def _real_world_column(name: str) -> bool:
    return name in SAMPLE_COLUMNS or name.startswith(CAPTION_PREFIXES)


def real_world_spec(tasks=None, set_name: str = "real_world", roots: Sequence[str] = ()) -> SampleSpec:
    """Real-world clips: the manifest of the real-world flow, as set `set_name`; `tasks` defaults to Yume-1.5's
    (T2V and I2V); `roots`: see `SampleSpec.roots`."""
    tasks = check_tasks(tasks or DEFAULT_TASKS["real_world"], f"{set_name}.tasks")
    return SampleSpec(set_name, tasks, make_sample, _real_world_column, roots=tuple(roots))


def build_sample(row: Mapping[str, Any], config: ShardConfig | None = None, provenance: Mapping | None = None) -> dict:
    """A WebDataset sample dict for one manifest row: `__key__` plus `mp4`, `json` and (with poses) `npy` bytes.

    Raises RowError (video_missing, video_changed, poses_missing, poses_invalid, or media's errors when
    transcoding) for inputs that cannot become a sample.
    """
    sample = make_sample(row, SampleContext(config or ShardConfig(), provenance))
    sample.pop("_index", None)  # the writer's note for its index, not a member
    return sample


def member_records(sample: Mapping[str, Any], known: Mapping[str, str] | None = None) -> list[dict]:
    """(ext, bytes, sha256) per member, in the order TarWriter writes them (sorted by extension).

    `known`: digests already computed for these exact bytes (the mp4's, from probing), so they are not hashed twice.
    """
    known = known or {}
    out = []
    for ext in sorted(k for k in sample if not k.startswith("_")):
        data = sample[ext]
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        digest = known.get(ext) or hashlib.sha256(data).hexdigest()
        out.append({"ext": ext, "bytes": size, "sha256": digest})
    return out

"""The synthetic and event sets as shards: their manifest rows become schema-v1 samples through the same writer.

A set folder is what a trainer (or Megatron-Energon) is handed: `shard-*.tar`, `index.parquet`, `_index/` and
`.nv-meta/` (`shards.energon`). `write_set_shards` fills one from

* real_world: the real-world flow's clip manifest (as `write_shards` does);
* synthetic: the filtered manifest of `yume-data filter` (prompt_id, caption, video_path relative to the
  manifest's folder, vbench_* scores, quality_score / quality_rank, synth_* generation settings);
* event: the screened manifest of `yume-data review apply` (the same plus category, image_path, review,
  review_note).

Only ok rows reach a shard (below-cut and rejected videos were dropped upstream); a row whose video or start image
vanished since fails in the index with a reason, and `attach_shards` folds the index back into the manifest so
every row ends ok / dropped / failed. Keys are the sanitised `prompt_id`s. Synthetic samples train T2V on their
prompt; event samples train T2V and I2V on their event text (a `tasks` setting: the paper also describes the event
set as T2V only). An event sample's start image is the member `<key>.jpg`: a JPEG source is stored as it is, any
other format is re-encoded once (quality 95, no metadata), so the same image gives the same bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.config import ShardConfig
from shards.energon import prepare_energon
from shards.plan import ok_positions
from shards.sample import (
    SampleContext,
    SampleSpec,
    _finite,
    encode_json,
    index_info,
    real_world_spec,
    video_member,
)
from shards.writer import INDEX_FILE, write_shards
from yume_core import remote
from yume_core.errors import InputError, RowError
from yume_core.manifest import OK, put_column
from yume_core.samples import DEFAULT_TASKS, KINDS, check_set_name, check_tasks, empty_actions, task_fields

KEY_COLUMN = "prompt_id"
SCORE_PREFIX, SYNTH_PREFIX = "vbench_", "synth_"
# synth_* columns that are settings of the generation (the others are measurements of one run)
GENERATION = ("model", "pipeline", "preset", "seed", "width", "height", "frames", "fps", "steps", "guidance",
              "guidance_2", "flow_shift", "scheduler", "negative_prompt", "dtype", "cache", "offload")
_COLUMNS = {"clip_id", "csv_row", "source", KEY_COLUMN, "caption", "video_path", "video_bytes", "video_fps", "video_frames",
            "width", "height", "quality_score", "quality_rank", "category", "image_path", "image_bytes", "review",
            "review_note"}
SCREENING_POLICIES = ("decisions", "accept_all")


def _covers(name: str) -> bool:
    return name in _COLUMNS or name.startswith((SCORE_PREFIX, SYNTH_PREFIX))


def set_spec(kind: str, tasks=None, screening: str | None = None, name: str | None = None,
             roots: Sequence[str] = ()) -> SampleSpec:
    """How rows of a set of `kind` (real_world, synthetic, event: which manifest they come from and which fields
    their samples carry) become samples of the set `name` (default: the kind's own name). `tasks`: None for
    Yume-1.5's default of that kind. `screening`: the event set's screening policy as the caller ran it
    (`decisions`, `accept_all`), recorded in every sample. `roots`: see `SampleSpec.roots`."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of set {kind!r}; kinds are {list(KINDS)}")
    name = check_set_name(name or kind)
    if kind == "real_world":
        return real_world_spec(tasks, name, roots)
    tasks = check_tasks(tasks or DEFAULT_TASKS[kind], f"{name}.tasks")
    if kind == "synthetic":
        return SampleSpec(name, tasks, _synthetic_sample, _covers, roots=tuple(roots))
    if kind == "footage":
        return SampleSpec(name, tasks, _footage_sample, _covers, roots=tuple(roots))
    if screening is not None and screening not in SCREENING_POLICIES:
        raise ValueError(f"screening policy {screening!r} is none of {list(SCREENING_POLICIES)}")
    return SampleSpec(name, tasks, _event_sample, _covers, {"screening": screening}, roots=tuple(roots))


# ------------------------------------------------------------------------------------------------ rows


def _resolve(paths: list, base: Path | None) -> list:
    if base is None:
        return paths
    return [None if p is None else p if os.path.isabs(p) else str(base / p) for p in paths]


def _sizes(paths: list) -> list:
    out = []
    for p in paths:
        try:
            out.append(os.stat(p).st_size if p else None)
        except OSError:
            out.append(None)  # fails as image_missing when written
    return out


def set_rows(manifest: pa.Table, kind: str, base_dir: str | Path | None = None,
             where: str = "the manifest") -> pa.Table:
    """The manifest as rows the shard writer takes: `clip_id` (= prompt_id), `source` (the kind, unless given),
    paths resolved against `base_dir` and, for event rows, `image_bytes` (for the shard plan)."""
    if kind == "real_world":
        return manifest
    if kind == "footage":  # the videos recipe's manifest: clip_id, caption, probed video_* columns
        return manifest
    need = {KEY_COLUMN, "caption", "video_path", "status"} | ({"image_path"} if kind == "event" else set())
    missing = sorted(need - set(manifest.column_names))
    if missing:
        what = "filtered manifest (`yume-data filter`)" if kind == "synthetic" else \
            "screened manifest (`yume-data review apply`)"
        raise InputError(where, f"has no column(s) {', '.join(missing)}", f"the {kind} set is made from the {what}")
    base = Path(base_dir) if base_dir is not None else None
    t = put_column(manifest, pa.field("clip_id", pa.string()), manifest[KEY_COLUMN].cast(pa.string()))
    if "source" not in t.column_names:
        t = t.append_column(pa.field("source", pa.string()), pa.array([kind] * t.num_rows, pa.string()))
    t = put_column(t, pa.field("video_path", pa.string()),
                   pa.array(_resolve(t["video_path"].to_pylist(), base), pa.string()))
    if kind == "event":
        images = _resolve(t["image_path"].to_pylist(), base)
        t = put_column(t, pa.field("image_path", pa.string()), pa.array(images, pa.string()))
        ok = set(ok_positions(t).tolist())
        sizes = _sizes([p if i in ok else None for i, p in enumerate(images)])
        t = put_column(t, pa.field("image_bytes", pa.int64()), pa.array(sizes, pa.int64()))
    return t


# ------------------------------------------------------------------------------------------------ samples


def _video_fields(row: Mapping[str, Any], video: Mapping[str, Any] | None) -> dict:
    video = video or {}

    def pick(name, *columns):
        if name in video:
            return video[name]
        return next((row[c] for c in columns if row.get(c) is not None), None)

    return {"fps": _finite(pick("fps", "video_fps", "synth_fps")), "frames": pick("frames", "video_frames", "synth_frames"),
            "width": pick("width", "width", "synth_width"), "height": pick("height", "height", "synth_height")}


def _generation(row: Mapping[str, Any]) -> dict:
    return {name: _finite(row.get(SYNTH_PREFIX + name)) for name in GENERATION}


def _provenance(row: Mapping[str, Any], ctx: SampleContext, image: str | None, csv_row: int | None = None) -> dict:
    return {"sources": {"video": ctx.spec.source(row.get("video_path")), "camera": None,
                        "image": ctx.spec.source(image), "csv_row": csv_row},
            "pipeline_version": ctx.version, "created": ctx.created, "shards": ctx.shard_settings,
            "config": ctx.provenance}


def _finish(sample: dict, record: dict) -> dict:
    sample["json"] = encode_json(record)
    sample["_index"] = index_info(record)
    return sample


def _generated_record(kind: str, row: Mapping[str, Any], ctx: SampleContext, key: str, video: dict | None,
                      details: dict, image: str | None) -> dict:
    """The json of a generated video (synthetic or event): one text for every task, no action labels, the
    `details` of its kind under the kind's name."""
    text = row.get("caption")
    return {
        **task_fields(ctx.spec.set_name, key, {"t2v": text, "i2v": text}, ctx.spec.tasks),
        "prompt_id": row.get(KEY_COLUMN),
        **_video_fields(row, video),
        "actions": empty_actions(),
        kind: details,
        "provenance": _provenance(row, ctx, image),
    }


def _synthetic_sample(row: Mapping[str, Any], ctx: SampleContext, key: str, mp4=None) -> dict:
    mp4, video = video_member(row, ctx.config, mp4)
    details = {
        "prompt": row.get("caption"),
        "vbench": {c[len(SCORE_PREFIX):]: _finite(row[c]) for c in sorted(row) if c.startswith(SCORE_PREFIX)},
        "quality_score": _finite(row.get("quality_score")),
        "quality_rank": row.get("quality_rank"),
        "generation": _generation(row),
    }
    return _finish({"__key__": key, "mp4": mp4}, _generated_record("synthetic", row, ctx, key, video, details, None))


def _footage_sample(row: Mapping[str, Any], ctx: SampleContext, key: str, mp4=None) -> dict:
    """A lab's own clip with its caption: T2V on the caption, no action labels."""
    mp4, video = video_member(row, ctx.config, mp4)
    text = row.get("caption")
    record = {
        **task_fields(ctx.spec.set_name, key, {"t2v": text, "i2v": text}, ctx.spec.tasks),
        "clip_id": row.get("clip_id"),
        **_video_fields(row, video),
        "actions": empty_actions(),
        "footage": {"caption": text, "video": ctx.spec.source(row.get("video_path"))},
        "provenance": _provenance(row, ctx, None, row.get("csv_row")),
    }
    return _finish({"__key__": key, "mp4": mp4}, record)


def start_image_jpeg(path: str | None, prompt_id=None) -> bytes:
    """The start image as JPEG bytes: a JPEG file as it is, anything else re-encoded (RGB, quality 95, no
    metadata). RowError image_missing / image_unreadable."""
    if not path:
        raise RowError("image_missing", f"event {prompt_id!r} has no image_path; the I2V start image is needed.")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RowError("image_missing", f"{path}: start image not found (moved or deleted since synthesis).") from None
    except OSError as e:
        raise RowError("image_unreadable", f"{path}: cannot read the start image ({e}).") from None
    if data[:3] == b"\xff\xd8\xff":
        return data
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise RowError("image_unreadable", f"{path}: not an image PIL can decode ({e}).") from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95, subsampling=0, optimize=False)
    return out.getvalue()


def _event_sample(row: Mapping[str, Any], ctx: SampleContext, key: str, mp4=None) -> dict:
    image = start_image_jpeg(row.get("image_path"), row.get(KEY_COLUMN))
    mp4, video = video_member(row, ctx.config, mp4)
    details = {
        "event_id": row.get(KEY_COLUMN),
        "category": row.get("category"),
        "description": row.get("caption"),
        "start_image": f"{key}.jpg",
        "screening": {"decision": row.get("review"), "note": row.get("review_note"),
                      "policy": ctx.spec.settings.get("screening")},
        "generation": _generation(row),
    }
    record = _generated_record("event", row, ctx, key, video, details, row.get("image_path"))
    return _finish({"__key__": key, "mp4": mp4, "jpg": image}, record)


# ------------------------------------------------------------------------------------------------ sets


def write_set_shards(manifest: pa.Table | str | Path, out_dir: str | Path, set_name: str,
                     config: ShardConfig | None = None, provenance: Mapping | None = None, tasks=None,
                     base_dir: str | Path | None = None, screening: str | None = None,
                     skip_existing: bool = True, kind: str | None = None, roots: Sequence[str] = ()) -> pa.Table:
    """Write one set folder (shards, index, `.nv-meta/`) from its manifest; return the index.

    `manifest`: a table or a parquet path; relative video/image paths are resolved against `base_dir` (default:
    the manifest file's folder). `kind`: which manifest it is (real_world, synthetic, event; default `set_name`).
    Resumable like `write_shards`: shards written from the same rows and settings are kept."""
    kind = kind or set_name
    where = str(manifest) if isinstance(manifest, (str, Path)) else "the manifest"
    if isinstance(manifest, (str, Path)):
        base_dir = Path(manifest).parent if base_dir is None else base_dir
        manifest = pq.read_table(manifest)
    spec = set_spec(kind, tasks, screening, set_name, roots)
    rows = set_rows(manifest, kind, base_dir, where)
    index = write_shards(rows, out_dir, config, provenance, skip_existing=skip_existing, spec=spec)
    prepare_energon(out_dir, set_name, index)
    return index


def set_stats(set_dir: str | Path) -> dict:
    """Per-set figures from `index.parquet` and the tars' sizes, without opening a tar: samples, failed rows,
    shards, bytes on disk, hours of video, samples per task. `set_dir` may be a URL, or a staging folder whose tars
    are in its bucket only."""
    url = str(set_dir) if remote.is_url(str(set_dir)) else None
    set_dir = Path(set_dir) if url is None else url
    columns = ["shard", "status", "set", "tasks", "seconds"]
    if url:
        index = remote.read_parquet(remote.join(url, INDEX_FILE), columns=columns)
    else:
        index = pq.read_table(set_dir / INDEX_FILE, columns=columns)
    ok = index.filter(pc.equal(index["status"], OK))
    shards = sorted({s for s in ok["shard"].to_pylist() if s})
    tasks = pc.value_counts(pc.list_flatten(ok["tasks"])).to_pylist() if ok.num_rows else []
    sets = sorted({s for s in index["set"].to_pylist() if s})
    return {
        "set": sets[0] if len(sets) == 1 else sets,
        "samples": ok.num_rows,
        "failed": index.num_rows - ok.num_rows,
        "shards": len(shards),
        "bytes": sum(remote.size(remote.join(url, s)) if url else remote.staged_size(set_dir / s) for s in shards),
        "hours": (pc.sum(ok["seconds"]).as_py() or 0.0) / 3600.0,
        "tasks": {d["values"]: d["counts"] for d in sorted(tasks, key=lambda d: d["values"])},
    }

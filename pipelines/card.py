"""The data card of a finished `yume-data build`: `OUT/README.md`, `OUT/card.html` and `OUT/card.json`.

One dict is built from what the build left on disk (`collect`), and the three files are renderings of it:

    card.json   the dict itself, for programs: every count, share and distribution the page shows
    README.md   a Hugging Face dataset card: YAML front matter with one `configs` entry per set (its tars), the
                `dataset_info` features and sizes `datasets` needs, then the counts, sources and licences in words
    card.html   for a person: one self-contained page (inline CSS, plots and sample frames as data URIs, no script,
                nothing loaded from the network) that opens from disk, a mail attachment or a CI artifact alike

Where the numbers come from, so that they agree with what a trainer reads:
  - per set: `shards.set_stats` (index.parquet and tar sizes), then one pass over the set's tars reading every
    sample json (the mp4 member's fps, frames and size after any transcoding, the training texts, the action labels)
    and decoding the first frame of a few mp4 members for the frame grid;
  - per stage: each step's manifest, whose status column says what every row became (rules of the house: counts
    in = counts out); a stage that extends an earlier manifest is credited only with the verdicts it added;
  - the mixture: `mixture.yaml` and a seeded simulation of the sampler the trainer uses (realised shares).

Distributions are stored as mergeable moments (`describe`: count, sum, mean, M2, variance, min, max), so figures of
several builds, or of shards of one build, combine exactly with `merge_stats` without the raw values.

The same build gives the same bytes: no clock but the record's `build_time`, sets and stages in a fixed order,
PNGs without version metadata, JPEG frames from a deterministic decoder. The one thing that varies between two runs
of the same build is the seconds each step took (a run log, taken from the record as it is).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from yume_core.actions import KEY_LABELS, MOUSE_LABELS
from yume_core.manifest import FAILED, OK
from yume_core.remote import open_staged
from yume_core.samples import SCHEMA_VERSION, SETS, TASKS
from yume_core.storage import atomic_write_text

CARD_VERSION = 1
TEMPLATE = Path(__file__).with_name("card_template.html")
FRAMES_PER_SET = 8  # sample frames shown per set
THUMB_PX = 160  # longest side of a sample frame in the grid
MIX_STEPS = 10_000  # simulated trainer steps for the realised mixture shares
HIST_BINS = 20

# Stages whose manifest keeps every row of an earlier step's manifest and adds verdicts to it: their input is the
# rows that were ok there, and they are credited only with the verdicts they added.
EXTENDS = {"filter": "synthesis_t2v", "screening": "synthesis_i2v"}
# Steps that write a set's shards from the manifest of another step: their output is the set's index.parquet.
SHARD_STEPS = {"synthetic_shards": ("synthetic", "filter"), "event_shards": ("event", "screening")}
STEP_SETS = {"real_world": "real_world", "prompts": "synthetic", "synthesis_t2v": "synthetic",
             "filter": "synthetic", "synthetic_shards": "synthetic", "event_images": "event",
             "synthesis_i2v": "event", "review_pages": "event", "screening": "event", "event_shards": "event"}

SOURCES = {
    "real_world": {
        "source": "Sekai-Real-HQ walking clips with camera trajectories (Sekai, Hub dataset Lixsp11/Sekai-Project)",
        "url": "https://huggingface.co/datasets/Lixsp11/Sekai-Project",
        "licence": "the terms of the Sekai-Project dataset card; the clips are YouTube videos whose rights stay "
                   "with their owners",
        "made": "camera trajectories -> discrete keyboard and mouse actions; Sekai's scene captions train T2V, "
                "event captions written by a vision-language model train I2V",
    },
    "synthetic": {
        "source": "OpenVid-1M captions (Hub dataset nkp37/OpenVid-1M) rendered by Wan 2.1 text-to-video",
        "url": "https://huggingface.co/datasets/nkp37/OpenVid-1M",
        "licence": "captions: CC-BY-4.0 (OpenVid-1M); videos: outputs of Wan 2.1 (weights under Apache-2.0; the Wan "
                   "licence claims no rights over generated content and restricts harmful uses)",
        "made": "caption dedup and sampling -> Wan 2.1 T2V -> VBench quality score -> top N kept",
    },
    "event": {
        "source": "first-person start images and written event descriptions (urban daily life, sci-fi, fantasy, "
                  "weather) rendered by Wan 2.2 image-to-video",
        "url": "https://huggingface.co/Wan-AI",
        "licence": "images and texts: as supplied to the build (start frames cut from the real-world clips follow "
                   "Sekai's terms); videos: outputs of Wan 2.2 (weights under Apache-2.0, as above)",
        "made": "Wan 2.2 I2V -> manual screening",
    },
}
EVENT_TASKS_NOTE = ("Yume-1.5 says both that the event set is \"used exclusively for T2V\" and that the real-world "
                    "and event sets are \"used for both T2V and I2V\"; which one a build follows is a setting, "
                    "not a fact of the data.")


# ------------------------------------------------------------------------------------------- mergeable moments


def describe(values) -> dict:
    """count, sum, mean, M2 (sum of squared deviations), population variance, min and max of `values`; NaN (a
    missing score) is left out.

    These merge exactly across builds or shards (`merge_stats`); a histogram or a median would not."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if not x.size:
        return {"count": 0, "sum": 0.0, "mean": None, "m2": 0.0, "variance": None, "min": None, "max": None}
    mean = float(x.mean())
    m2 = float(((x - mean) ** 2).sum())
    return {"count": int(x.size), "sum": float(x.sum()), "mean": mean, "m2": m2, "variance": m2 / x.size,
            "min": float(x.min()), "max": float(x.max())}


def merge_stats(a: dict, b: dict) -> dict:
    """The `describe` of the union of two samples from theirs (Chan et al.'s parallel update of M2)."""
    if not a["count"] or not b["count"]:
        return dict(b if not a["count"] else a)
    n = a["count"] + b["count"]
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * b["count"] / n
    m2 = a["m2"] + b["m2"] + delta * delta * a["count"] * b["count"] / n
    return {"count": n, "sum": a["sum"] + b["sum"], "mean": mean, "m2": m2, "variance": m2 / n,
            "min": min(a["min"], b["min"]), "max": max(a["max"], b["max"])}


def _distribution(values, bins: int = HIST_BINS) -> dict:
    """`describe` plus the histogram the page plots (edges and counts)."""
    stats = describe(values)
    if stats["count"]:
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
        stats["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
    else:
        stats["histogram"] = None
    return stats


# --------------------------------------------------------------------------------------------- reading a set


@dataclass
class Thumb:
    key: str
    text: str
    jpeg: bytes | None  # None: the mp4 member could not be decoded (the page says so instead of a broken image)


@dataclass
class SetScan:
    """What one pass over a set's tars gives: per-sample figures, the shape of the members, a few frames."""

    seconds: list[float] = field(default_factory=list)
    frames: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    resolution: Counter = field(default_factory=Counter)
    words: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in TASKS})
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((len(KEY_LABELS), len(MOUSE_LABELS)), np.int64))
    models: dict[str, Counter] = field(default_factory=lambda: {"captioning": Counter(), "generation": Counter()})
    exts: list[str] = field(default_factory=list)  # member extensions of a sample, in tar order
    json_type: pa.DataType | None = None
    npy: tuple[str, int] | None = None  # dtype and number of dimensions of the npy member
    thumbs: list[Thumb] = field(default_factory=list)


def _ok_index(set_dir: Path) -> pa.Table:
    """The set's ok samples in shard order (what a reader of the tars meets)."""
    path = set_dir / "index.parquet"
    if not path.is_file():
        return pa.table({"key": pa.array([], pa.string()), "shard": pa.array([], pa.string()),
                         "members": pa.array([], pa.list_(pa.struct([("ext", pa.string())])))})
    index = pq.read_table(path, columns=["key", "shard", "position", "status", "members"])
    ok = index.filter(pc.equal(index["status"], OK))
    return ok.sort_by([("shard", "ascending"), ("position", "ascending")])


def scan_set(set_dir: Path, frames: int = FRAMES_PER_SET) -> SetScan:
    """Read every sample json of the set's tars (seeking past the video bytes) and decode the first frame of
    `frames` mp4 members spread evenly over the set."""
    index = _ok_index(set_dir)
    keys = index["key"].to_pylist()
    wanted = {keys[i] for i in np.linspace(0, len(keys) - 1, min(frames, len(keys))).round().astype(int)}
    scan, texts, jpegs = SetScan(), {}, {}
    scan.exts = [m["ext"] for m in index["members"][0].as_py()] if index.num_rows else []
    for shard in sorted(set(index["shard"].to_pylist())):
        metas = []
        with open_staged(set_dir / shard) as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext == "json":
                    metas.append(json.loads(tar.extractfile(member).read()))
                elif ext == "mp4" and key in wanted:
                    jpegs[key] = _first_frame_jpeg(tar.extractfile(member).read())
                elif ext == "npy" and scan.npy is None:
                    scan.npy = _npy_shape(tar.extractfile(member))
        _add_metas(scan, metas)
        texts.update({m["key"]: _sample_text(m) for m in metas if m["key"] in wanted})
    scan.thumbs = [Thumb(k, texts.get(k, ""), jpegs.get(k)) for k in keys if k in wanted]
    return scan


def _add_metas(scan: SetScan, metas: list[dict]) -> None:
    """Fold one shard's sample jsons into the scan (one shard at a time: a set's jsons never sit in memory)."""
    if not metas:
        return
    for m in metas:
        fps, n = m.get("fps"), m.get("frames")
        if fps and n:
            scan.seconds.append(n / fps)
            scan.frames.append(n)
            scan.fps.append(fps)
        if m.get("width") and m.get("height"):
            scan.resolution[f"{m['width']}x{m['height']}"] += 1
        for task in m.get("tasks") or []:
            scan.words[task].append(len((m["event_text"].get(task) or "").split()))
        for kind, model in _models(m):
            scan.models[kind][model] += 1
    labelled = [m["actions"] for m in metas if (m.get("actions") or {}).get("keys")]
    if labelled:
        from quantize_actions import action_histogram  # here: it imports pandas, and only real-world clips need it

        hist = action_histogram([a["keys"] for a in labelled], [a["mouse"] for a in labelled])
        scan.pairs += np.array([[hist["pairs"][k][mo] for mo in MOUSE_LABELS] for k in KEY_LABELS], np.int64)
    shard_type = pa.array(metas).type
    scan.json_type = shard_type if scan.json_type is None else pa.unify_schemas(
        [pa.schema([("json", scan.json_type)]), pa.schema([("json", shard_type)])],
        promote_options="permissive").field("json").type


def _models(meta: dict):
    """(kind, model) pairs a sample json names: the captioning model of real-world clips (`captions`), the
    generating model of synthetic and event videos (`<set>.generation`), as `shards.sample` writes them."""
    captioner = (meta.get("captions") or {}).get("caption_model")
    if captioner:
        yield "captioning", captioner
    generator = ((meta.get(meta.get("set")) or {}).get("generation") or {}).get("model")
    if generator:
        yield "generation", generator


def _sample_text(meta: dict) -> str:
    text = next((t for t in (meta.get("event_text") or {}).values() if t), "")
    return text if len(text) <= 90 else text[:89] + "…"


def _first_frame_jpeg(mp4: bytes) -> bytes | None:
    import av
    from PIL import Image

    try:
        with av.open(io.BytesIO(mp4)) as container:
            image = next(container.decode(video=0)).to_image()
    except (av.FFmpegError, StopIteration):
        return None
    image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


def _npy_shape(f) -> tuple[str, int]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return str(dtype), len(shape)


# ------------------------------------------------------------------------- Hugging Face `dataset_info` features


def _dtype(t: pa.DataType) -> str:
    return {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(t), str(t))


def _feature(t: pa.DataType) -> dict:
    """One feature's type as `datasets` writes it in a card (`Features._to_yaml_list`)."""
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in t]}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _inner(t.value_type)}
    return {"dtype": _dtype(t)}


def _inner(t: pa.DataType):
    if pa.types.is_struct(t):
        return [{"name": f.name, **_feature(f.type)} for f in t]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _inner(t.value_type)}
    return _dtype(t)


def features(scan: SetScan) -> list[dict]:
    """The features `datasets.load_dataset("webdataset", ...)` gives the set: one per member extension (the json
    typed from every sample, mp4 as video, jpg as image, npy as nested lists), then `__key__` and `__url__`."""
    out = []
    for ext in scan.exts:
        if ext == "json" and scan.json_type is not None:
            out.append({"name": ext, **_feature(scan.json_type)})
        elif ext in ("mp4", "jpg"):
            out.append({"name": ext, "dtype": "video" if ext == "mp4" else "image"})
        elif ext == "npy" and scan.npy is not None:
            nested = scan.npy[0]
            for _ in range(scan.npy[1] - 1):
                nested = {"list": nested}
            out.append({"name": ext, "list": nested})
        else:
            out.append({"name": ext, "dtype": "binary"})
    return out + [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]


# ------------------------------------------------------------------------------------------------ the figures


@dataclass
class Extras:
    """What the renderings need besides the card dict: too big (frames) or too Hub-specific (features) for it."""

    features: dict[str, list[dict]] = field(default_factory=dict)
    thumbs: dict[str, list[Thumb]] = field(default_factory=dict)


def collect(out: str | Path, record: dict) -> tuple[dict, Extras]:
    """The card dict (what card.json holds) and the extras of a finished build folder and its record."""
    out = Path(out)
    extras = Extras()
    sets = {}
    for name in SETS:
        if name in record.get("sets", {}):
            sets[name] = _set_figures(out, name, record["sets"][name], extras)
    card = {
        "card_version": CARD_VERSION,
        "sample_schema_version": SCHEMA_VERSION,
        "title": f"Yume-1.5-style world-model training data ({record.get('preset') or 'custom'} build)",
        "build": {"build_time": record.get("build_time"), "build_time_set": record.get("build_time_set"),
                  "preset": record.get("preset"), "mixture": record.get("mixture")},
        "sets": sets,
        "missing_sets": [n for n in SETS if n not in sets],
        "event_tasks": _event_tasks(record),
        "funnel": funnel(out, record),
        "quality": _quality(out, record),
        "screening": _screening(out, record),
        "mixture": _mixture(out, record),
        "stages": _stages(record),
        "sources": {n: SOURCES[n] for n in sets},
        "settings": record.get("settings"),
    }
    card["warnings"] = _warnings(card)
    return card, extras


def _set_figures(out: Path, name: str, info: dict, extras: Extras) -> dict:
    import shards  # here, as in pipelines.build: it imports webdataset and torch, which a build has loaded anyway

    set_dir = out / info.get("path", name)
    stats = shards.set_stats(set_dir) if (set_dir / "index.parquet").is_file() else \
        {"samples": 0, "failed": 0, "shards": 0, "bytes": 0, "hours": 0.0, "tasks": {}}
    scan = scan_set(set_dir)
    extras.features[name] = features(scan)
    extras.thumbs[name] = scan.thumbs
    trained = [t for t in TASKS if t in info.get("tasks", [])]
    return {
        "path": info.get("path", name),
        "data_files": f"{info.get('path', name)}/*.tar",
        "tasks": trained,
        "weight": info.get("weight"),
        "samples": stats["samples"],
        "failed": stats["failed"],
        "shards": stats["shards"],
        "bytes": stats["bytes"],
        "hours": stats["hours"],
        "samples_per_task": stats["tasks"],
        "clip_seconds": _distribution(scan.seconds),
        "frames": describe(scan.frames),
        "fps": describe(scan.fps),
        "resolution": dict(sorted(scan.resolution.items())),
        "actions": _actions(scan.pairs),
        "caption_words": {t: _distribution(scan.words[t]) for t in trained},
        "models": {kind: dict(sorted(c.items())) for kind, c in scan.models.items() if c},
        "frames_shown": [t.key for t in scan.thumbs],
    }


def _actions(pairs: np.ndarray) -> dict | None:
    """The keys x mouse grid of labelled frame steps (None: the set has no action labels)."""
    if not pairs.sum():
        return None
    return {"steps": int(pairs.sum()), "keys": list(KEY_LABELS), "mouse": list(MOUSE_LABELS),
            "pairs": pairs.tolist()}


def _event_tasks(record: dict) -> dict | None:
    event = record.get("sets", {}).get("event")
    if event is None:
        return None
    return {"tasks": [t for t in TASKS if t in event.get("tasks", [])], "setting": "mixture.event_tasks",
            "note": EVENT_TASKS_NOTE}


# ------------------------------------------------------------------------------------------------- the funnel


def _verdicts(path: Path) -> tuple[int, int, Counter]:
    """Rows, ok rows and (status, reason) counts of the rows that are not ok."""
    table = pq.read_table(path, columns=["status", "reason"])
    status, reason = table["status"].to_pylist(), table["reason"].to_pylist()
    bad = Counter((s, r or "(none)") for s, r in zip(status, reason) if s != OK)
    return table.num_rows, status.count(OK), bad


def _stage_manifest(out: Path, step: dict) -> Path | None:
    """The manifest with the step's per-row verdicts: as recorded, or beside its summary."""
    if step.get("manifest"):
        return out / step["manifest"]
    if step.get("summary"):
        return (out / step["summary"]).with_name("manifest.parquet")
    return None


def funnel(out: str | Path, record: dict) -> list[dict]:
    """In / ok / dropped / failed (by reason) of every step that decides about rows, in build order.

    `in` is what reached the step: a manifest's rows, the ok rows of the manifest a step extends (`EXTENDS`) or
    shards (`SHARD_STEPS`); every stage satisfies in == ok + dropped + failed unless a row went missing."""
    out = Path(out)
    manifests, stages = {}, []
    for step in record.get("steps", []):
        name = step["name"]
        if name in SHARD_STEPS:
            set_name, source = SHARD_STEPS[name]
            path = out / record["sets"].get(set_name, {}).get("path", set_name) / "index.parquet"
            before = manifests.get(source)
        else:
            path, before = _stage_manifest(out, step), manifests.get(EXTENDS.get(name))
        if path is None or not path.is_file():
            continue
        manifests[name] = path
        rows, ok, bad = _verdicts(path)
        if before is not None:  # what reached this step: the rows that were ok before it
            _, rows, earlier = _verdicts(before)
            if name in EXTENDS:
                bad -= earlier
        stages.append(_stage_row(name, rows, ok, bad))
    return stages


def _stage_row(name: str, rows: int, ok: int, bad: Counter) -> dict:
    reasons = sorted(bad.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1]))
    return {"step": name, "set": STEP_SETS.get(name, "all"), "in": rows, "ok": ok,
            "dropped": sum(c for (s, _), c in bad.items() if s != FAILED),
            "failed": sum(c for (s, _), c in bad.items() if s == FAILED),
            "by_reason": [{"status": s, "reason": r, "count": c} for (s, r), c in reasons]}


# ------------------------------------------------------------------------------- quality, screening, mixture


def _quality(out: Path, record: dict) -> dict | None:
    """The synthetic set's VBench quality scores, the kept ones and the top-N cut (None: no synthetic set)."""
    from filtering.topk import QUALITY, RANK

    info = record.get("sets", {}).get("synthetic")
    if info is None or not info.get("filter_manifest") or not (out / info["filter_manifest"]).is_file():
        return None
    table = pq.read_table(out / info["filter_manifest"])
    summary = _read_json(out / info["summary"]).get("filtering", {}) if info.get("summary") else {}
    ranked = table.filter(pc.is_valid(table[RANK])) if {QUALITY, RANK} <= set(table.column_names) else None
    if ranked is None or not ranked.num_rows:
        return {"backend": summary.get("backend"), "scored": 0, "kept": 0, "limit": summary.get("limit"),
                "cut_score": None, "scores": describe([]), "kept_scores": describe([]), "histogram": None,
                "dimensions": {}}
    scores = ranked[QUALITY].to_numpy(zero_copy_only=False).astype(np.float64)
    kept = pc.equal(ranked["status"], OK).to_numpy(zero_copy_only=False)
    counts, edges = np.histogram(scores, bins=HIST_BINS)
    dims = [c for c in table.column_names if c.startswith("vbench_")]
    return {
        "backend": summary.get("backend"),
        "scored": int(scores.size),
        "kept": int(kept.sum()),
        "limit": summary.get("limit"),
        "cut_score": float(scores[kept].min()) if kept.any() else None,
        "scores": describe(scores),
        "kept_scores": describe(scores[kept]),
        "histogram": {"edges": edges.tolist(), "scored": counts.tolist(),
                      "kept": np.histogram(scores[kept], bins=edges)[0].tolist()},
        "dimensions": {c.removeprefix("vbench_"): describe(ranked[c].to_numpy(zero_copy_only=False)) for c in dims},
    }


def _screening(out: Path, record: dict) -> dict | None:
    """Kept / rejected / not reviewed of the event set, and whether a person looked at all (the policy)."""
    from filtering import review_counts

    info = record.get("sets", {}).get("event")
    if info is None or not info.get("screened_manifest") or not (out / info["screened_manifest"]).is_file():
        return None
    policy = (info.get("screening") or {}).get("policy")
    counts = review_counts(pq.read_table(out / info["screened_manifest"]))
    by_person = policy == "decisions"  # any other policy keeps videos nobody looked at
    return {"policy": policy, "screened_by_a_person": by_person,
            "accept_rate": counts["keep_rate"] if by_person else None, **counts}


def _mixture(out: Path, record: dict) -> dict | None:
    """Requested weight shares against those a seeded simulation of the trainer's sampler draws, per set and, with
    the per-task weights it draws by, per task."""
    from yume_core.mixture import MixtureSampler, default_schedule, read_mixture

    if not record.get("mixture") or not (out / record["mixture"]).is_file():
        return None
    sources = read_mixture(out / record["mixture"])
    schedule = default_schedule(sources)
    sim = MixtureSampler(sources, schedule=schedule).simulate(MIX_STEPS)
    per_task = "; ".join(f"{t}: " + ", ".join(f"{n} {w:.3f}" for n, w in ws.items())
                         for t, ws in sim["task_weights"].items())
    return {"file": record["mixture"], "schedule": list(schedule), "simulated_steps": MIX_STEPS,
            "requested": sim["requested"], "realized": sim["realized"], "tasks": sim["tasks"],
            "sets_by_task": sim["sets_by_task"], "task_weights": sim["task_weights"],
            "realized_by_task": sim["realized_by_task"],
            "note": "a weight is the set's share of the samples: the trainer alternates the tasks of the schedule "
                    "and draws each task's samples with per-task weights solved so that every set gets its share "
                    f"from the tasks it trains ({per_task})"}


def _stages(record: dict) -> dict:
    # Not the step's status: done now or skipped as done before is how this run went, not what the data is, and a
    # rerun that skips every step then writes the same card.
    steps = [{"name": s["name"], "seconds": s.get("seconds", 0.0), "device": s.get("device"),
              "gpu_hours": s.get("gpu_hours")} for s in record.get("steps", [])]
    gpu = [s["gpu_hours"] for s in steps if s["gpu_hours"] is not None]
    return {"steps": steps, "seconds": round(sum(s["seconds"] for s in steps), 2),
            "gpu_hours": round(sum(gpu), 4) if gpu else None,
            "note": "seconds of the run that did each step's work (a rerun that skips a step keeps its time)"}


def _warnings(card: dict) -> list[str]:
    """What a reader must not miss, first on every rendering."""
    notes = []
    screening = card["screening"]
    if screening and not screening["screened_by_a_person"]:
        notes.append(f"The event set was NOT screened by a person (screening policy {screening['policy']}): "
                     f"{screening['ok']} of {screening['rows']} generated videos went into it unseen.")
    notes += [f"No {n} set in this build." for n in card["missing_sets"]]
    notes += [f"The {n} set has no samples." for n, s in card["sets"].items() if not s["samples"]]
    quality = card["quality"]
    if quality is not None and not quality["scored"]:
        notes.append("The synthetic set has no VBench quality scores: nothing was ranked.")
    return notes


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------------- README.md


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def front_matter(card: dict, extras: Extras) -> dict:
    """The Hub's YAML metadata: one config per set that has shards, its features and sizes."""
    built = [n for n, s in card["sets"].items() if s["shards"]]
    configs, infos = [], []
    for i, name in enumerate(built):
        s = card["sets"][name]
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": s["data_files"]}],
                        **({"default": True} if i == 0 else {})})
        infos.append({"config_name": name, "features": extras.features[name],
                      "splits": [{"name": "train", "num_bytes": s["bytes"], "num_examples": s["samples"]}],
                      "download_size": s["bytes"], "dataset_size": s["bytes"]})
    return {
        "pretty_name": card["title"],
        "license": "other",
        "license_name": "mixed-sources",
        "task_categories": ["text-to-video", "image-to-video"],
        "tags": ["video", "world-model", "webdataset", "interactive-video", "camera-control", "yume", "sekai"],
        "size_categories": [_size_category(sum(s["samples"] for s in card["sets"].values()))],
        "configs": configs,
        "dataset_info": infos,
    }


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_readme(card: dict, extras: Extras) -> str:
    meta = yaml.safe_dump(front_matter(card, extras), sort_keys=False, allow_unicode=True, width=120)
    build = card["build"]
    parts = [f"---\n{meta}---", f"# {card['title']}",
             f"Built {build['build_time']} with the `{build['preset'] or 'custom'}` preset of `yume-data build`. "
             "`card.html` beside this file shows the plots (funnel, clip lengths, actions, scores, sample frames); "
             "`card.json` holds every figure for programs."]
    parts += [f"> **{w}**" for w in card["warnings"]]
    parts += ["## Sets", _md_table(
        ["set", "samples", "failed", "shards", "bytes", "hours", "tasks", "weight", "files"],
        [[n, s["samples"], s["failed"], s["shards"], s["bytes"], f"{s['hours']:.3f}", "+".join(s["tasks"]),
          s["weight"], f"`{s['data_files']}`"] for n, s in card["sets"].items()])]
    if card["event_tasks"]:
        tasks = " and ".join(t.upper() for t in card["event_tasks"]["tasks"])
        parts += ["### Tasks of the event set",
                  f"This build trains the event set on **{tasks}** (the setting `{card['event_tasks']['setting']}`). "
                  f"{card['event_tasks']['note']}"]
    if card["screening"]:
        sentence = _screening_sentence(card["screening"])
        parts += ["### Screening of the event set", sentence if card["screening"]["screened_by_a_person"] else
                  f"**{sentence}**"]
    parts += ["## Loading", _loading_text(card)]
    parts += ["## How it was made", "Rows in, kept, dropped and failed at every stage (reasons in `card.json`):",
              _md_table(["stage", "set", "in", "ok", "dropped", "failed", "reasons"],
                        [[f["step"], f["set"], f["in"], f["ok"], f["dropped"], f["failed"], _reasons(f)]
                         for f in card["funnel"]])]
    if card["mixture"]:
        mix = card["mixture"]
        parts += ["## Mixture", f"`{mix['file']}` (a Megatron-Energon metadataset) weights the sets; shares over "
                  f"{mix['simulated_steps']:,} simulated trainer steps ({mix['note']}):",
                  _md_table(["set", "requested", "realized"],
                            [[n, f"{v:.3f}", f"{mix['realized'].get(n, 0.0):.3f}"]
                             for n, v in mix["requested"].items()])]
    parts += ["## Sources and licences", _md_table(
        ["set", "source", "made by", "licence", "models in this build"],
        [[n, f"[{src['source']}]({src['url']})", src["made"], src["licence"],
          _models_text(card["sets"][n]["models"])] for n, src in card["sources"].items()]),
              "Check each source's terms before redistributing the shards."]
    parts += ["## Sample schema", f"Every `<key>.json` follows sample schema version {card['sample_schema_version']} "
              "(`yume_core/samples.py`): `set`, `tasks`, `event_text` per task (the event description, kept apart "
              "from the action description), `fps`/`frames`/`width`/`height` of the mp4 member, `actions` "
              "(keyboard and mouse labels per frame step, segments and chunks with their phrases) and `provenance`."]
    return "\n\n".join(parts) + "\n"


def _screening_sentence(s: dict) -> str:
    if not s["screened_by_a_person"]:
        return (f"Not screened by a person: the build ran with the {s['policy']} screening policy, and {s['ok']} "
                f"of {s['rows']} generated videos went on without anyone looking at them.")
    rate = f"{s['accept_rate']:.1%}" if s["accept_rate"] is not None else "n/a"
    return (f"Screened by a person: {s['kept']} kept, {s['rejected']} rejected, {s['not_reviewed']} not reviewed "
            f"of {s['rows']} rows (accept rate {rate}).")


def _loading_text(card: dict) -> str:
    name = next(iter(n for n, s in card["sets"].items() if s["shards"]), "real_world")
    return ("Each set is a folder of WebDataset tars with `index.parquet` and a prepared Megatron-Energon "
            "`.nv-meta/`:\n\n```python\nfrom datasets import load_dataset\n"
            f"ds = load_dataset(\"path/to/this/folder\", \"{name}\", split=\"train\")\n\n"
            f"import glob, webdataset as wds\nsamples = wds.WebDataset(sorted(glob.glob(\"{name}/*.tar\")))\n```\n\n"
            "Energon reads `mixture.yaml` as it is (`get_train_dataset(\"mixture.yaml\", ...)`).")


def _reasons(stage: dict) -> str:
    return ", ".join(f"{r['reason']} ({r['status']}) {r['count']}" for r in stage["by_reason"]) or "-"


def _models_text(models: dict) -> str:
    return "; ".join(f"{kind}: " + ", ".join(f"{m} ({n})" for m, n in c.items()) for kind, c in models.items()) \
        or "-"


# --------------------------------------------------------------------------------------------------- card.html

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
e = html.escape


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else e(str(value))


def _bytes(n: int) -> str:
    if n < 1000:
        return f"{n:,} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} TB"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are HTML already (the caller escapes text)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(uri: str | None, alt: str, missing: str) -> str:
    return f'<img class="plot" alt="{e(alt)}" src="{uri}">' if uri else f'<p class="none">{e(missing)}</p>'


def _dist_row(label: str, d: dict, digits: int = 2) -> list[str]:
    sd = d["variance"] ** 0.5 if d["variance"] is not None else None
    return [e(label), _num(d["count"]), _num(d["mean"], digits), _num(sd, digits), _num(d["min"], digits),
            _num(d["max"], digits)]


DIST_HEADERS = ["", "count", "mean", "sd", "min", "max"]


def render_html(card: dict, extras: Extras) -> str:
    """The page for people: every section of the card with its plot and its numbers."""
    from pipelines import card_figures as figs

    sections = [
        ("sets", "Sets", _html_sets(card)),
        ("funnel", "Funnel", _html_funnel(card, figs.funnel(card["funnel"]))),
        ("clips", "Clips", _html_clips(card, figs.clips(card["sets"]))),
        ("actions", "Actions (keys x mouse)", _html_actions(card)),
        ("quality", "Synthetic set: VBench quality", _html_quality(card, figs.quality(card["quality"]))),
        ("captions", "Training texts", _html_captions(card, figs.captions(card["sets"]))),
        ("screening", "Event set: screening", _html_screening(card)),
        ("mixture", "Mixture", _html_mixture(card, figs.mixture(card["mixture"]))),
        ("time", "Time per stage", _html_time(card, figs.stage_times(card["stages"]["steps"]))),
        ("frames", "Sample frames", _html_frames(extras)),
        ("sources", "Sources and licences", _html_sources(card)),
    ]
    nav = " ".join(f'<a href="#{k}">{e(t)}</a>' for k, t, _ in sections)
    build = card["build"]
    head = [f"<h1>{e(card['title'])}</h1>",
            f'<p class="meta">built {e(str(build["build_time"]))} &middot; preset {e(str(build["preset"]))} '
            f"&middot; card version {card['card_version']} &middot; sample schema {card['sample_schema_version']}"
            f"</p>", f"<nav>{nav}</nav>"]
    head += [f'<p class="warning">{e(w)}</p>' for w in card["warnings"]]
    body = "\n".join(head + [f'<section id="{k}"><h2>{e(t)}</h2>\n{b}\n</section>' for k, t, b in sections])
    fill = {"title": e(card["title"]), "body": body}
    return _PLACEHOLDER.sub(lambda m: fill[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def _html_sets(card: dict) -> str:
    rows = [[e(n), _num(s["samples"]), _num(s["failed"]), _num(s["shards"]), _bytes(s["bytes"]),
             _num(s["hours"]), e(", ".join(f"{t} {c}" for t, c in s["samples_per_task"].items()) or "-"),
             _num(s["weight"]), f"<code>{e(s['data_files'])}</code>"] for n, s in card["sets"].items()]
    page = _table(["set", "samples", "failed", "shards", "size", "hours", "samples per task", "weight", "files"],
                  rows, "num")
    if card["event_tasks"]:
        tasks = " and ".join(t.upper() for t in card["event_tasks"]["tasks"])
        page += (f'<p class="setting">The event set trains <strong>{e(tasks)}</strong> in this build (the '
                 f"setting <code>{e(card['event_tasks']['setting'])}</code>). "
                 f"{e(card['event_tasks']['note'])}</p>")
    return page


def _html_funnel(card: dict, uri: str | None) -> str:
    rows = [[e(f["step"]), e(f["set"]), _num(f["in"]), _num(f["ok"]), _num(f["dropped"]), _num(f["failed"]),
             "<br>".join(f"{e(r['reason'])} <span class='{e(r['status'])}'>{e(r['status'])}</span> {r['count']:,}"
                         for r in f["by_reason"]) or "-"] for f in card["funnel"]]
    return _figure(uri, "rows per stage", "No stage recorded per-row verdicts.") + \
        _table(["stage", "set", "in", "ok", "dropped", "failed", "by reason"], rows, "num")


def _html_clips(card: dict, uri: str | None) -> str:
    rows = []
    for name, s in card["sets"].items():
        rows += [_dist_row(f"{name}: seconds", s["clip_seconds"]), _dist_row(f"{name}: frames", s["frames"], 1),
                 _dist_row(f"{name}: fps", s["fps"], 2)]
    res = [[e(n), e(", ".join(f"{r}: {c}" for r, c in s["resolution"].items()) or "-")]
           for n, s in card["sets"].items()]
    return _figure(uri, "clip length and resolution", "No set has samples.") + \
        _table(DIST_HEADERS, rows, "num") + _table(["set", "samples per width x height"], res)


def _html_actions(card: dict) -> str:
    parts = []
    for name, s in card["sets"].items():
        grid = s["actions"]
        if grid is None:
            parts.append(f"<h3>{e(name)}</h3><p class='none'>No action labels in this set.</p>")
            continue
        top = max(max(row) for row in grid["pairs"])
        header = "".join(f"<th>{e(m)}</th>" for m in grid["mouse"])
        body = "".join(
            f"<tr><th>{e(k)}</th>" + "".join(
                f'<td style="background: rgba(31,119,180,{c / top:.3f})">{c:,}</td>' for c in row) + "</tr>"
            for k, row in zip(grid["keys"], grid["pairs"]))
        parts.append(f"<h3>{e(name)}: {grid['steps']:,} labelled frame steps</h3>"
                     f'<table class="grid"><thead><tr><th>keys \\ mouse</th>{header}</tr></thead>'
                     f"<tbody>{body}</tbody></table>")
    return "\n".join(parts) or "<p class='none'>No sets.</p>"


def _html_quality(card: dict, uri: str | None) -> str:
    q = card["quality"]
    if q is None:
        return "<p class='none'>No synthetic set in this build.</p>"
    facts = (f"<p>{q['kept']:,} of {q['scored']:,} scored videos kept (limit {_num(q['limit'])}, backend "
             f"{e(str(q['backend']))}); cut at quality score {_num(q['cut_score'], 4)}.</p>")
    rows = [_dist_row("quality score (scored)", q["scores"], 4), _dist_row("quality score (kept)", q["kept_scores"], 4)]
    rows += [_dist_row(d, stats, 4) for d, stats in q["dimensions"].items()]
    return _figure(uri, "quality scores and the cut", "No VBench scores: nothing was ranked.") + facts + \
        _table(DIST_HEADERS, rows, "num")


def _html_captions(card: dict, uri: str | None) -> str:
    rows = [_dist_row(f"{n}: {t} words", d, 1) for n, s in card["sets"].items() for t, d in s["caption_words"].items()]
    return _figure(uri, "words per training text", "No training texts.") + _table(DIST_HEADERS, rows, "num")


def _html_screening(card: dict) -> str:
    s = card["screening"]
    if s is None:
        return "<p class='none'>No event set in this build.</p>"
    cls = "warning" if not s["screened_by_a_person"] else "setting"
    rows = [[e(c), _num(v["rows"]), _num(v["kept"]), _num(v["rejected"]), _num(v["not_reviewed"]),
             _num(v["keep_rate"])] for c, v in s.get("by_category", {}).items()]
    return f'<p class="{cls}">{e(_screening_sentence(s))}</p>' + \
        _table(["category", "rows", "kept", "rejected", "not reviewed", "keep rate"], rows, "num")


def _html_mixture(card: dict, uri: str | None) -> str:
    mix = card["mixture"]
    if mix is None:
        return "<p class='none'>No mixture in this build.</p>"
    rows = [[e(n), _num(v), _num(mix["realized"].get(n, 0.0))] for n, v in mix["requested"].items()]
    by_task = [[e(k), _num(v)] for k, v in mix["sets_by_task"].items()]
    return (_figure(uri, "requested and realized shares", "") +
            f"<p>{e(mix['file'])}: {mix['simulated_steps']:,} simulated steps, schedule "
            f"{e(' / '.join(mix['schedule']))}; {e(mix['note'])}.</p>" +
            _table(["set", "requested", "realized"], rows, "num") + _table(["set / task", "share"], by_task, "num"))


def _html_time(card: dict, uri: str | None) -> str:
    st = card["stages"]
    rows = [[e(s["name"]), _num(float(s["seconds"]), 2), e(str(s["device"])), _num(s["gpu_hours"], 4)]
            for s in st["steps"]]
    gpu = f", {st['gpu_hours']:.4f} GPU-hours" if st["gpu_hours"] is not None else ", no GPU-hours recorded"
    return (_figure(uri, "seconds per step", "No steps recorded.") +
            f"<p>{st['seconds']:,.2f} s in all{gpu}; {e(st['note'])}.</p>" +
            _table(["step", "seconds", "device", "GPU-hours"], rows, "num"))


def _html_frames(extras: Extras) -> str:
    parts = []
    for name, thumbs in extras.thumbs.items():
        cells = []
        for t in thumbs:
            image = (f'<img alt="first frame of {e(t.key)}" src="data:image/jpeg;base64,'
                     f'{base64.b64encode(t.jpeg).decode("ascii")}">' if t.jpeg else
                     "<div class='none'>the mp4 member could not be decoded</div>")
            cells.append(f"<figure>{image}<figcaption><code>{e(t.key)}</code><br>{e(t.text)}</figcaption></figure>")
        parts.append(f"<h3>{e(name)}</h3><div class='frames'>{''.join(cells) or '<p class=none>No samples.</p>'}"
                     "</div>")
    return "\n".join(parts) or "<p class='none'>No sets.</p>"


def _html_sources(card: dict) -> str:
    rows = [[e(n), e(src["source"]), e(src["made"]), e(src["licence"]), e(_models_text(card["sets"][n]["models"]))]
            for n, src in card["sources"].items()]
    return _table(["set", "source", "made by", "licence", "models in this build"], rows) + \
        "<p>Check each source's terms before redistributing the shards.</p>"


# -------------------------------------------------------------------------------------------------- the entry


def write_card(out: str | Path, record: dict) -> dict[str, Path]:
    """Write OUT/README.md, OUT/card.html and OUT/card.json for a finished build; return their paths."""
    out = Path(out)
    card, extras = collect(out, record)
    paths = {"readme": out / "README.md", "html": out / "card.html", "json": out / "card.json"}
    atomic_write_text(paths["json"], json.dumps(card, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(paths["readme"], render_readme(card, extras))
    atomic_write_text(paths["html"], render_html(card, extras))
    return paths

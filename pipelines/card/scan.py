"""One pass over a set's tars: every sample json (seeking past the video bytes) and the first frame of a few mp4
members, folded shard by shard into a `SetScan` so a set's jsons never sit in memory together."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yume_core.actions import KEY_LABELS, MOUSE_LABELS
from yume_core.manifest import OK
from yume_core.remote import open_staged
from yume_core.samples import TASKS

FRAMES_PER_SET = 8  # sample frames shown per set
THUMB_PX = 160  # longest side of a sample frame in the grid


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

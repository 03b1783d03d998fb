"""Re-read a shard folder and check every sample against the index and against itself.

Checks, per sample: its key is in the index, in this shard, at this byte offset; its members (extensions, sizes,
sha256) are the index's; the json parses and follows the sample schema (yume_core.samples: common and per-set fields, its `key` is the sample's, a real-world clip id sanitises to it; an event sample that trains i2v has its `.jpg`); the
action label lists have equal lengths, (frames-1)//stride when a stride is given; segment and chunk frame ranges
lie within [0, frames-1]; the npy loads as float32 (frames, 4, 4) where `frames` is the pose timeline
(`actions.frames`). Across the folder: no key twice, every tar readable, every ok index entry found, and every tar
has its completion marker (`_index/<shard>.done.json`), which agrees with the tar's size, sha256 and sample count:
a writer trusts a shard only through its marker (a resumed run keeps it, a reader's copy is what it describes),
so a shard without one was never finished, and one that differs from it was changed after. The tar's sha256 is
taken as it is read for the sample checks, in one pass. The folder may be a URL (`s3://bucket/set`): index,
markers and tars are then read from object storage.
With `decode=True`, each mp4 is also probed (every packet demuxed, both ends decoded) and its frames, fps and size
compared with the json.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shards.keys import sanitize_key
from shards.writer import INDEX_DIR, INDEX_FILE, MARKER_SUFFIX
from yume_core import remote
from yume_core.manifest import OK
from yume_core.storage import TMP_MARK
from yume_core.samples import check_sample

Error = tuple  # (shard or None, key or None, message)


@dataclass
class VerifyReport:
    shards_dir: str
    samples: int = 0  # samples read from the tars
    shards: int = 0  # tars read
    errors: list[Error] = field(default_factory=list)
    failed_rows: int = 0  # index rows with status failed (inputs that could not become samples; not an error here)

    @property
    def ok(self) -> bool:
        return not self.errors


def _split(name: str) -> tuple[str | None, str | None]:
    """WebDataset's rule: the key is everything before the first dot of the base name."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return None, None
    key, ext = base.split(".", 1)
    prefix = name[: len(name) - len(base)]
    return prefix + key, ext


def _check_range(errors, shard, key, what, items, frames):
    for j, s in enumerate(items):
        a, b = s.get("start_frame"), s.get("end_frame")
        if not isinstance(a, int) or not isinstance(b, int) or not (0 <= a <= b <= frames - 1):
            errors.append((shard, key, f"actions.{what}[{j}] frames [{a}, {b}] not within [0, {frames - 1}]"))
            return


def _check_json(errors, shard, key, data: bytes):
    try:
        rec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        errors.append((shard, key, f"json does not parse: {e}"))
        return None
    if not isinstance(rec, dict):
        errors.append((shard, key, "json is not an object"))
        return None
    problems = check_sample(rec)
    if problems:
        errors.append((shard, key, "json breaks the sample schema: " + "; ".join(problems)))
        return None
    if rec["key"] != key:
        errors.append((shard, key, f"json key {rec['key']!r} is not the sample's key {key!r}"))
    if rec["set"] == "real_world":
        try:
            if sanitize_key(rec["clip_id"]) != key:
                errors.append((shard, key, f"json clip_id {rec['clip_id']!r} does not give key {key!r}"))
        except ValueError:
            errors.append((shard, key, "json clip_id is empty"))
    actions = rec["actions"]
    if not isinstance(actions, dict):
        errors.append((shard, key, "json actions is not an object"))
        return rec
    keys, mouse = actions.get("keys") or [], actions.get("mouse") or []
    frames = actions.get("frames") if actions.get("frames") is not None else rec.get("frames")
    if len(keys) != len(mouse):
        errors.append((shard, key, f"actions.keys has {len(keys)} labels but actions.mouse {len(mouse)}"))
    stride = actions.get("stride")
    if (keys or mouse) and isinstance(stride, int) and stride > 0 and isinstance(frames, int):
        want = max((frames - 1) // stride, 0)
        if len(keys) != want:
            errors.append((shard, key, f"actions have {len(keys)} labels; {frames} frames at stride {stride} give {want}"))
    if isinstance(frames, int):
        _check_range(errors, shard, key, "segments", actions.get("segments") or [], frames)
        _check_range(errors, shard, key, "chunks", actions.get("chunks") or [], frames)
    return rec


def _check_npy(errors, shard, key, data: bytes, rec):
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        errors.append((shard, key, f"npy does not load: {e}"))
        return
    frames = None
    if rec is not None:
        actions = rec.get("actions") if isinstance(rec.get("actions"), dict) else {}
        frames = actions.get("frames") if actions.get("frames") is not None else rec.get("frames")
    if arr.dtype != np.float32 or arr.ndim != 3 or arr.shape[1:] != (4, 4) or (frames is not None and len(arr) != frames):
        errors.append((shard, key, f"npy is {arr.dtype} {arr.shape}, expected float32 ({frames}, 4, 4)"))


def _check_video(errors, shard, key, data: bytes, rec):
    from yume_core.errors import RowError
    from yume_core.media import probe_video  # lazily: PyAV only when decoding

    with tempfile.TemporaryDirectory(prefix="yume-verify-") as tmp:
        p = Path(tmp) / f"{key}.mp4"
        p.write_bytes(data)
        try:
            info = probe_video(p, count_frames=True)
        except RowError as e:
            errors.append((shard, key, f"mp4 does not decode: {e.message}"))
            return
    if rec is None:
        return
    diffs = []
    if rec.get("frames") != info.frames:
        diffs.append(f"frames {info.frames} (json {rec.get('frames')})")
    fps = rec.get("fps")
    if not isinstance(fps, (int, float)) or not math.isclose(fps, info.fps, rel_tol=1e-3):
        diffs.append(f"fps {info.fps:.3f} (json {fps})")
    if (rec.get("width"), rec.get("height")) != (info.width, info.height):
        diffs.append(f"size {info.width}x{info.height} (json {rec.get('width')}x{rec.get('height')})")
    if diffs:
        errors.append((shard, key, "mp4 disagrees with json: " + ", ".join(diffs)))


class _Hashing:
    """A file read front to back, its sha256 and size taken on the way (tarfile's stream mode only reads)."""

    def __init__(self, raw):
        self.raw, self.sha256, self.bytes = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read what tarfile left after the end-of-archive blocks."""
        while self.read(chunk):
            pass


@dataclass
class _TarResult:
    keys: list[str]  # in order
    errors: list[Error]
    sha256: str | None  # of the whole file; None when it could not be read to its end
    bytes: int | None


def _verify_tar(path: str, index_rows: dict, decode: bool) -> _TarResult:
    """Read one tar (a path or URL) once: its samples against `index_rows` (key -> index row, the folder's ok
    rows) and its sha256."""
    shard = path.rsplit("/", 1)[-1]
    errors: list[Error] = []
    keys: list[str] = []

    def finish(key, offset, members):
        keys.append(key)
        entry = index_rows.get(key)
        if entry is None:
            errors.append((shard, key, "sample is not in the index"))
        elif entry["shard"] != shard:
            errors.append((shard, key, f"index puts this key in {entry['shard']}"))
        else:
            if entry["offset"] is not None and entry["offset"] != offset:
                errors.append((shard, key, f"sample starts at byte {offset}, index says {entry['offset']}"))
            want = [(m["ext"], m["bytes"], m["sha256"]) for m in entry["members"]]
            have = [(ext, len(data), hashlib.sha256(data).hexdigest()) for ext, data in members]
            if want != have:
                wmap = {m[0]: m for m in want}
                hmap = {m[0]: m for m in have}
                for ext in sorted(set(wmap) | set(hmap)):
                    w, h = wmap.get(ext), hmap.get(ext)
                    if w is None:
                        errors.append((shard, key, f"member .{ext} is not in the index"))
                    elif h is None:
                        errors.append((shard, key, f"member .{ext} listed in the index is missing"))
                    elif w[1] != h[1]:
                        errors.append((shard, key, f"member .{ext} has {h[1]} bytes, index says {w[1]}"))
                    elif w[2] != h[2]:
                        errors.append((shard, key, f"member .{ext} sha256 differs from the index (corrupted)"))
        data = dict(members)
        if "json" not in data:
            errors.append((shard, key, "sample has no .json member"))
            rec = None
        else:
            rec = _check_json(errors, shard, key, data["json"])
        if "mp4" not in data:
            errors.append((shard, key, "sample has no .mp4 member"))
        elif decode:
            _check_video(errors, shard, key, data["mp4"], rec)
        if "npy" in data:
            _check_npy(errors, shard, key, data["npy"], rec)
        if rec is not None and "i2v" in rec["tasks"] and rec["set"] == "event" and "jpg" not in data:
            errors.append((shard, key, "event sample trains i2v but has no .jpg start image"))

    try:
        with remote.open_input(path) as raw:
            hashed = _Hashing(raw)
            with tarfile.open(fileobj=hashed, mode="r|") as tf:
                cur_key, cur_offset, members = None, None, []
                for m in tf:
                    if not m.isfile():
                        continue
                    key, ext = _split(m.name)
                    if key is None:
                        errors.append((shard, None, f"member {m.name!r} has no extension; not a WebDataset sample"))
                        continue
                    data = tf.extractfile(m).read()
                    if key != cur_key:
                        if cur_key is not None:
                            finish(cur_key, cur_offset, members)
                        cur_key, cur_offset, members = key, m.offset, []
                    if any(e == ext for e, _ in members):
                        errors.append((shard, key, f"member .{ext} appears twice"))
                    members.append((ext, data))
                if cur_key is not None:
                    finish(cur_key, cur_offset, members)
            hashed.drain()
    except (tarfile.TarError, OSError, EOFError) as e:
        errors.append((shard, None, f"tar is unreadable: {e}"))
        return _TarResult(keys, errors, None, None)
    return _TarResult(keys, errors, hashed.sha256.hexdigest(), hashed.bytes)


def _check_marker(errors, shards_dir: str, name: str, tar: _TarResult) -> None:
    marker_name = f"{INDEX_DIR}/{name[: -len('.tar')]}{MARKER_SUFFIX}"
    try:
        marker = json.loads(remote.read_bytes(remote.join(shards_dir, marker_name)))
    except FileNotFoundError:
        errors.append((name, None, f"no completion marker ({marker_name}): the shard was never finished; run the "
                                   "command that wrote it again, which rewrites it"))
        return
    except ValueError as e:
        errors.append((name, None, f"completion marker {marker_name} is not JSON: {e}"))
        return
    if not isinstance(marker, dict):
        errors.append((name, None, f"completion marker {marker_name} is not a JSON object"))
        return
    if tar.sha256 is not None:  # else the tar is reported unreadable already
        if marker.get("bytes") != tar.bytes:
            errors.append((name, None, f"tar has {tar.bytes} bytes, its completion marker says {marker.get('bytes')}"))
        if marker.get("sha256") != tar.sha256:
            errors.append((name, None, f"tar's sha256 is {tar.sha256}, its completion marker says "
                                       f"{marker.get('sha256')} (changed after it was written)"))
    if marker.get("samples") != len(tar.keys):
        errors.append((name, None, f"tar holds {len(tar.keys)} samples, its completion marker says "
                                   f"{marker.get('samples')}"))


def verify_shards(shards_dir: str | Path, decode: bool = False, threads: int | None = None) -> VerifyReport:
    """Check every sample of every tar listed in `shards_dir/index.parquet` or present in `shards_dir` (a folder
    or a URL)."""
    shards_dir = str(shards_dir).rstrip("/") if remote.is_url(str(shards_dir)) else str(shards_dir)
    report = VerifyReport(shards_dir)
    index_rows: dict[str, dict] = {}
    listed: set[str] = set()
    index_path = remote.join(shards_dir, INDEX_FILE)
    if remote.exists(index_path):
        with remote.open_input(index_path) as f:
            index = pq.read_table(f).to_pylist()
        for row in index:
            if row.get("status", OK) != OK:
                report.failed_rows += 1
                continue
            if row["key"] in index_rows:
                report.errors.append((row["shard"], row["key"], "key listed twice in the index"))
            index_rows[row["key"]] = row
            listed.add(row["shard"])
    else:
        report.errors.append((None, None, f"no {INDEX_FILE} in {shards_dir}"))
    present = {u.rsplit("/", 1)[-1] for u in remote.list_files(shards_dir, ".tar")}
    present = {n for n in present if not n.startswith(TMP_MARK)}
    for name in sorted(listed - present):
        report.errors.append((name, None, "shard listed in the index is missing"))
    tars = [remote.join(shards_dir, n) for n in sorted(present)]
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as ex:  # sha256 and file reads release the GIL
        results = list(ex.map(lambda p: _verify_tar(p, index_rows, decode), tars))
    seen: dict[str, str] = {}
    found: set[str] = set()
    for name, tar in zip(sorted(present), results):
        report.shards += 1
        report.samples += len(tar.keys)
        report.errors.extend(tar.errors)
        _check_marker(report.errors, shards_dir, name, tar)
        for key in tar.keys:
            if key in seen:
                report.errors.append((name, key, f"duplicate key (also in {seen[key]})"))
            else:
                seen[key] = name
            found.add(key)
    for key, row in index_rows.items():
        if key not in found and row["shard"] in present:
            report.errors.append((row["shard"], key, "index entry not found in its shard"))
    return report


def format_report(report: VerifyReport, max_errors: int = 50) -> str:
    head = f"{report.shards_dir}: {report.samples} samples in {report.shards} shards"
    if report.failed_rows:
        head += f" ({report.failed_rows} input rows failed at write time; see the index's status/error)"
    if report.ok:
        return head + ": OK"
    lines = [head + f": {len(report.errors)} problem(s)"]
    for shard, key, message in report.errors[:max_errors]:
        where = "/".join(x for x in (shard, key) if x) or "-"
        lines.append(f"  {where}: {message}")
    if len(report.errors) > max_errors:
        lines.append(f"  ... and {len(report.errors) - max_errors} more")
    return "\n".join(lines)

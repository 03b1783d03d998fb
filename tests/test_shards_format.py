"""Sample format: members, json fields, keys; round trips through webdataset and Hugging Face `datasets`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import shards
from shards import KeyCollisionError, ShardConfig, build_sample, sanitize_key, write_shards
from test_shards_helpers import make_manifest, manifest, ok_rows  # noqa: F401  (fixture)

PROVENANCE = {
    "pipeline": "yume-data test",
    "actions": {"stride": 1, "translation_threshold": 1e-4, "rotation_threshold": 1e-3, "vocabulary": "yume15"},
}


@pytest.fixture(scope="module")
def written(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    index = write_shards(manifest, out, ShardConfig(max_count=2), PROVENANCE)
    return out, index


def _poses(path: str) -> np.ndarray:
    with np.load(path) as z:
        return z["extrinsic"]


def test_build_sample_members_and_json(manifest):
    row = ok_rows(manifest)[0]
    s = build_sample(row, ShardConfig(), PROVENANCE)
    assert set(s) == {"__key__", "mp4", "json", "npy"}
    assert s["__key__"] == row["clip_id"]  # Sekai-style ids pass unchanged
    assert s["mp4"] == Path(row["video_path"]).read_bytes()
    rec = json.loads(s["json"].decode("utf-8"))
    assert set(shards.REQUIRED_JSON_FIELDS) <= set(rec)
    assert (rec["clip_id"], rec["fps"], rec["frames"], rec["width"], rec["height"]) == (
        row["clip_id"], 30.0, row["video_frames"], 64, 36)
    assert rec["captions"] == {"scene": row["caption"], "caption_event": row["caption_event"],
                               "prompt_t2v": row["prompt_t2v"]}
    a = rec["actions"]
    assert a["keys"] == row["keys"] and a["mouse"] == row["mouse"]
    assert a["segments"] == row["segments"] and a["chunks"] == row["chunks"]
    assert a["stride"] == 1 and a["vocabulary"] == "yume15" and a["translation_threshold"] == 1e-4
    assert a["frames"] == row["num_poses"] and "trajectory_flags" not in a  # published labels: as before modes
    heading = build_sample(row, ShardConfig(), {**PROVENANCE, "actions": {**PROVENANCE["actions"], "mode": "heading"}})
    assert json.loads(heading["json"])["actions"]["trajectory_flags"] == (row.get("trajectory_flags") or [])
    assert rec["metrics"]["turn_deg"] is None  # NaN in the manifest: JSON has no NaN
    assert rec["metrics"]["speed"] == pytest.approx(row["speed"])
    assert rec["meta"] == {k: row[k] for k in ("location", "scene", "crowd_density", "weather", "time_of_day",
                                               "youtube_id", "start_frame", "end_frame")}
    prov = rec["provenance"]
    assert prov["sources"]["video"] == row["video_path"] and prov["sources"]["camera"] == row["camera_path"]
    assert prov["config"] == PROVENANCE and prov["pipeline_version"] and prov["created"]
    poses = np.load(io.BytesIO(s["npy"]), allow_pickle=False)
    assert poses.dtype == np.float32 and poses.shape == (row["num_poses"], 4, 4)
    np.testing.assert_array_equal(poses, _poses(row["camera_path"]))


def test_no_poses_when_not_asked_or_absent(manifest):
    row = ok_rows(manifest)[0]
    assert "npy" not in build_sample(row, ShardConfig(include_poses=False))
    assert "npy" not in build_sample({**row, "camera_path": None}, ShardConfig())


def test_only_ok_rows_are_written(manifest, written):
    out, index = written
    want = [r["clip_id"] for r in ok_rows(manifest)]
    assert index["clip_id"].to_pylist() == want
    assert set(index["status"].to_pylist()) == {"ok"}
    in_tars = set()
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as tf:
            in_tars |= {m.name.split(".", 1)[0] for m in tf}
    assert in_tars == set(want)


def test_round_trip_webdataset(manifest, written):
    import webdataset as wds

    out, index = written
    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    ds = wds.WebDataset(urls, shardshuffle=False).decode()
    got = {s["__key__"]: s for s in ds}
    rows = {r["clip_id"]: r for r in ok_rows(manifest)}
    assert set(got) == set(rows)
    for key, s in got.items():
        row = rows[key]
        assert s["mp4"] == Path(row["video_path"]).read_bytes()
        assert s["json"]["clip_id"] == row["clip_id"] and s["json"]["actions"]["keys"] == row["keys"]
        np.testing.assert_array_equal(s["npy"], _poses(row["camera_path"]))


def test_round_trip_hugging_face_datasets(manifest, written, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is a dev extra: pip install -e .[dev]")

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    out, _ = written
    files = [str(p) for p in sorted(out.glob("*.tar"))]
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    # mp4 members become a Video feature; read them as bytes (decoding needs torchcodec)
    ds = ds.cast_column("mp4", datasets.Video(decode=False))
    rows = {r["clip_id"]: r for r in ok_rows(manifest)}
    assert ds.num_rows == len(rows)
    assert sorted(ds["__key__"]) == sorted(rows)
    for ex in ds:
        row = rows[ex["__key__"]]
        assert ex["mp4"]["bytes"] == Path(row["video_path"]).read_bytes()
        rec = ex["json"]
        assert rec["clip_id"] == row["clip_id"] and rec["frames"] == row["video_frames"]
        assert rec["captions"]["scene"] == row["caption"]
        assert rec["actions"]["keys"] == row["keys"] and rec["actions"]["mouse"] == row["mouse"]
        assert [s["end_frame"] for s in rec["actions"]["segments"]] == [s["end_frame"] for s in row["segments"]]
        np.testing.assert_array_equal(np.asarray(ex["npy"], np.float32), _poses(row["camera_path"]))


@pytest.mark.parametrize(
    "clip_id, key",
    [
        ("1hCmaStd-AY_0019950_0021750", "1hCmaStd-AY_0019950_0021750"),
        ("_a_b-c_d_0000000_0001800", "_a_b-c_d_0000000_0001800"),
        ("openvid/clip.0001.mp4", "openvid_clip_0001_mp4"),
        ("a b\\c:é", "a_b_c__"),
    ],
)
def test_sanitize_key(clip_id, key):
    assert sanitize_key(clip_id) == key
    assert "." not in key and "/" not in key


def test_key_collision_is_an_error_before_anything_is_written(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=3, bad_rows=False, extra_captions=False)
    ids = t["clip_id"].to_pylist()
    ids[1] = ids[0].replace("_", ".", 1)  # "x_y" and "x.y" both sanitise to "x_y"
    assert sanitize_key(ids[1]) == sanitize_key(ids[0])
    t = t.set_column(t.schema.get_field_index("clip_id"), "clip_id", pa.array(ids))
    with pytest.raises(KeyCollisionError, match="both sanitise"):
        write_shards(t, tmp_path / "out", ShardConfig())
    assert not list((tmp_path / "out").glob("*.tar"))


def test_long_and_odd_clip_ids_round_trip(tmp_path):
    import webdataset as wds

    t = make_manifest(tmp_path / "in", n_ok=2, bad_rows=False, extra_captions=False)
    ids = ["x" * 150 + ".v1", "openvid/ümlaut clip.mp4"]
    t = t.set_column(t.schema.get_field_index("clip_id"), "clip_id", pa.array(ids))
    index = write_shards(t, tmp_path / "out", ShardConfig(include_poses=False))
    assert index["key"].to_pylist() == [sanitize_key(i) for i in ids]
    got = {s["__key__"]: s for s in wds.WebDataset([str(tmp_path / "out" / "shard-000000.tar")],
                                                    shardshuffle=False).decode()}
    assert set(got) == set(index["key"].to_pylist())
    assert {s["json"]["clip_id"] for s in got.values()} == set(ids)
    assert shards.verify_shards(tmp_path / "out").ok


def test_missing_video_fails_that_row_only(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=3, bad_rows=False, extra_captions=False)
    gone = t["video_path"][1].as_py()
    os.unlink(gone)
    index = write_shards(t, tmp_path / "out", ShardConfig())
    assert index["status"].to_pylist() == ["ok", "ok", "failed"]  # failed rows sort last
    bad = index.filter(pa.compute.equal(index["status"], "failed")).to_pylist()[0]
    assert bad["clip_id"] == t["clip_id"][1].as_py() and bad["reason"] == "video_missing" and bad["shard"] is None
    assert gone in bad["error"]
    rep = shards.verify_shards(tmp_path / "out")
    assert rep.ok and rep.samples == 2 and rep.failed_rows == 1


def test_changed_video_is_caught(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=2, bad_rows=False, extra_captions=False)
    with open(t["video_path"][0].as_py(), "ab") as f:
        f.write(b"junk")
    index = write_shards(t, tmp_path / "out", ShardConfig())
    assert index.to_pylist()[-1]["reason"] == "video_changed"


def test_index_sha256_matches_sources(manifest, written):
    _, index = written
    rows = {r["clip_id"]: r for r in ok_rows(manifest)}
    for entry in index.to_pylist():
        members = {m["ext"]: m for m in entry["members"]}
        assert [m["ext"] for m in entry["members"]] == ["json", "mp4", "npy"]
        src = Path(rows[entry["clip_id"]]["video_path"]).read_bytes()
        assert members["mp4"]["sha256"] == hashlib.sha256(src).hexdigest()
        assert members["mp4"]["bytes"] == len(src)
        assert entry["member_bytes"] == sum(m["bytes"] for m in entry["members"])


def _with_probe_digest(t: pa.Table, digest_of) -> pa.Table:
    """The columns the clip stage's probe records: size, mtime and sha256 of each video."""
    paths = t["video_path"].to_pylist()
    stats = [os.stat(p) for p in paths]
    t = t.set_column(t.schema.get_field_index("video_bytes"), "video_bytes", pa.array([s.st_size for s in stats], pa.int64()))
    t = t.set_column(t.schema.get_field_index("video_mtime_ns"), "video_mtime_ns",
                     pa.array([s.st_mtime_ns for s in stats], pa.int64()))
    return t.set_column(t.schema.get_field_index("video_sha256"), "video_sha256", pa.array([digest_of(p) for p in paths]))


def test_probe_digest_is_reused_only_for_an_unchanged_file(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=2, bad_rows=False, extra_captions=False)
    # a recorded digest that is not the file's: reused as is while size and mtime match the probe's ...
    t = _with_probe_digest(t, lambda p: "0" * 64)
    index = write_shards(t, tmp_path / "out", ShardConfig())
    assert [m["sha256"] for r in index.to_pylist() for m in r["members"] if m["ext"] == "mp4"] == ["0" * 64] * 2
    # ... so `shards verify`, which always re-hashes, catches a stale manifest
    assert not shards.verify_shards(tmp_path / "out").ok

    # touched since probing (same size, new mtime): hashed again from the bytes
    first = t["video_path"][0].as_py()
    os.utime(first, ns=(0, t["video_mtime_ns"][0].as_py() + 10**9))
    index = write_shards(t, tmp_path / "out2", ShardConfig())
    mp4 = {r["clip_id"]: m["sha256"] for r in index.to_pylist() for m in r["members"] if m["ext"] == "mp4"}
    assert mp4[t["clip_id"][0].as_py()] == hashlib.sha256(Path(first).read_bytes()).hexdigest()
    assert mp4[t["clip_id"][1].as_py()] == "0" * 64

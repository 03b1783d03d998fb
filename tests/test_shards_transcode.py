"""Shards with transcoding (ShardConfig.fps / size): the mp4 member has the requested frames, rate and size."""

from __future__ import annotations

import json
import math
import tarfile

import pytest

from shards import ShardConfig, verify_shards, write_shards
from test_shards_helpers import make_manifest, ok_rows
# PyAV (with its bundled libx264) is a core dependency and the shard writer transcodes through this module: nothing
# here is optional, so an import error fails the module instead of skipping it
from yume_core import media


def test_transcoded_shards(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=2, bad_rows=True, frames=(20, 31))
    cfg = ShardConfig(fps=15, size=(32, 18), crf=30)
    out = tmp_path / "out"
    index = write_shards(t, out, cfg)
    assert set(index["status"].to_pylist()) == {"ok"}
    rows = {r["clip_id"]: r for r in ok_rows(t)}
    with tarfile.open(out / "shard-000000.tar") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf}
    for cid, row in rows.items():
        rec = json.loads(members[f"{cid}.json"])
        mp4 = tmp_path / f"{cid}.mp4"
        mp4.write_bytes(members[f"{cid}.mp4"])
        info = media.probe_video(mp4)
        want = math.ceil(row["video_frames"] * 15 / 30)
        assert (info.frames, info.width, info.height) == (want, 32, 18)
        assert info.fps == pytest.approx(15)
        assert (rec["frames"], rec["fps"], rec["width"], rec["height"]) == (want, 15.0, 32, 18)
        # labels and poses stay on the source timeline
        assert rec["actions"]["frames"] == row["num_poses"] and len(rec["actions"]["keys"]) == row["num_poses"] - 1
        assert members[f"{cid}.mp4"] != open(row["video_path"], "rb").read()
    rep = verify_shards(out, decode=True)
    assert rep.ok, rep.errors


def test_transcode_failure_fails_the_row(tmp_path):
    t = make_manifest(tmp_path / "in", n_ok=2, bad_rows=False, frames=(20, 24))
    with open(t["video_path"][0].as_py(), "wb") as f:
        f.write(b"not a video at all")
    index = write_shards(t, tmp_path / "out", ShardConfig(size=(32, 18)))
    assert index["status"].to_pylist() == ["ok", "failed"]
    assert index["reason"][1].as_py() == "video_unreadable"

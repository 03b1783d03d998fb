"""Resume notices replaced inputs: a video regenerated under the same name is probed again and its shard rewritten;
the other batches and shards are kept as they were."""

from __future__ import annotations

import os
import shutil

import pytest

from pipelines.real_world import RealWorldConfig, run_flow
from yume_core.config import from_dict
from yume_core.identity import MISSING, batch_keys, file_identities
from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample


def test_identities_change_with_a_replaced_file_and_not_otherwise(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    first = file_identities([str(a), str(b), None, str(tmp_path / "gone")])
    assert first[2] is None and first[3] == MISSING
    assert file_identities([str(a), str(b)]) == first[:2]
    a.write_bytes(b"three")
    assert file_identities([str(a), str(b)])[1] == first[1] and file_identities([str(a)])[0] != first[0]
    keys = batch_keys([["x", "y", "z"]], 2, 3)
    assert len(keys) == 2 and batch_keys([["x", "y", "Z"]], 2, 3) == [keys[0], batch_keys([["Z"]], 2, 1)[0]]


@pytest.mark.slow
def test_a_replaced_video_is_probed_again_and_only_its_shard_rewritten(tmp_path):
    sample = make_sekai_sample(tmp_path / "sekai", n_clips=4, n_frames=60, size=(64, 36))
    other = make_sekai_sample(tmp_path / "other", n_clips=4, n_frames=60, size=(64, 36), seed=5)
    cfg = from_dict(RealWorldConfig, {"batch_size": 2, "shards": {"max_count": 2}})
    out = tmp_path / "out"

    def run():
        run_flow(str(sample.csv_path), str(sample.videos_dir), str(sample.cameras_dir), str(out), cfg)
        return read_manifest(out / "manifest.parquet").to_pylist()

    before = run()
    tars = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").glob("*.tar")}
    parts = {p: p.stat().st_mtime_ns for p in (out / "_work").rglob("part-*.parquet")}
    target = before[3]  # second batch, second shard
    replacement = sorted(other.videos_dir.glob("*.mp4"))[0]
    shutil.copyfile(replacement, target["video_path"])
    os.utime(target["video_path"], ns=(1, 2))  # a different mtime, whatever the clock's resolution
    after = run()

    changed = [a for a, b in zip(after, before) if a != b]
    assert [r["clip_id"] for r in changed] == [target["clip_id"]]
    assert changed[0]["video_bytes"] == replacement.stat().st_size
    assert changed[0]["video_sha256"] != target["video_sha256"] and changed[0]["status"] == "ok"
    redone = [p for p, t in parts.items() if p.stat().st_mtime_ns != t]
    assert len(redone) == 1 and redone[0].name == "part-00001.parquet"  # the clips batch that holds it
    now = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").glob("*.tar")}
    rewritten = sorted(n for n in now if now[n] != tars[n])
    assert rewritten == [target["shard"]]

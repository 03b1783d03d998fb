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


@pytest.mark.slow
def test_a_replaced_object_is_noticed_with_a_staging_folder_left_from_the_earlier_run(s3_endpoint, s3_bucket,
                                                                                      tmp_path):
    """Inputs and output in S3. An input video is replaced under the same key between two runs into one URL that
    share a staging folder (as a rerun on the same node does): the rerun probes it again and rewrites only its
    shard, and the result holds the bytes of a clean run from the new inputs into another URL and staging."""
    import hashlib
    import subprocess
    import sys

    import fsspec

    from object_store import env_for_subprocess

    sample = make_sekai_sample(tmp_path / "sekai", n_clips=4, n_frames=60, size=(64, 36))
    other = make_sekai_sample(tmp_path / "other", n_clips=4, n_frames=60, size=(64, 36), seed=5)
    fs = fsspec.filesystem("s3")
    inputs = f"{s3_bucket}/sekai"
    fs.put(str(sample.out_dir) + "/", inputs + "/", recursive=True)
    csv, videos, cameras = (f"{inputs}/{p.relative_to(sample.out_dir).as_posix()}"
                            for p in (sample.csv_path, sample.videos_dir, sample.cameras_dir))

    def run(out: str, staging: str) -> subprocess.CompletedProcess:
        env = env_for_subprocess(s3_endpoint, tmp_path / staging)
        env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), SOURCE_DATE_EPOCH="1767225600")
        env.pop("PREFECT_API_URL", None)
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "real-world", "--csv", csv, "--videos", videos,
                               "--trajectories", cameras, "--output", out, "--batch-size", "2",
                               "--shard-max-count", "2"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def state(out: str) -> tuple[list[dict], dict[str, str]]:
        import pyarrow.parquet as pq

        fs.invalidate_cache()
        with fs.open(f"{out}/manifest.parquet") as f:
            rows = pq.read_table(f).to_pylist()
        tars = {p.rsplit("/", 1)[1]: hashlib.sha256(fs.cat(p)).hexdigest() for p in fs.glob(f"{out}/shards/*.tar")}
        return rows, tars

    out = f"{s3_bucket}/out"
    run(out, "staging")
    before, tars = state(out)
    target = before[3]  # second batch, second shard
    assert target["video_path"].startswith("s3://")
    replacement = sorted(other.videos_dir.glob("*.mp4"))[0]
    fs.put(str(replacement), target["video_path"])
    done = run(out, "staging")  # the same node's staging folder, still holding the first run's state
    assert "video_changed" not in done.stdout + done.stderr
    after, now = state(out)

    changed = [a for a, b in zip(after, before) if a != b]
    assert [r["clip_id"] for r in changed] == [target["clip_id"]] and changed[0]["status"] == "ok"
    assert changed[0]["video_bytes"] == replacement.stat().st_size
    assert changed[0]["video_sha256"] == hashlib.sha256(replacement.read_bytes()).hexdigest()
    assert sorted(n for n in now if now[n] != tars[n]) == [target["shard"]]

    clean = f"{s3_bucket}/clean"
    run(clean, "fresh-staging")
    assert state(clean)[1] == now

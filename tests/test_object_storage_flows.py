"""Whole flows with inputs and outputs in object storage (moto's S3 server on loopback): the real-world flow
killed with SIGKILL mid-run and resumed into the bucket gives the bytes of an uninterrupted run, and a whole build
written to `s3://` is read back there by `shards verify`, `mix info` and the trainer, and built again into another
prefix from another staging folder gives the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

from object_store import env_for_subprocess
from yume_core.sample_data import make_sekai_sample

pytestmark = pytest.mark.slow
EPOCH = "1767225600"


def _env(endpoint: str, tmp_path: Path) -> dict:
    env = env_for_subprocess(endpoint, tmp_path / "staging")
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1", SOURCE_DATE_EPOCH=EPOCH,
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _digests(url: str) -> dict[str, str]:
    """sha256 of every tar, index part, marker, index and `.nv-meta/` file under `url` (what a resumed run must
    reproduce)."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    keep = (".tar", ".done.json", "index.parquet")
    return {p[len(url) - 5:]: hashlib.sha256(fs.cat(p)).hexdigest() for p in sorted(fs.find(url))
            if p.endswith(keep) or "/_index/" in p or "/.nv-meta/" in p}


def _upload_sample(sample, url: str) -> tuple[str, str, str]:
    fsspec.filesystem("s3").put(str(sample.out_dir) + "/", url + "/", recursive=True)
    return tuple(f"{url}/{p.relative_to(sample.out_dir).as_posix()}"
                 for p in (sample.csv_path, sample.videos_dir, sample.cameras_dir))


def test_real_world_killed_and_resumed_into_s3_matches_a_clean_run(s3_endpoint, s3_bucket, tmp_path):
    sample = make_sekai_sample(tmp_path / "sekai", n_clips=8, n_frames=40, size=(64, 36),
                               faults=("video_missing",))
    csv, videos, cameras = _upload_sample(sample, f"{s3_bucket}/sekai")

    def command(out: str) -> list[str]:
        return _cli("real-world", "--csv", csv, "--videos", videos, "--trajectories", cameras, "--output", out,
                    "--batch-size", "2", "--shard-max-count", "2", "--workers", "2")

    clean = f"{s3_bucket}/clean"
    done = subprocess.run(command(clean), env=_env(s3_endpoint, tmp_path / "a"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "s3://" in done.stdout  # the outputs are printed as URLs

    resumed = f"{s3_bucket}/resumed"
    fs = fsspec.filesystem("s3")
    proc = subprocess.Popen(command(resumed), env=_env(s3_endpoint, tmp_path / "b"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # kill once the first shard is finished in the s3_bucket, the others not yet
            fs.invalidate_cache()
            if fs.exists(f"{resumed}/shards/_index/shard-000000.done.json") or fs.exists(f"{resumed}/shards/_index/shard-000001.done.json"):
                break
            assert proc.poll() is None, "the run ended before its first shard was finished"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not fs.exists(f"{resumed}/shards/index.parquet")
    # resumed on "another machine": a fresh staging folder, so the state comes from the s3_bucket alone
    done = subprocess.run(command(resumed), env=_env(s3_endpoint, tmp_path / "c"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _digests(resumed) == _digests(clean) and len(_digests(clean)) >= 8

    verify = subprocess.run(_cli("shards", "verify", f"{resumed}/shards"), env=_env(s3_endpoint, tmp_path / "c"),
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    import pyarrow.parquet as pq

    with fs.open(f"{resumed}/manifest.parquet") as f:
        manifest = pq.read_table(f)
    assert manifest.num_rows == 9 and manifest["status"].to_pylist().count("ok") == 8


def test_a_build_written_to_s3_is_read_back_there(s3_endpoint, s3_bucket, tmp_path):
    """Then built again into another prefix from another staging folder: the same bytes."""
    out = f"{s3_bucket}/build"
    env = _env(s3_endpoint, tmp_path)
    done = subprocess.run(_cli("build", "--preset", "demo", "--output", out, "--config", str(_small_build(tmp_path))),
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    for name in ("mixture.yaml", "card.html", "card.json", "README.md", "build.json"):
        assert fs.exists(f"{out}/{name}"), name
    for set_name in ("real_world", "synthetic", "event"):
        verify = subprocess.run(_cli("shards", "verify", f"{out}/{set_name}"), env=env, capture_output=True,
                                text=True, timeout=300)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert fs.exists(f"{out}/{set_name}/.nv-meta/dataset.yaml")
    info = subprocess.run(_cli("mix", "info", f"{out}/mixture.yaml", "--json"), env=env, capture_output=True,
                          text=True, timeout=300)
    assert info.returncode == 0, info.stderr[-2000:]
    train = subprocess.run(_cli("train", "--mixture", f"{out}/mixture.yaml", "--output", str(tmp_path / "run"),
                                "--steps", "2"), env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    # a rerun skips every step (its tars are in the s3_bucket only: the staging folder dropped them)
    again = subprocess.run(_cli("build", "--preset", "demo", "--output", out, "--config", str(_small_build(tmp_path))),
                           env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    fs.invalidate_cache()
    steps = json.loads(fs.cat(f"{out}/build.json"))["steps"]
    assert len(steps) >= 8 and {s["status"] for s in steps} == {"skipped"}, steps
    # the same build into another prefix from another node's staging folder: the same bytes, markers included (no
    # staging path or file time reaches a sample, an index or a fingerprint)
    other = f"{s3_bucket}/elsewhere"
    elsewhere = _env(s3_endpoint, tmp_path / "other-node")
    done = subprocess.run(_cli("build", "--preset", "demo", "--output", other, "--config", str(_small_build(tmp_path))),
                          env=elsewhere, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for set_name in ("real_world", "synthetic", "event"):
        first, second = _digests(f"{out}/{set_name}"), _digests(f"{other}/{set_name}")
        assert first == second and any(k.endswith(".tar") for k in first) and any(".nv-meta/" in k for k in first)


def _small_build(tmp_path: Path) -> Path:
    import yaml

    from conftest import SMALL_BUILD

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_BUILD))
    return path

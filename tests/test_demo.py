"""`yume-data demo` end to end, as the README runs it (smaller sample to keep the suite fast)."""

import json
import os
import subprocess
import sys

import pytest

from yume_core.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_demo_runs_offline_and_reports_its_outputs(tmp_path):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1")
    env.pop("PREFECT_API_URL", None)
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--output", str(out), "--clips", "3", "--frames", "90"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for name in ("manifest", "shards", "actions_histogram", "yume_layout", "synthetic_videos", "synthetic_kept",
                 "event_videos", "event_review"):
        assert f"{name}:" in done.stdout
    summary = json.loads((out / "real-world" / "summary.json").read_text())
    assert summary["in"] == 6 and summary["ok"] + summary["failed"] + summary["dropped"] == 6
    assert summary["ok"] >= 2  # a tiny random model's answer can still fail validation after its retries
    manifest = read_manifest(out / "real-world" / "manifest.parquet")
    assert sorted(set(manifest["status"].to_pylist())) == ["dropped", "failed", "ok"]
    assert list((out / "yume-layout").glob("Keys_*_Mouse_*/*_frames_*-*.mp4"))
    ok = [r for r in manifest.to_pylist() if r["status"] == "ok"]
    assert all(r["caption_event"] and r["prompt_i2v"] for r in ok)  # captioned by the tiny random InternVL
    for kind, model in (("synthetic", "tiny-random"), ("events", "tiny-random-i2v-2.2")):  # Wan T2V and I2V sets
        videos = read_manifest(out / kind / "videos" / "manifest.parquet").to_pylist()
        assert len(videos) == 4 and all(v["status"] == "ok" and v["synth_model"] == model for v in videos)
        assert all((out / kind / "videos" / v["video_path"]).stat().st_size > 0 for v in videos)
    kept = read_manifest(out / "synthetic" / "filtered" / "manifest.parquet").to_pylist()
    assert [v["status"] for v in kept].count("ok") == 2  # the tiny preset keeps 62.5%, as the paper keeps 50k of 80k
    assert all(v["quality_rank"] for v in kept) and (out / "synthetic" / "filtered" / "quality_scores.png").is_file()
    assert (out / "events" / "review" / "index.html").is_file()

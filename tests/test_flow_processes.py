"""The flow as users run it: the `yume-data` command in its own process, killed and resumed, and reporting to a
real Prefect server started by the test."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import shards
from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample

from prefect_processes import PREFECT, prefect_env, prefect_server  # noqa: E402  (tests/ is on the path)

pytestmark = pytest.mark.slow



def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *map(str, args)]


def _real_world_args(sample, out, *extra):
    return _cli(
        "real-world", "--csv", sample.csv_path, "--videos", sample.videos_dir, "--trajectories", sample.cameras_dir,
        "--output", out, *extra,
    )


def test_a_killed_run_resumes_without_redoing_finished_batches(tmp_path):
    sample = make_sekai_sample(tmp_path / "in", n_clips=40, n_frames=60, size=(64, 36), faults=("video_missing",))
    out = tmp_path / "out"
    args = _real_world_args(sample, out, "--batch-size", 1, "--workers", 1, "--shard-max-count", 8)
    proc = subprocess.Popen(args, env=prefect_env(tmp_path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    parts: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        parts = list((out / "_work").rglob("part-*.parquet"))
        if len(parts) >= 3:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow and anything it started
    proc.wait()
    parts = sorted((out / "_work").rglob("part-*.parquet"))
    assert 3 <= len(parts) < 41, f"kill landed outside the run ({len(parts)} parts)"
    assert not (out / "manifest.parquet").exists()
    kept = {p: p.stat().st_mtime_ns for p in parts}

    done = subprocess.run(args, env=prefect_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in parts} == kept  # finished batches were not redone
    manifest = read_manifest(out / "manifest.parquet")
    assert manifest.num_rows == 41
    assert manifest["status"].to_pylist().count("ok") == 40
    assert shards.verify_shards(out / "shards").ok
    assert sum(1 for _ in (out / "shards").glob("*.tar")) == 5
    assert not list(out.rglob(".tmp-*"))




def _prefect_cli(api: str, tmp_path: Path, *args) -> list | dict:
    """`prefect <args> -o json` against the server, as a user would list what a run left there."""
    done = subprocess.run([PREFECT, *args, "-o", "json"], env=prefect_env(tmp_path, PREFECT_API_URL=api),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)



def _get(url: str, body: dict | None = None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def prefect_api(tmp_path):
    with prefect_server(tmp_path) as api:
        yield api


def test_flow_with_worker_processes_reports_to_a_prefect_server(tmp_path, prefect_api):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME; the command runs against it
    (PREFECT_API_URL); the run, its tasks and its summary artifact are there, through the API and through
    `prefect flow-run ls` / `prefect artifact ls` / `prefect artifact inspect`."""
    sample = make_sekai_sample(tmp_path / "in", n_clips=4, n_frames=60, size=(64, 36), faults=("duplicate",))
    out = tmp_path / "out"
    args = _real_world_args(sample, out, "--batch-size", 2, "--workers", 2, "--task-runner", "processes")
    done = subprocess.run(args, env=prefect_env(tmp_path, PREFECT_API_URL=prefect_api), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dropped 1" in done.stdout

    runs = _get(f"{prefect_api}/flow_runs/filter", {})
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    tasks = _get(f"{prefect_api}/task_runs/filter", {})
    names = sorted(t["name"] for t in tasks)
    assert names.count("clips-00000") == 1 and sum(n.startswith("clips-") for n in names) == 3
    assert all(t["state_type"] == "COMPLETED" for t in tasks)
    artifacts = _get(f"{prefect_api}/artifacts/filter", {})
    summary = [a for a in artifacts if a["key"] == "real-world-summary"]
    assert summary and "dropped" in summary[0]["description"]

    # what a Prefect user sees with Prefect's own commands
    listed = _prefect_cli(prefect_api, tmp_path, "flow-run", "ls")
    assert [(r["id"], r["state_type"]) for r in listed] == [(runs[0]["id"], "COMPLETED")]
    listed = _prefect_cli(prefect_api, tmp_path, "artifact", "ls")
    assert [a["key"] for a in listed] == ["real-world-summary"] and listed[0]["flow_run_id"] == runs[0]["id"]
    table = _prefect_cli(prefect_api, tmp_path, "artifact", "inspect", "real-world-summary")
    rows = json.loads(table[0]["data"]) if isinstance(table[0]["data"], str) else table[0]["data"]
    assert {"status": "dropped", "reason": "", "count": 1} in rows

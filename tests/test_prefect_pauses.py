"""Screening inside Prefect: against a loopback Prefect server the build's screening pause waits for decisions as a
flow-run input instead of exiting 3. A run of the command is paused in its process; a deployment run is suspended
(its process exits) and run again by a worker once resumed. Both are resumed through the API with the decisions
CSV the review pages download, and finish."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from prefect_processes import prefect_env, prefect_server, stop  # noqa: E402  (tests/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EVENT_ONLY = {"generate": {"clips": 4, "openvid_captions": 16},
              "sets": {"real_world": None, "synthetic": None, "event": {"screening": {"policy": "decisions"}}}}

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    with prefect_server(tmp_path) as api:
        yield api


def _post(api: str, path: str, body: dict) -> dict | list:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
    return json.loads(text) if text else {}


def _runs(api: str, name: str = "build") -> list[dict]:
    return [r for r in _post(api, "/flow_runs/filter", {"flows": {"name": {"any_": [name]}}, "limit": 50})]


def _wait_for(api: str, state: str, seconds: float, alive: subprocess.Popen | None = None) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = [r for r in _runs(api) if (r.get("state") or {}).get("type") == state]
        if found:
            return found[0]
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the build ended ({alive.returncode}) before its run was {state}:\n"
                                 + alive.stdout.read()[-4000:])
        time.sleep(1)
    raise AssertionError(f"no build run became {state} in {seconds:.0f} s: {[r['state'] for r in _runs(api)]}")


def _decisions(out: Path) -> str:
    """What a person downloads from the review pages: keep every video but the first, rejected."""
    import pyarrow.parquet as pq

    keys = sorted(r["prompt_id"] for r in pq.read_table(out / "work/event/prescreen/manifest.parquet").to_pylist()
                  if r["status"] == "ok")
    assert len(keys) >= 2, keys
    return "key,decision,note,text\r\n" + f"{keys[0]},reject,blurry,\r\n" + "".join(f"{k},keep,,\r\n"
                                                                                   for k in keys[1:])


def _screened(out: Path) -> dict:
    return json.loads((out / "work/event/screened/summary.json").read_text())


def test_a_build_run_against_a_server_pauses_for_decisions_and_resumes_through_the_api(tmp_path, server):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(EVENT_ONLY))
    out = tmp_path / "out"
    env = prefect_env(tmp_path, PREFECT_API_URL=server, PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)))
    build = subprocess.Popen([str(BIN / "yume-data"), "build", "--preset", "demo", "--config", str(cfg), "-o",
                              str(out), "--build-time", "1767225600"], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        run = _wait_for(server, "PAUSED", 900, alive=build)
        assert build.poll() is None  # waiting in its process, not exited with status 3
        assert (out / "work/event/review/index.html").is_file()
        _post(server, f"/flow_runs/{run['id']}/resume", {"run_input": {"decisions_csv": _decisions(out)}})
        output, _ = build.communicate(timeout=600)
        assert build.returncode == 0, output[-4000:]
    finally:
        stop(build)
    screened = _screened(out)
    assert screened["screening"]["rejected"] == 1 and screened["screening"]["kept"] >= 1
    assert (out / "work/event/decisions/screening.csv").is_file()  # kept: a rerun does not ask again
    assert (out / "mixture.yaml").is_file()
    assert [r["state"]["type"] for r in _runs(server)] == ["COMPLETED"]


def test_a_deployment_run_suspends_for_screening_and_a_worker_finishes_it_once_resumed(tmp_path, server):
    work = tmp_path / "work"
    work.mkdir()
    env = prefect_env(tmp_path, PREFECT_API_URL=server, YUME_DATA_ROOT=str(work),
                      PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)))

    def prefect(*args, timeout=300):
        done = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def worker_once():
        return subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "yume-data", "--run-once",
                               "--limit", "1"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)

    prefect("work-pool", "create", "yume-data", "--type", "process")
    prefect("--no-prompt", "deploy", "--name", "build")
    params = json.dumps({"output": "out", "preset": "demo", "config": {**EVENT_ONLY, "build_time": "1767225600"}})
    prefect("deployment", "run", "build/build", "--params", params)
    first = worker_once()
    run = _wait_for(server, "PAUSED", 60)
    assert run["state"]["name"] == "Suspended", (run["state"], first.stdout[-2000:], first.stderr[-3000:])
    out = work / "out"
    _post(server, f"/flow_runs/{run['id']}/resume", {"run_input": {"decisions_csv": _decisions(out)}})
    second = worker_once()  # the resumed run, scheduled again: finished steps skip by their markers
    done = _wait_for(server, "COMPLETED", 120)
    assert done["id"] == run["id"], (second.stdout[-2000:], second.stderr[-3000:])
    assert _screened(out)["screening"]["rejected"] == 1
    record = json.loads((out / "build.json").read_text())
    assert record["mixture"] and record["sets"]["event"]["screening"]["policy"] == "decisions"

"""prefect.yaml: every deployment names a flow that loads the way a worker loads it, with defaults the flow accepts;
and the real-world deployment runs end to end as users run it: `prefect server start`, a process work pool,
`prefect deploy --all`, `prefect deployment run`, a process worker, then the run's summary artifact read back
through the API."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from yume_core.manifest import read_manifest
from yume_core.sample_data import make_sekai_sample

from prefect_processes import PREFECT, prefect_env, prefect_server, stop  # noqa: E402  (tests/ is on the path)

ROOT = Path(__file__).resolve().parents[1]


def _deployments() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def _settings_check(name: str, params: dict) -> None:
    """The deployment's default settings are settings the flow accepts (unknown keys and bad values raise)."""
    from pipelines.build_config import build_config
    from pipelines.captioning import CAPTION
    from pipelines.filtering import FILTER
    from pipelines.real_world import REAL_WORLD
    from pipelines.synthesis import SYNTHESIS

    from pipelines.drafting import DRAFT
    from pipelines.prescreen import PRESCREEN

    preset, config = params.get("preset"), params.get("config")
    if name in ("caption", "draft-events", "prescreen"):  # no presets: the config is all of the settings
        {"caption": CAPTION, "draft-events": DRAFT, "prescreen": PRESCREEN}[name].config(None, config)
        return
    assert preset, f"{name}: config goes on top of a preset, as the command's --config does"
    {"build": build_config, "real-world": REAL_WORLD.config, "synthesize": SYNTHESIS.config,
     "filter": FILTER.config}[name](preset, config)


def test_every_flow_has_one_deployment_that_loads_as_a_worker_loads_it():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = _deployments()
    assert sorted(deployments) == ["build", "caption", "draft-events", "filter", "prescreen", "real-world",
                                   "synthesize"]
    pull = spec["pull"]
    assert [next(iter(step)) for step in pull] == ["prefect.deployments.steps.set_working_directory"]
    for name, d in deployments.items():
        assert d["work_pool"]["name"] == "yume-data", name
        # what the worker's flow-run process does (no placeholder flow: a failed import fails the run)
        flow = load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
        assert flow.name == name
        params = d.get("parameters") or {}
        json.dumps(params)  # parameters travel as JSON
        signature = flow.parameters
        assert set(params) <= set(signature.properties), (name, set(params) - set(signature.properties))
        required = set(signature.required or ())
        assert not required & set(params), f"{name}: inputs and outputs are given per run, not defaulted"
        flow.validate_parameters({**params, **{r: "x" for r in required}})
        _settings_check(name, params)


def test_a_deployed_flow_runs_its_batches_on_the_runner_its_config_names(tmp_path, monkeypatch):
    """A worker calls the deployment's flow as decorated, with the deployment's parameters; the flow opens the runner
    its `config.runner` names in its body, so its batches run on a pool of `workers` threads and not on the pool
    Prefect gives the decorated flow."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.task_runners import ThreadPoolTaskRunner

    pools: list[int] = []
    submit = ThreadPoolTaskRunner.submit

    def recorded(self, *args, **kwargs):
        pools.append(self._max_workers)
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolTaskRunner, "submit", recorded)
    d = _deployments()["real-world"]
    flow = load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
    sample = make_sekai_sample(tmp_path / "in", n_clips=3, n_frames=40, size=(64, 36))
    params = {**d["parameters"], "config": {"batch_size": 1, "runner": {"kind": "threads", "workers": 3}}}
    summary = flow(csv=str(sample.csv_path), videos=str(sample.videos_dir), trajectories=str(sample.cameras_dir),
                   output=str(tmp_path / "out"), **params)
    assert summary["ok"] == 3
    assert len(pools) >= 4 and set(pools) == {3}  # 3 batches of clips and the shards, all on the 3-thread pool


# ------------------------------------------------------------------------------------------------ end to end





def _prefect(env: dict, *args, timeout: float = 180) -> str:
    done = subprocess.run([PREFECT, *map(str, args)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(map(str, args))}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_real_world_deployment_runs_on_a_process_worker(tmp_path):
    sample = make_sekai_sample(tmp_path / "in", n_clips=3, n_frames=40, size=(64, 36),
                               faults=("duplicate", "video_missing"))
    workdir = tmp_path / "work"  # YUME_DATA_ROOT: where the run starts, so a relative output lands here
    workdir.mkdir()
    with prefect_server(tmp_path) as api:
        _deploy_and_run(api, tmp_path, workdir, sample)


def _deploy_and_run(api: str, tmp_path: Path, workdir: Path, sample) -> None:
    env = prefect_env(tmp_path, PREFECT_API_URL=api, YUME_DATA_ROOT=str(workdir))
    worker = None
    try:
        _prefect(env, "work-pool", "create", "yume-data", "--type", "process")
        _prefect(env, "--no-prompt", "deploy", "--all")
        out = _prefect(env, "deployment", "run", "real-world/real-world",
                       "--param", f"csv={sample.csv_path}", "--param", f"videos={sample.videos_dir}",
                       "--param", f"trajectories={sample.cameras_dir}", "--param", "output=out")
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)

        # one worker for one run: it polls once, runs what it took, and exits when the run has finished
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "yume-data", "--run-once", "--limit", "1"],
                                  env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            log, _ = worker.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            stop(worker)
            raise
        assert worker.returncode == 0, log[-3000:]

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployments = {d.name for d in client.read_deployments()}
            flow_run = client.read_flow_run(run_id)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
        assert deployments == set(_deployments())
        assert flow_run.state.is_completed(), (flow_run.state, log[-3000:])
        assert flow_run.parameters["config"] == {} and flow_run.parameters["output"] == "out"

        [artifact] = [a for a in artifacts if a.key == "real-world-summary"]
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        counts = {r["status"]: r["count"] for r in rows if r["reason"] == ""}
        by_reason = {(r["status"], r["reason"]): r["count"] for r in rows if r["reason"]}
        assert counts == {"in": 5, "ok": 3, "dropped": 1, "failed": 1}
        assert counts["ok"] + counts["dropped"] + counts["failed"] == counts["in"]
        assert by_reason == {("dropped", "duplicate_video"): 1, ("failed", "video_missing"): 1}

        # the outputs, under the working directory the pull step set
        output = workdir / "out"
        manifest = read_manifest(output / "manifest.parquet")
        assert manifest.num_rows == counts["in"]
        assert manifest["status"].to_pylist().count("ok") == counts["ok"]
        assert json.loads((output / "summary.json").read_text())["ok"] == counts["ok"]
        assert list((output / "shards").glob("*.tar")) and (output / "shards" / "index.parquet").is_file()
    finally:
        if worker is not None:
            stop(worker)

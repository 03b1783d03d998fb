"""Model stages on Ray's actors (`pipelines.ray_actors`), on a real loopback cluster: a CPU head and two nodes that
announce one GPU each (Ray schedules by the count; the tiny models run on the CPU). The GPU stages ask for one GPU
per actor, as they do on a GPU cluster, where Ray would give each GPU task a fresh process.

- each actor loads its model once, whatever the number of batches (loads counted in every process of the cluster by
  `benchmarks/model_loads`);
- a node killed while its actor is in a batch: the actor restarts on the other node, the batch is redone there, and
  the outputs are the bytes of a clean run;
- no node left that can take the actor: the command ends after `runner.actor_wait` with one line, exit 2."""

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from prefect_processes import prefect_env  # noqa: E402  (tests/ is on the path)
from ray_cluster import FAST_NODE_DEATH, Cluster
from yume_core.config import from_dict
from yume_core.manifest import write_manifest
from yume_core.sample_data import make_sekai_sample

pytestmark = pytest.mark.slow
pytest.importorskip("prefect_ray")

LOAD_COUNTER = Path(__file__).parents[1] / "benchmarks" / "model_loads"
ACTOR = "ray::BatchActor"  # the title Ray gives an actor's process


class GpuCluster(Cluster):
    """A CPU head, GPU nodes added as tests need them, and every model load of its processes counted in `loads`."""

    def __init__(self, loads: Path):
        path = os.pathsep.join(filter(None, [str(LOAD_COUNTER), os.environ.get("PYTHONPATH")]))
        super().__init__({**FAST_NODE_DEATH, "PYTHONPATH": path, "MODEL_LOADS_LOG": str(loads)})
        self.loads = loads
        self.gpu_nodes: list[int] = []

    def with_gpu_nodes(self, count: int) -> "GpuCluster":
        """Start GPU nodes until `count` are alive (a test before may have killed some)."""
        self.gpu_nodes = [g for g in self.gpu_nodes if g not in self.killed]
        while len(self.gpu_nodes) < count:
            self.gpu_nodes.append(self.add_node(cpus=1, gpus=1))
        return self


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = GpuCluster(tmp_path_factory.mktemp("loads") / "loads.log")
    try:
        yield nodes.start_head()
    finally:
        nodes.stop()
        assert not nodes.alive(), "Ray processes outlived the cluster"


def loads(cluster, stage: str) -> list[int]:
    """The pids of the processes that loaded `stage`'s model since the log was last cleared."""
    lines = cluster.loads.read_text().splitlines() if cluster.loads.exists() else []
    return [int(pid) for name, pid in (line.split() for line in lines) if name == stage]


def prompts(path: Path, n: int) -> str:
    write_manifest(pa.table({"prompt_id": [f"p{i:02d}" for i in range(n)],
                             "caption": [f"a tram crosses bridge number {i}" for i in range(n)],
                             "image_path": pa.nulls(n, pa.string()), "status": ["ok"] * n}), path)
    return str(path)


def on_ray(cluster, **extra) -> dict:
    return {"kind": "ray", "ray_address": cluster.address, "gpus_per_worker": 1, **extra}


def test_captioning_and_scoring_load_their_model_once_per_actor_not_per_batch(cluster, tmp_path):
    """Four batches of each stage on two GPU actors: two loads at most, none twice in one process. (As Ray tasks,
    the code before the actors loaded the model once per batch here: BENCHMARKS.md, "Model loads on Ray".)"""
    from pipelines.filtering import FILTER, run_filter_flow
    from pipelines.real_world import RealWorldConfig, run_flow
    from pipelines.synthesis import run_synthesis_flow, synth_flow_config

    cluster.with_gpu_nodes(2)
    videos = tmp_path / "videos"
    run_synthesis_flow(prompts(tmp_path / "prompts.parquet", 4), str(videos), synth_flow_config("tiny"))
    sekai = make_sekai_sample(tmp_path / "sekai", n_clips=4, n_frames=40, size=(64, 36))
    cluster.loads.unlink(missing_ok=True)

    captioned = from_dict(RealWorldConfig, {"batch_size": 1, "runner": on_ray(cluster), "caption": {
        "backend": "transformers", "model": "tiny-random", "frames": {"num_frames": 2}}})
    run_flow(str(sekai.csv_path), str(sekai.videos_dir), str(sekai.cameras_dir), str(tmp_path / "clips"), captioned)
    scored = FILTER.config("tiny", {"batch_size": 1, "runner": on_ray(cluster)})
    run_filter_flow(str(videos / "manifest.parquet"), str(tmp_path / "scores"), scored)

    for stage, parts in (("captioning", "clips/_work/captions-*"), ("scoring", "scores/_work/score-*")):
        assert len(list(tmp_path.glob(f"{parts}/part-*.parquet"))) == 4
        pids = loads(cluster, stage)
        # one actor per GPU (2), each loading its model on its first batch and keeping it for the next
        assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids), (stage, pids)


def test_a_node_killed_mid_batch_under_the_synthesis_actor_costs_a_restart_not_the_run(cluster, tmp_path):
    """The actor's node dies while it renders a batch: Ray restarts the actor on the other GPU node, the pool redoes
    the batch there (keeping the videos finished before), and the run ends with the bytes of a clean run."""
    from pipelines.synthesis import run_synthesis_flow, synth_flow_config

    cluster.with_gpu_nodes(2)
    source = prompts(tmp_path / "prompts.parquet", 6)
    settings = {"batch_size": 3, "synth": {"num_frames": 17, "width": 48, "height": 48}}  # a few seconds a video
    run_synthesis_flow(source, str(tmp_path / "clean"), synth_flow_config("tiny", settings))
    cluster.loads.unlink(missing_ok=True)

    out = tmp_path / "ray"
    seen = {}

    def kill_the_actor_node_mid_batch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            node = cluster.node_of(ACTOR)
            made = list(out.rglob("*.mp4"))
            parts = list(out.glob("_work/*/part-*.parquet"))
            if node is not None and made and not parts:  # in its first batch, one video done
                cluster.kill_node(node)
                seen.update(node=node, videos=len(made), parts=len(list(out.glob("_work/*/part-*.parquet"))))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_the_actor_node_mid_batch, daemon=True)
    watcher.start()
    started = time.monotonic()
    config = synth_flow_config("tiny", {**settings, "runner": on_ray(cluster, workers=1)})
    summary = run_synthesis_flow(source, str(out), config)
    watcher.join(timeout=1)
    assert seen and seen["videos"] < 3 and seen["parts"] == 0, seen  # killed within the first batch
    assert summary["complete"] and summary["ok"] == 6
    assert len(loads(cluster, "synthesis")) == 2  # the first actor, and its restart on the other node
    names = ["manifest.parquet", *sorted(str(p.relative_to(tmp_path / "clean")) for p in
                                         (tmp_path / "clean").rglob("*.mp4"))]
    assert len(names) == 7
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert time.monotonic() - started < 120


def test_no_node_left_for_the_actor_ends_the_command_in_one_line(cluster, tmp_path):
    """Every GPU node dies while the only actor renders: nothing can take it, and the command says so after
    `runner.actor_wait` seconds (exit 2, one line naming what the actor waits for), instead of waiting forever."""
    cluster.with_gpu_nodes(1)
    source = prompts(tmp_path / "prompts.parquet", 4)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"batch_size": 2, "synth": {"num_frames": 17, "width": 48, "height": 48},
                                      "runner": {"actor_wait": 10}}))
    out = tmp_path / "out"
    env = prefect_env(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "synthesize", "--prompts", source, "--preset", "tiny", "--config",
         str(config), "-o", str(out), "--ray-address", cluster.address, "--gpus-per-worker", "1", "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.rglob("*.mp4")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        for group in cluster.gpu_nodes:
            cluster.kill_node(group)
        killed = time.monotonic()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: synthesis: no node of the Ray cluster at {cluster.address} took its actor for "
                           "10 s; it waits for a node with 1 CPU and 1 GPU free (live nodes: 2 CPU, 0 GPU)"), line
    assert re.search(r"resumes with the [12] of 2 batches not done", line), line
    assert time.monotonic() - killed < 60


def test_a_stage_error_on_an_actor_ends_the_command_as_it_does_on_threads(cluster, tmp_path):
    """The stage's own error, raised in an actor, stops the run as itself (here the fail-fast line of a scorer whose
    videos are all missing), not as Ray's wrapper of it, and no batch is redone for it."""
    from click.testing import CliRunner

    from pipelines.cli import main

    cluster.with_gpu_nodes(1)
    n = 4
    none = pa.nulls(n, pa.string())
    write_manifest(pa.table({"prompt_id": [f"p{i}" for i in range(n)], "status": ["ok"] * n, "reason": none,
                             "error": none, "video_path": [f"videos/gone-{i}.mp4" for i in range(n)]}),
                   tmp_path / "in" / "m.parquet")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"score": {"fail_fast": 2}}))
    cluster.loads.unlink(missing_ok=True)
    result = CliRunner().invoke(main, ["filter", "--manifest", str(tmp_path / "in" / "m.parquet"), "-o",
                                       str(tmp_path / "out"), "--preset", "tiny", "--config", str(config),
                                       "--ray-address", cluster.address, "--gpus-per-worker", "1"])
    assert result.exit_code == 2, result.output[-3000:]
    assert "Traceback" not in result.output, result.output[-3000:]
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: stopped: the first 2 videos scored all failed with "), line
    assert len(loads(cluster, "scoring")) == 1  # one actor, no restart


def test_a_batch_that_kills_its_actor_every_time_stops_the_run_after_three_losses(cluster, tmp_path):
    """A process that dies on a batch is restarted and the batch redone, but not forever: a batch that kills every
    actor it is given (out of memory, a crash in native code) stops the run, naming the batch."""
    import ray

    from pipelines.ray_actors import MAX_LOSSES, run_on_actors
    from pipelines.runners import Resources, Runner, RunnerConfig

    def crash(batch):  # local, so pickled by value: the cluster's workers cannot import this test module
        os._exit(1)

    runner = Runner(RunnerConfig(kind="ray", ray_address=cluster.address, workers=1), None)
    job = ("crash-00000", {"batch": pa.table({"x": [1]}), "part": str(tmp_path / "part-00000.parquet")})
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        with pytest.raises(RuntimeError, match=f"test: batch crash-00000 lost its actor {MAX_LOSSES} times"):
            run_on_actors(crash, [job], runner, Resources(cpus=1), "test")
    finally:
        ray.shutdown()
    assert not (tmp_path / "part-00000.parquet").exists()

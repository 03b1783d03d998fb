"""Every flow on a real Ray cluster: a head and a second node started with `ray start` on loopback, as an operator
starts one, each flow run with `ray_address` pointing at it, its outputs compared byte for byte with the same run on
threads. Tasks run in the cluster's worker processes (not in the test's), so this covers what a cluster adds:
everything a task is handed is pickled over, and each task asks the cluster for CPUs and GPUs; and a node lost while
it runs a batch task costs that task a retry, not the run."""

import json
import shutil
import time
from pathlib import Path

import pytest

from ray_cluster import Cluster  # noqa: E402  (tests/ is on the path)
from yume_core.config import from_dict
from yume_core.sample_data import make_sekai_sample

pytestmark = pytest.mark.slow
pytest.importorskip("prefect_ray")


@pytest.fixture(scope="module")
def cluster():
    nodes = Cluster()
    try:
        yield nodes.start()
    finally:
        nodes.stop()
        assert not nodes.alive(), "Ray processes outlived the cluster"


def ray_runner(cluster) -> dict:
    return {"kind": "ray", "ray_address": cluster.address}


def same_files(a: Path, b: Path, names: list[str]) -> None:
    """The files matching `names` (globs) exist under both folders and hold the same bytes."""
    found = sorted({str(p.relative_to(a)) for pattern in names for p in a.glob(pattern)})
    assert found, names
    for name in found:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


SHARD_FILES = ["manifest.parquet", "shards/*.tar", "shards/index.parquet", "shards/_index/*"]


@pytest.fixture(scope="module")
def sekai(tmp_path_factory):
    return make_sekai_sample(tmp_path_factory.mktemp("sekai"), n_clips=4, n_frames=40, size=(64, 36),
                             faults=("video_missing",))


def test_real_world_with_captions_on_the_cluster_writes_what_threads_write(cluster, sekai, tmp_path):
    from pipelines.real_world import RealWorldConfig, run_flow

    settings = {"batch_size": 2, "shards": {"max_count": 2},
                "caption": {"backend": "transformers", "model": "tiny-random", "frames": {"num_frames": 2}}}
    outs, counts = {}, {}
    for kind, runner in (("threads", {"kind": "threads", "workers": 2}), ("ray", ray_runner(cluster))):
        outs[kind] = tmp_path / kind
        cfg = from_dict(RealWorldConfig, {**settings, "runner": runner})
        summary = run_flow(str(sekai.csv_path), str(sekai.videos_dir), str(sekai.cameras_dir), str(outs[kind]), cfg)
        counts[kind] = {k: summary[k] for k in ("in", "ok", "dropped", "failed", "by_reason")}
    assert counts["ray"] == counts["threads"] and counts["ray"]["in"] == 5
    same_files(outs["threads"], outs["ray"], SHARD_FILES)
    # captioning ran on actors (`pipelines.ray_actors`), not as task runs. Every batch's output is already pinned by
    # the bytes above; what the API records is only checked for names, because Prefect delivers a Ray task's states
    # as events from the worker process and on a loaded machine the last one can arrive late or not at all.
    expected = {f"clips-{i:05d}" for i in range(3)} | {f"shard-{i:06d}" for i in range(2)}
    deadline = time.monotonic() + 60
    while (found := set(task_runs_of_the_last_flow_run())) != expected and time.monotonic() < deadline:
        time.sleep(1)
    assert found and found <= expected, sorted(found - expected)


def task_runs_of_the_last_flow_run() -> list[str]:
    """Names of the task runs the last flow run recorded, in any state (tasks on Ray report to the flow's API)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return [t.name for t in tasks]


@pytest.fixture(scope="module")
def clip_manifest(sekai, tmp_path_factory) -> Path:
    """The sample's clip manifest (the real-world flow's, uncaptioned): what the caption flow reads."""
    from pipelines.real_world import RealWorldConfig, run_flow

    out = tmp_path_factory.mktemp("clips")
    run_flow(str(sekai.csv_path), str(sekai.videos_dir), str(sekai.cameras_dir), str(out), RealWorldConfig())
    return out / "manifest.parquet"


def test_caption_flow_on_the_cluster_writes_what_threads_write(cluster, clip_manifest, tmp_path):
    from pipelines.captioning import CaptionFlowConfig, run_caption_flow

    settings = {"batch_size": 2, "caption": {"model": "tiny-random", "frames": {"num_frames": 2}}}
    for kind, runner in (("threads", {"workers": 2}), ("ray", ray_runner(cluster))):
        run_caption_flow(str(clip_manifest), str(tmp_path / kind),
                         from_dict(CaptionFlowConfig, {**settings, "runner": runner}))
    same_files(tmp_path / "threads", tmp_path / "ray", ["manifest.parquet"])


@pytest.mark.parametrize("command", ["caption", "synthesize"])
def test_workers_asking_for_gpus_the_cluster_lacks_fail_at_once_in_one_line(command, cluster, clip_manifest,
                                                                             tmp_path):
    """A Ray task (captioning) or actor (synthesis) no node can hold would wait forever: the run stops first."""
    from click.testing import CliRunner

    from pipelines.cli import main

    if command == "caption":
        args, stage = ["--manifest", str(clip_manifest), "--model", "tiny-random"], "captions"
    else:
        (tmp_path / "prompts.txt").write_text("a tram crosses a bridge\n")
        args, stage = ["--prompts", str(tmp_path / "prompts.txt"), "--preset", "tiny"], "synthesis"
    started = time.monotonic()
    result = CliRunner().invoke(main, [command, *args, "-o", str(tmp_path / "out"), "--ray-address", cluster.address,
                                       "--gpus-per-worker", "2"])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {stage} asks Ray for 1 CPU and 2 GPU per worker"), line
    assert "(nodes: 1 CPU, 0 GPU; 2 CPU, 0 GPU)" in line, line
    assert time.monotonic() - started < 60


SMALL = {"generate": {"clips": 2, "frames": 60, "openvid_captions": 8}, "sets": {"synthetic": {"prompts": {"count": 3}}}}
SET_FILES = [f"{name}/{pattern}" for name in ("real_world", "synthetic", "event")
             for pattern in ("shard-*.tar", "index.parquet", "_index/*.parquet")]
BUILD_FILES = [*SET_FILES, "mixture.yaml", "work/*/manifest.parquet", "work/*/*/manifest.parquet",
               "work/*/videos/videos/*/*.mp4"]


def test_a_build_with_every_stage_on_the_cluster_writes_what_threads_write(cluster, tmp_path):
    """Synthesis (T2V and I2V on actors), filtering, the real world with captions: one small build run twice in the
    same folder (paths are recorded in the outputs), on threads and on the cluster (`yume-data build --ray-address`),
    the generated inputs kept in between."""
    import yaml
    from click.testing import CliRunner

    from pipelines.cli import main

    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    out, threads = tmp_path / "out", tmp_path / "threads"
    args = ["build", "--preset", "demo", "--config", str(config), "-o", str(out), "--build-time", "1767225600"]
    for extra in ([], ["--ray-address", cluster.address]):
        result = CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output[-3000:]
        if not extra:
            shutil.copytree(out, threads)
            for path in out.iterdir():
                if path.name != "input":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    record = json.loads((out / "build.json").read_text())
    runner = record["settings"]["sets"]["synthetic"]["synthesis"]["runner"]
    assert {k: runner[k] for k in ray_runner(cluster)} == ray_runner(cluster)
    assert [s["name"] for s in record["steps"] if s["status"] == "skipped"] == []
    same_files(threads, out, BUILD_FILES)


def test_real_world_on_the_cluster_into_s3_writes_what_threads_write(cluster, sekai, s3_bucket):
    """Ray + object storage: the nodes were started without any S3 settings, so the workers read the videos and
    upload parts, shards and markers with what the flow hands them (credentials, endpoint, the opened mirror)."""
    import fsspec

    from pipelines.real_world import RealWorldConfig, run_flow

    fs = fsspec.filesystem("s3")
    fs.put(str(sekai.out_dir) + "/", f"{s3_bucket}/sekai/", recursive=True)
    urls = [f"{s3_bucket}/sekai/{p.relative_to(sekai.out_dir).as_posix()}"
            for p in (sekai.csv_path, sekai.videos_dir, sekai.cameras_dir)]
    digests = {}
    for kind, runner in (("threads", {"kind": "threads", "workers": 2}), ("ray", ray_runner(cluster))):
        cfg = from_dict(RealWorldConfig, {"batch_size": 2, "shards": {"max_count": 2}, "runner": runner})
        summary = run_flow(*urls, f"{s3_bucket}/{kind}", cfg)
        assert summary["outputs"]["manifest"] == f"{s3_bucket}/{kind}/manifest.parquet"
        fs.invalidate_cache()
        found = sorted(fs.find(f"{s3_bucket}/{kind}/shards"))
        digests[kind] = {p.split(f"/{kind}/", 1)[1]: fs.cat(p) for p in found}
    assert digests["ray"] == digests["threads"]
    assert sum(name.endswith(".done.json") for name in digests["ray"]) == 2


def test_a_node_killed_while_it_runs_a_batch_task_costs_a_retry_not_the_run(sekai, tmp_path):
    """A cluster of its own (a head and a node that dies): the node is killed while one of its worker processes runs
    a batch task; Ray runs the task again on the head, and the run ends with the bytes of a run on threads."""
    import threading

    from pipelines.real_world import RealWorldConfig, run_flow
    from ray_cluster import FAST_NODE_DEATH

    settings = {"batch_size": 1, "shards": {"max_count": 1}}
    run_flow(str(sekai.csv_path), str(sekai.videos_dir), str(sekai.cameras_dir), str(tmp_path / "threads"),
             from_dict(RealWorldConfig, settings))
    nodes = Cluster(FAST_NODE_DEATH)
    try:
        nodes.start_head(cpus=1)
        node = nodes.add_node(cpus=2)
        seen: dict = {}

        def kill_it_mid_task():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not seen:
                if busy := nodes.running(node):
                    nodes.kill_node(node)
                    seen["task"] = busy[0]
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_it_mid_task, daemon=True)
        watcher.start()
        summary = run_flow(str(sekai.csv_path), str(sekai.videos_dir), str(sekai.cameras_dir), str(tmp_path / "ray"),
                           from_dict(RealWorldConfig, {**settings, "runner": {"kind": "ray",
                                                                              "ray_address": nodes.address}}))
        watcher.join(timeout=1)
    finally:
        nodes.stop()
    assert not nodes.alive(), "Ray processes outlived the cluster"
    assert seen and not seen["task"].startswith("ray::BatchActor"), seen  # a batch task, not an actor
    assert summary["ok"] == 4 and summary["failed"] == 1
    same_files(tmp_path / "threads", tmp_path / "ray", SHARD_FILES)


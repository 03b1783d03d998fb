"""Model stages on Ray's actors: model loads per batch before and after them, and a build that loses a node.

    python benchmarks/bench_ray_actors.py loads [--before COMMIT] [--batches N]
    python benchmarks/bench_ray_actors.py build [--rounds N]

`loads`: captioning (tiny InternVL, transformers) and scoring (tiny native VBench scorers) on a loopback Ray cluster
(a CPU head, two nodes announcing one GPU each), one row per batch, first with one GPU per worker (as on a GPU
cluster), then with none (a model on CPUs). Every model load of every process of the cluster is counted
(`benchmarks/model_loads`: a line per construction of the stage's model holder), for the code before the actors
(COMMIT, extracted with `git archive`) and for this checkout. The cluster and the flows run the code measured:
`PYTHONPATH` points at it.

`build`: wall time of `yume-data build --preset demo` (synthesis one video per batch, so each stage has several) on
a two-node loopback cluster (a head with 2 CPUs, a node with 1): a clean run, then a run whose second node is killed
(every process, SIGKILL) while its synthesis actor is rendering. The tiny models ask for no GPU, so a stage has one
actor per node, and the lost one restarts on the head. Both runs write into the same folder (paths are recorded in
the outputs), on fresh clusters; the sets, mixture, manifests and videos of the two must be the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback cluster of the tests
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from ray_cluster import Cluster  # noqa: E402

LOAD_COUNTER = HERE / "model_loads"
BEFORE = "4daa6a6"  # the last commit before the actors: GPU stages were Ray tasks (synthesis already had actors)
BUILD_TIME = "1767225600"


def env_for(code: Path, home: Path, **extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", **extra}
    env.pop("PREFECT_API_URL", None)
    return env


# --- loads ---------------------------------------------------------------------------------------------------------

def loads(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-actors-", dir=args.workdir))
    try:
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        inputs = make_inputs(work / "inputs", args.batches)
        rows = {}
        for label, code in (("before", before), ("after", ROOT)):
            log = work / f"loads-{label}.log"
            cluster = Cluster({"PYTHONPATH": os.pathsep.join([str(LOAD_COUNTER), str(code)]),
                               "MODEL_LOADS_LOG": str(log)})
            try:
                cluster.start_head(cpus=2)
                cluster.add_node(cpus=1, gpus=1)
                cluster.add_node(cpus=1, gpus=1)
                child = subprocess.run(
                    [sys.executable, __file__, "loads-child", "--address", cluster.address, "--inputs", str(inputs),
                     "--out", str(work / label), "--log", str(log)],
                    env=env_for(code, work / f"prefect-{label}"), capture_output=True, text=True, timeout=1800)
                if child.returncode:
                    raise SystemExit(f"{label}: {child.stderr[-3000:]}")
            finally:
                cluster.stop()
            for line in child.stdout.splitlines():
                if line.startswith("{"):
                    r = json.loads(line)
                    rows.setdefault((r["stage"], r["gpus"]), {})[label] = r
        print(f"{'stage':<11}{'GPUs/worker':>12}{'batches':>9}{'loads before':>14}{'loads after':>13}"
              f"{'per batch before':>18}{'per batch after':>17}")
        for (stage, gpus), r in rows.items():
            b, a = r["before"], r["after"]
            print(f"{stage:<11}{gpus:>12g}{a['batches']:>9}{b['loads']:>14}{a['loads']:>13}"
                  f"{b['loads'] / b['batches']:>18.2f}{a['loads'] / a['batches']:>17.2f}")
        print(json.dumps({f"{stage}_gpus{gpus:g}": {k: v["loads"] for k, v in r.items()} for (stage, gpus), r in
                          rows.items()}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_inputs(folder: Path, n: int) -> Path:
    """A clip manifest of `n` clips (probed, uncaptioned) and a synthesis manifest of `n` tiny videos, on threads."""
    import pyarrow as pa

    from pipelines.real_world import RealWorldConfig, run_flow
    from pipelines.synthesis import run_synthesis_flow, synth_flow_config
    from yume_core.manifest import write_manifest
    from yume_core.sample_data import make_sekai_sample

    sekai = make_sekai_sample(folder / "sekai", n_clips=n, n_frames=40, size=(64, 36))
    run_flow(str(sekai.csv_path), str(sekai.videos_dir), str(sekai.cameras_dir), str(folder / "clips"),
             RealWorldConfig())
    write_manifest(pa.table({"prompt_id": [f"p{i:02d}" for i in range(n)],
                             "caption": [f"a tram crosses bridge number {i}" for i in range(n)],
                             "image_path": pa.nulls(n, pa.string()), "status": ["ok"] * n}), folder / "prompts.parquet")
    run_synthesis_flow(str(folder / "prompts.parquet"), str(folder / "videos"), synth_flow_config("tiny"))
    return folder


def loads_child(args) -> None:
    """In the code measured: each stage on the cluster, one row per batch, its loads counted."""
    from pipelines.captioning import CaptionFlowConfig, run_caption_flow
    from pipelines.filtering import FILTER, run_filter_flow
    from yume_core.config import from_dict

    log, inputs, out = Path(args.log), Path(args.inputs), Path(args.out)
    for gpus in (1, 0):
        runner = {"kind": "ray", "ray_address": args.address, "gpus_per_worker": gpus}
        for stage in ("captioning", "scoring"):
            log.unlink(missing_ok=True)
            dest = out / f"{stage}-{gpus}"
            if stage == "captioning":
                cfg = from_dict(CaptionFlowConfig, {"batch_size": 1, "runner": runner, "caption": {
                    "model": "tiny-random", "frames": {"num_frames": 2}}})
                run_caption_flow(str(inputs / "clips" / "manifest.parquet"), str(dest), cfg)
            else:
                cfg = FILTER.config("tiny", {"batch_size": 1, "runner": runner})
                run_filter_flow(str(inputs / "videos" / "manifest.parquet"), str(dest), cfg)
            lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
            print(json.dumps({"stage": stage, "gpus": gpus, "batches": len(list(dest.glob("_work/*/part-*.parquet"))),
                              "loads": sum(name == stage for name, _ in lines)}), flush=True)


# --- build ---------------------------------------------------------------------------------------------------------

SMALL = {"generate": {"clips": 4},
         "sets": {"synthetic": {"synthesis": {"batch_size": 1}}, "event": {"synthesis": {"batch_size": 1}}}}
COMPARED = [f"{name}/{pattern}" for name in ("real_world", "synthetic", "event")
            for pattern in ("shard-*.tar", "index.parquet", "_index/*.parquet")] + [
    "mixture.yaml", "work/*/manifest.parquet", "work/*/*/manifest.parquet", "work/*/videos/videos/*/*.mp4"]


def build(args) -> None:
    import yaml

    work = Path(tempfile.mkdtemp(prefix="bench-actors-build-", dir=args.workdir))
    try:
        config = work / "small.yaml"
        config.write_text(yaml.safe_dump(SMALL))
        out, kept = work / "out", work / "clean"
        times: dict[str, list[float]] = {"clean": [], "actor node killed": []}
        for round_ in range(args.rounds):
            for label in times:
                seconds, killed = build_once(out, config, work / "prefect", kill=label != "clean")
                times[label].append(seconds)
                print(f"round {round_ + 1}, {label}: {seconds:.1f} s" + (f" (killed {killed})" if killed else ""),
                      flush=True)
                if not kept.exists():
                    shutil.copytree(out, kept)
                else:
                    same_files(kept, out)
                for path in out.iterdir():
                    if path.name != "input":  # generated once: the rest is built again from it
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
        means = {k: sum(v) / len(v) for k, v in times.items()}
        print(json.dumps({"seconds": times, "mean": {k: round(v, 1) for k, v in means.items()},
                          "killed_over_clean": round(means["actor node killed"] / means["clean"], 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_once(out: Path, config: Path, home: Path, kill: bool) -> tuple[float, str | None]:
    """One build on a fresh head + node cluster; with `kill`, the node dies while its synthesis actor renders."""
    cluster = Cluster()
    try:
        cluster.start_head(cpus=2)
        node = cluster.add_node(cpus=1)
        killed: list[str] = []
        done = threading.Event()

        def kill_when_rendering():
            while not done.is_set():
                rendering = cluster.node_of("ray::BatchActor.run") == node
                if rendering and list(out.glob("work/synthetic/*/videos/*/*.mp4")):
                    cluster.kill_node(node)
                    killed.append(f"after {len(list(out.glob('work/synthetic/*/videos/*/*.mp4')))} T2V video(s)")
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_when_rendering, daemon=True)
        if kill:
            watcher.start()
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "build", "--preset", "demo", "--config",
                               str(config), "-o", str(out), "--build-time", BUILD_TIME, "--ray-address",
                               cluster.address], env=env_for(ROOT, home), capture_output=True, text=True,
                              timeout=1800)
        seconds = time.perf_counter() - started
        done.set()
        if proc.returncode:
            raise SystemExit(f"build failed ({proc.returncode}): {proc.stderr[-3000:]}")
        if kill and not killed:
            raise SystemExit("the node's synthesis actor never rendered: nothing was killed")
        return seconds, killed[0] if killed else None
    finally:
        cluster.stop()


def same_files(a: Path, b: Path) -> None:
    found = sorted({str(p.relative_to(a)) for pattern in COMPARED for p in a.glob(pattern)})
    assert found
    differ = [name for name in found if (a / name).read_bytes() != (b / name).read_bytes()]
    if differ:
        raise SystemExit(f"the builds differ in {differ}")
    print(f"  {len(found)} files, the same bytes as the first clean build", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("loads")
    a.add_argument("--before", default=BEFORE)
    a.add_argument("--batches", type=int, default=6)
    a.add_argument("--workdir", type=Path)
    b = sub.add_parser("build")
    b.add_argument("--rounds", type=int, default=1)
    b.add_argument("--workdir", type=Path)
    c = sub.add_parser("loads-child")
    for name in ("--address", "--inputs", "--out", "--log"):
        c.add_argument(name, required=True)
    args = ap.parse_args()
    {"loads": loads, "build": build, "loads-child": loads_child}[args.command](args)


if __name__ == "__main__":
    main()

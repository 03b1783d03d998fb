"""Prefect flow overhead: the real-world flow against the same stage functions called directly, same run.

    python benchmarks/bench_flow.py [--clips 2000] [--frames 34] [--workdir DIR]

Both paths do the same work and write the same outputs (probe, quantize, frame check, one part per batch, shards,
manifest, summary and action histogram); the flow adds Prefect's task orchestration, state tracking, resume checks
and its summary artifact. Prefect's temporary server starts once before timing
(a warm-up flow on a few clips), since a batch job pays that once per run, not per clip. The flow runs with one
worker, like the sequential direct loop, so the ratio is orchestration overhead and not parallel speed-up; a second
flow run with two workers shows what the parallel runner buys.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

import shards  # noqa: E402
from pipelines.real_world import RealWorldConfig, process_clip_batch, run_flow  # noqa: E402
from pipelines.reporting import report  # noqa: E402
from pipelines.runners import RunnerConfig  # noqa: E402
from yume_core.manifest import OK, write_manifest  # noqa: E402
from yume_core.sample_data import make_sekai_sample  # noqa: E402
from yume_core.sekai import read_sekai_csv  # noqa: E402


def direct(sample, out: Path, cfg: RealWorldConfig) -> int:
    table = read_sekai_csv(sample.csv_path, sample.videos_dir, sample.cameras_dir)
    parts = []
    for start in range(0, table.num_rows, cfg.batch_size):
        part = process_clip_batch(table.slice(start, cfg.batch_size), cfg)
        write_manifest(part, out / "parts" / f"part-{start // cfg.batch_size:05d}.parquet")
        parts.append(part)
    manifest = pa.concat_tables(parts)
    shards.write_shards(manifest.filter(pc.equal(manifest["status"], OK)), out / "shards", cfg.shards)
    write_manifest(manifest, out / "manifest.parquet")
    report(manifest, out, "direct", 0.0)
    return manifest.num_rows


def flow(sample, out: Path, cfg: RealWorldConfig) -> int:
    summary = run_flow(str(sample.csv_path), str(sample.videos_dir), str(sample.cameras_dir), str(out), cfg)
    return summary["in"]


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=34)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    print("command: python benchmarks/bench_flow.py " + " ".join(sys.argv[1:]))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-flow-"))
    t0 = time.perf_counter()
    if (work / "input" / "sekai-real-walking-hq.csv").exists():  # --workdir kept from an earlier run
        from types import SimpleNamespace

        sample = SimpleNamespace(csv_path=work / "input" / "sekai-real-walking-hq.csv",
                                 videos_dir=work / "input" / "videos", cameras_dir=work / "input" / "cameras")
    else:
        sample = make_sekai_sample(work / "input", n_clips=args.clips, n_frames=args.frames, size=(64, 36))
    print(f"generated {args.clips} clips x {args.frames} frames in {time.perf_counter() - t0:.1f}s")
    warm = make_sekai_sample(work / "warm", n_clips=2, n_frames=args.frames, size=(64, 36))

    base = RealWorldConfig(batch_size=args.batch_size, io_threads=1, runner=RunnerConfig(kind="threads", workers=1))
    base = replace(base, shards=replace(base.shards, max_count=500))
    t0 = time.perf_counter()
    flow(warm, work / "out-warm", base)
    print(f"warm-up flow (starts Prefect's temporary server): {time.perf_counter() - t0:.1f}s")

    best = {"direct": float("inf"), "flow (1 worker)": float("inf"), "flow (2 workers)": float("inf")}
    two = replace(base, runner=RunnerConfig(kind="threads", workers=2))
    for r in range(args.repeats):
        for name, fn, cfg in (("direct", direct, base), ("flow (1 worker)", flow, base), ("flow (2 workers)", flow, two)):
            out = work / f"out-{r}-{name.split()[0]}-{cfg.runner.workers}"
            best[name] = min(best[name], timed(fn, sample, out, cfg))
            shutil.rmtree(out)
    d = best["direct"]
    for name, t in best.items():
        print(f"{name:>18}: {t:7.2f}s  ({args.clips / t:7.1f} clips/s)  ratio to direct {t / d:.3f}")
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

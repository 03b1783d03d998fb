"""Does the real-world flow's driver stay bounded as the set grows? Peak RSS and clips/s at two sizes, same run.

    python benchmarks/bench_scale.py [--sizes 2000 20000] [--frames 1800] [--workers 2] [--workdir DIR]

Each clip has a full-length trajectory (1,800 poses: 60 s at 30 fps, so ~35-40 KB of manifest row with its
per-frame action labels) and a tiny mp4 of as many frames. Encoding 20,000 videos would take far longer than the
flow, so a few template clips are generated once and every CSV row points at its own hard link of one of them
(distinct names, so none is a duplicate). Each size runs the whole flow (probe, quantize, frame check, shards,
manifest, report) with the threads runner in a fresh child process, whose peak RSS (`ru_maxrss`, which counts
Arrow's buffers, unlike tracemalloc) is the driver's, task threads included. The table gives each size's ratio
against the smallest, and the per-clip slope between the two projects the driver's peak to Sekai-Real-Walking's
299k clips.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

SEKAI_REAL_WALKING_CLIPS = 299_000


def make_templates(root: Path, n: int, frames: int):
    from yume_core.sample_data import make_sekai_sample

    if not (root / "sekai-real-walking-hq.csv").exists():
        make_sekai_sample(root, n_clips=n, n_frames=frames, size=(32, 18), fps=30)
    with open(root / "sekai-real-walking-hq.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def make_input(templates: list[dict], tdir: Path, out: Path, clips: int) -> Path:
    """A CSV of `clips` rows over hard links (copies where links fail) of the template files."""
    csv_path = out / "sekai.csv"
    if csv_path.exists():
        return csv_path
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "cameras").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(clips):
        t = dict(templates[i % len(templates)])
        suffix = t["videoFile"][11:]  # _<start>_<end>.mp4 after the 11-character YouTube id
        name = f"B{i:010d}{suffix}"
        for src, dst in ((tdir / "videos" / t["videoFile"], out / "videos" / name),
                         (tdir / "cameras" / t["cameraFile"], out / "cameras" / (Path(name).stem + ".npz"))):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        t["videoFile"], t["cameraFile"] = name, Path(name).stem + ".npz"
        rows.append(t)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(templates[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return csv_path


def child(args) -> None:
    """One flow run; prints its figures as json on the last line."""
    from pipelines.real_world import RealWorldConfig, run_flow
    from yume_core.config import from_dict

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = from_dict(RealWorldConfig, {"batch_size": args.batch_size, "io_threads": 2,
                                      "runner": {"kind": "threads", "workers": args.workers}})
    root = Path(args.child)
    t0 = time.perf_counter()
    summary = run_flow(str(root / "sekai.csv"), str(root / "videos"), str(root / "cameras"), str(root / "out"), cfg)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": summary["in"], "ok": summary["ok"], "seconds": seconds,
                      "rss_imports_mb": rss_imports / 1024, "peak_rss_mb": peak / 1024,
                      "manifest_mb": (root / "out" / "manifest.parquet").stat().st_size / 2**20}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--frames", type=int, default=1800)
    ap.add_argument("--templates", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (inputs and outputs)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    print("command: python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    t0 = time.perf_counter()
    templates = make_templates(work / "templates", args.templates, args.frames)
    print(f"{len(templates)} template clips of {args.frames} frames in {time.perf_counter() - t0:.1f} s")
    results = {}
    for n in args.sizes:
        root = work / f"n{n}"
        shutil.rmtree(root / "out", ignore_errors=True)  # every size runs from scratch
        make_input(templates, work / "templates", root, n)
        cmd = [sys.executable, __file__, "--child", str(root), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"flow at {n} clips failed:\n{done.stderr[-4000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        if r["ok"] != n:
            sys.exit(f"flow at {n} clips: only {r['ok']} ok rows (frame count mismatch?)")
        results[n] = r
        shutil.rmtree(root / "out", ignore_errors=True)
    base = results[args.sizes[0]]
    print(f"\ndriver: threads runner, {args.workers} workers, batch {args.batch_size}, {args.frames}-pose trajectories")
    print("| clips | seconds | clips/s | clips/s ratio | peak RSS MB | RSS ratio | after imports MB | manifest MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in results.items():
        rate = n / r["seconds"]
        print(f"| {n:,} | {r['seconds']:.1f} | {rate:.1f} | {rate / (args.sizes[0] / base['seconds']):.2f} "
              f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} "
              f"| {r['rss_imports_mb']:.0f} | {r['manifest_mb']:.2f} |")
    if len(results) > 1:
        (n0, r0), (n1, r1) = list(results.items())[0], list(results.items())[-1]
        slope = (r1["peak_rss_mb"] - r0["peak_rss_mb"]) / (n1 - n0)  # MB per clip
        proj = r1["peak_rss_mb"] + slope * (SEKAI_REAL_WALKING_CLIPS - n1)
        print(f"\nslope {slope * 1024:.2f} KB of driver peak per clip; projected peak at "
              f"{SEKAI_REAL_WALKING_CLIPS:,} clips: {proj:.0f} MB "
              f"(the whole manifest held at once would be ~{SEKAI_REAL_WALKING_CLIPS * 37 / 2**20:.1f} GB at 37 KB/clip)")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: trajectory -> actions, vectorised stage vs. the plain per-step rule.

Generates Sekai-like camera files (random walks, translations scaled to +-1 per axis, `extrinsic` float32 (T,4,4)
and `intrinsic` (3,3) in an uncompressed .npz each) and times, in the same run:
  (a) baseline: per file np.load + the per-step rule (np.linalg.inv + scipy Rotation.as_euler per step), i.e.
      `quantize_actions.reference_quantize`, on --baseline-clips clips, extrapolated per frame;
  (b) `quantize_files` + `write_manifest` in-process (what `yume-data actions` does), best of --repeats;
  (c) the `yume-data actions DIR --output X.parquet` CLI as a subprocess, when it is installed and wired.
Prints per-frame wall and CPU times, speedups against (a), and the projected cost of the Sekai-Real-Walking split
(~540M frames) at the measured CPU time per frame, i.e. on one core.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from quantize_actions import QuantizeConfig, quantize_files, random_walk_trajectory, reference_quantize
from yume_core.manifest import read_manifest, write_manifest

SEKAI_WALKING_FRAMES = 540e6  # Sekai-Real-Walking: 299,173 clips, 4,986 h at 30 fps
SEKAI_WALKING_CLIPS = 299_173


def generate(workdir: Path, clips: int, frames: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    intrinsic = np.array([[0.6, 0.0, 0.5], [0.0, 1.07, 0.5], [0.0, 0.0, 1.0]], np.float32)
    paths = []
    for i in range(clips):
        path = workdir / f"bench{i:05d}-x_{i * frames:07d}_{(i + 1) * frames:07d}.npz"
        if not path.exists():
            np.savez(path, extrinsic=random_walk_trajectory(frames, rng).astype(np.float32), intrinsic=intrinsic)
        paths.append(path)
    return paths


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and the CPU time (all threads) of that same repetition."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best


def cli_available(exe: str | None) -> tuple[bool, str]:
    if exe is None:
        return False, "no `yume-data` executable on PATH"
    probe = subprocess.run([exe, "actions", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr or probe.stdout).strip().splitlines()[-1:]
        return False, f"`yume-data actions` is not wired yet ({last})"
    return True, ""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--frames", type=int, default=1800)
    ap.add_argument("--baseline-clips", type=int, default=None, help="time the baseline on K clips (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="loader threads for (b); default: Python's")
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated files here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))

    with tempfile.TemporaryDirectory(prefix="bench_quantize_") as tmp:
        workdir = args.workdir or Path(tmp)
        data = workdir / "trajectories"
        data.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = generate(data, args.clips, args.frames, args.seed)
        frames = args.clips * args.frames
        print(f"data: {args.clips} clips x {args.frames} frames = {frames:,} frames in {data} "
              f"(ready in {time.perf_counter() - t0:.1f} s)")
        config = QuantizeConfig()

        k = min(args.baseline_clips or args.clips, args.clips)
        base_wall, base_cpu = timed(
            lambda: [reference_quantize(np.load(p)["extrinsic"], config) for p in paths[:k]], 1
        )
        base_frame = base_wall / (k * args.frames)
        print(f"(a) baseline, per-step loop on {k} clips (1 run): {base_wall:.2f} s wall, {base_cpu:.2f} s CPU "
              f"-> {base_frame * 1e6:.2f} us/frame"
              + (f", {base_frame * frames:.1f} s extrapolated to all" if k < args.clips else ""))

        out = workdir / "actions.parquet"

        def stage():
            write_manifest(quantize_files(data, config, workers=args.workers), out)

        b_wall, b_cpu = timed(stage, args.repeats)
        table = read_manifest(out)
        assert table.num_rows == args.clips and table["status"].to_pylist().count("ok") == args.clips
        print(f"(b) quantize_files + write_manifest, best of {args.repeats}: {b_wall * 1e3:.0f} ms wall "
              f"({b_wall / frames * 1e9:.0f} ns/frame), {b_cpu * 1e3:.0f} ms CPU ({b_cpu / frames * 1e9:.0f} ns/frame)"
              f" -> speedup {base_frame * frames / b_wall:.0f}x wall, {base_cpu / k * args.clips / b_cpu:.0f}x CPU")

        ok, why = cli_available(shutil.which("yume-data"))
        if ok:
            cmd = ["yume-data", "actions", str(data), "--output", str(workdir / "cli.parquet")]
            c_wall, _ = timed(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeats)
            (workdir / "empty").mkdir(exist_ok=True)
            idle = ["yume-data", "actions", str(workdir / "empty"), "--output", str(workdir / "empty.parquet")]
            c_fixed, _ = timed(lambda: subprocess.run(idle, check=True, capture_output=True), args.repeats)
            print(f"(c) $ {shlex.join(cmd)}, best of {args.repeats}: {c_wall * 1e3:.0f} ms wall "
                  f"({c_wall / frames * 1e9:.0f} ns/frame) -> speedup {base_frame * frames / c_wall:.0f}x; "
                  f"of which {c_fixed * 1e3:.0f} ms is start-up (same command on an empty folder), "
                  f"so {(c_wall - c_fixed) / frames * 1e9:.0f} ns/frame of work")
        else:
            print(f"(c) CLI skipped: {why}")

        cpu_frame = b_cpu / frames
        print(f"projection, Sekai-Real-Walking ({SEKAI_WALKING_CLIPS:,} clips, "
              f"{SEKAI_WALKING_FRAMES / 1e6:.0f}M frames) "
              f"on one core: (b) {cpu_frame * SEKAI_WALKING_FRAMES / 3600:.2f} h vs baseline "
              f"{base_cpu / (k * args.frames) * SEKAI_WALKING_FRAMES / 3600:.0f} h")


if __name__ == "__main__":
    main()

"""`yume-data build --preset demo` wall time by step, and what a rerun (every step skipped) costs.

    python benchmarks/bench_build.py [--workdir DIR]

A fresh build folder each run. The first build does every step; the second finds every step's marker and skips it,
so its time is the build's own overhead (reading settings, fingerprinting inputs, Prefect's flow run, the card).
Per-step seconds come from the build record (OUT/build.json), the same figures the data card shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from pipelines.build import build_config, run_build_flow  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.workdir))
    try:
        out = work / "out"
        cfg = build_config("demo")
        timings = []
        for label in ("first build", "rerun"):
            started = time.perf_counter()
            record = run_build_flow(out, cfg, "demo")
            timings.append((label, time.perf_counter() - started, record))
        first, rerun = timings[0][2], timings[1][2]
        print(f"{'step':<18}{'seconds':>9}")
        for step in first["steps"]:
            print(f"{step['name']:<18}{step['seconds']:>9.2f}")
        print(f"{'sum of steps':<18}{sum(s['seconds'] for s in first['steps']):>9.2f}")
        for label, seconds, record in timings:
            skipped = sum(s["status"] == "skipped" for s in record["steps"])
            print(f"{label:<18}{seconds:>9.2f} s wall ({skipped} of {len(record['steps'])} steps skipped)")
        print(json.dumps({"first_s": round(timings[0][1], 2), "rerun_s": round(timings[1][1], 2),
                          "rerun_over_first": round(timings[1][1] / timings[0][1], 3)}))
        assert all(s["status"] == "skipped" for s in rerun["steps"]), "a rerun redid a step"
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Mixture sampling against the training step it feeds, timed in the same run.

    python benchmarks/bench_mixture.py [--workdir .bench/mixture] [--preset cpu] [--steps 60] [--warmup 5]
                                       [--device auto] [--threads 1]

Data: three demo-sized sets written by the project's own shard writer and a mixture file over them (made once under
`--workdir`, reused after): real_world, 8 generated Sekai clips of 150 frames at 256x144 with actions (every other
one with an event caption); synthetic, 4 videos of 33 frames at 32x32 (T2V, no labels); event, 4 videos of 33
frames at 32x32 with their start images (T2V+I2V, no labels); weights 0.5 / 0.25 / 0.25, as `yume-data build
--preset demo` writes them.

Timed: `training_stub.train.train` on the mixture for `--steps` steps of the preset (the real loop: the sampler picks
each step's task and each window's set, one stream per (set, task) hands the windows over, the step trains). Every
step's row in `metrics.jsonl` has its wall time (`seconds`), the part spent deciding task and sets and routing
each window to its stream (`draw_s`: `MixtureSampler.task` + `draw` + the routing) and the part spent waiting on the
streams (`load_s`: decoding, which `bench_loader.py` measures against the trainer). The first `--warmup` steps
(start-up, first decodes) are left out. Also timed alone: `MixtureSampler.draw` for one step's windows, best of 5
rounds of 2,000 calls.

Printed: the per-step medians and the sampling overhead as a share of the step (the bar: under 2%).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


BAR = 0.02  # sampling must cost less than this share of a training step
WEIGHTS = {"real_world": 0.5, "synthetic": 0.25, "event": 0.25}


def make_sets(work: Path) -> Path:
    """The three sets and `mixture.yaml` under `work/out` (made once, reused after)."""
    from pipelines.sample_mixture import make_sample_mixture

    mixture = work / "out" / "mixture.yaml"
    return mixture if mixture.is_file() else make_sample_mixture(work, weights=WEIGHTS)


def draw_alone(mixture: Path, batch: int, calls: int = 2000, rounds: int = 5) -> float:
    """Seconds per `MixtureSampler.task` + `draw` of one step's windows, best of `rounds`."""
    from yume_core.mixture import MixtureSampler, read_mixture

    sampler = MixtureSampler(read_mixture(mixture), ("t2v", "i2v"), seed=0)
    best = float("inf")
    for r in range(rounds):
        t0 = time.perf_counter()
        for step in range(r * calls, (r + 1) * calls):
            sampler.task(step)
            sampler.draw(step, batch)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "mixture")
    ap.add_argument("--preset", default="cpu", help="training_stub config preset (cpu, big) or a YAML file")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: PyTorch's default). One by default: on two shared cores a second "
                         "thread mostly waits for the first, and under load from other jobs it slowed a step ~7x")
    args = ap.parse_args(argv)
    print("command: python benchmarks/bench_mixture.py " + " ".join(sys.argv[1:] if argv is None else argv))

    import torch

    from training_stub.config import load_config
    from training_stub.text import embed_actions
    from training_stub.train import ACTION_CACHE, METRICS_LOG, train

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    mixture = make_sets(args.workdir)
    print(f"sets and mixture: {mixture} ({time.perf_counter() - t0:.1f} s)")
    config = load_config(args.preset)
    cache = args.workdir / ACTION_CACHE
    if not cache.is_file():
        embed_actions(cache, config.text_encoder)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    try:
        summary = train(None, config, run, steps=args.steps, resume=False, action_cache=cache, device=args.device,
                        log=lambda m: None, mixture=mixture)
        rows = [json.loads(line) for line in (run / METRICS_LOG).read_text().splitlines()][args.warmup:]
    finally:
        shutil.rmtree(run, ignore_errors=True)
    if not rows:
        print("no steps left after the warm-up; raise --steps")
        return 1
    step = [r["seconds"] for r in rows]
    draw = [r["draw_s"] for r in rows]
    load = [r["load_s"] for r in rows]
    train_only = [s - d - w for s, d, w in zip(step, draw, load)]
    per_step = [d / s for d, s in zip(draw, step)]
    share = sum(draw) / sum(step)
    alone = draw_alone(mixture, config.batch_size * config.grad_accum)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    print(f"\n{args.preset} preset, {len(rows)} steps after {args.warmup} warm-up, batch "
          f"{config.batch_size} x {config.grad_accum}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"realised windows per set: {summary['windows_by_set']} (requested {summary['requested']})\n")
    print("| per step | median | mean | share of the step (mean) |")
    print("|---|---|---|---|")
    med = statistics.median
    print(f"| whole step (`seconds`) | {1e3 * med(step):.1f} ms | {1e3 * statistics.fmean(step):.1f} ms | 100% |")
    print(f"| model step (forward, backward, optimiser, batch building) | {1e3 * med(train_only):.1f} ms | "
          f"{1e3 * statistics.fmean(train_only):.1f} ms | {100 * sum(train_only) / sum(step):.1f}% |")
    print(f"| waiting on the set streams (`load_s`) | {1e3 * med(load):.2f} ms | {1e3 * statistics.fmean(load):.2f} ms "
          f"| {100 * sum(load) / sum(step):.1f}% |")
    print(f"| **mixture sampling** (`draw_s`: task, sets, routing) | {1e6 * med(draw):.0f} µs | "
          f"{1e6 * statistics.fmean(draw):.0f} µs | **{100 * share:.3f}%** |")
    print(f"| `MixtureSampler.task` + `draw` alone (best of 5 x 2,000) | {1e6 * alone:.0f} µs | | |")
    print(f"\nsampling overhead: {100 * share:.3f}% of a step (worst step {100 * max(per_step):.3f}%); "
          f"bar < {100 * BAR:.0f}%: {'PASS' if share < BAR and max(per_step) < BAR else 'FAIL'}")
    return 0 if share < BAR else 1


if __name__ == "__main__":
    sys.exit(main())

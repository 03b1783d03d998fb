"""Native VBench scoring: videos decoded and scored at once on threads against one at a time, same run.

    python benchmarks/bench_scoring.py [--videos 8] [--frames 81] [--size 1280 720] [--workers 1 2 4] [--reps 2]

Sources: Wan-like clips (81 frames at 16 fps, 1280x720, H.264 with grain so they do not compress to nothing),
made once under `--dir`. Scored with the four native dimensions and tiny random-weight models: what is timed is the
work in front of a GPU (decoding, the float resize and crop on the device, flicker sums), which is what a real
ViT-B/16 on an H100 (~81 frames in tens of ms) waits on. Prints videos/s per worker count, best of `--reps`, and
the ratio to `workers=1` (the baseline: the per-video loop VBench itself runs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from filtering.native import NativeScorer
from yume_core.media import write_video

TINY = {"dino_model": "tiny-random", "clip_model": "tiny-random", "aesthetic_model": "tiny-random"}


def make_sources(folder: Path, count: int, frames: int, size: tuple[int, int]) -> list[tuple[str, str]]:
    width, height = size
    items = []
    for i in range(count):
        path = folder / f"wan-like-{i:02d}-{frames}f-{width}x{height}.mp4"
        if not path.exists():
            rng = np.random.default_rng(i)
            base = rng.integers(0, 256, (height // 16, width // 16, 3), np.uint8).repeat(16, 0).repeat(16, 1)
            clip = (np.clip(np.roll(base, 4 * t, axis=1).astype(np.int16)
                            + rng.integers(-12, 13, base.shape, dtype=np.int16), 0, 255).astype(np.uint8)
                    for t in range(frames))
            write_video(path, clip, fps=16, options={"b": "4000000"})
        items.append((path.stem, str(path)))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", type=int, nargs=2, default=(1280, 720))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path(".bench/scoring"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    items = make_sources(args.dir, args.videos, args.frames, tuple(args.size))
    rates = {}
    for workers in args.workers:
        with NativeScorer(workers=workers, **TINY) as scorer:
            scorer.score(items[:1])  # warm-up
            best = 0.0
            for _ in range(args.reps):
                start = time.perf_counter()
                results = scorer.score(items)
                best = max(best, len(items) / (time.perf_counter() - start))
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        rates[workers] = best
        print(f"workers={workers}: {best:.2f} videos/s ({best * args.frames:.0f} frames/s), "
              f"{best / rates[args.workers[0]]:.2f}x workers={args.workers[0]}")


if __name__ == "__main__":
    main()

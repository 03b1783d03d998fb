"""How fast the generated Sekai sample is made, against baselines timed in the same run.

    python benchmarks/bench_render.py                 # demo size (8 x 256x144x150) and 500 tiny clips (64x36x34)
    python benchmarks/bench_render.py --tiny 2000     # the size the ingest benchmark uses

For each size it prints:
- clips/s of `make_sekai_sample` end to end (trajectory, render, encode, npz, CSV);
- the ratio of that to *encode only* (write_video of the same number of pre-rendered frames): how much rendering
  costs on top of the unavoidable encode;
- the ratio of batched rendering (frames x pixels per numpy call, as used) to one frame per numpy call: what
  vectorising over frames buys, which matters most for tiny frames.
Shared machines are noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from yume_core.media import write_video
from yume_core.sample_data import _make_scene, make_sekai_sample, make_trajectory, render_frames


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(n_clips: int, n_frames: int, size: tuple[int, int], codec: str, root: Path) -> dict:
    out = root / f"s_{size[0]}x{size[1]}"
    t_sample = timed(lambda: make_sekai_sample(out, n_clips=n_clips, n_frames=n_frames, size=size, codec=codec))
    shutil.rmtree(out)

    # baselines on one representative clip, scaled to n_clips
    rng = np.random.default_rng(0)
    poses, _, _ = make_trajectory(rng, n_frames)
    scene = _make_scene(rng, poses[:, :3, 3], "noon", "cloudy")
    w, h = size
    k = np.array([[0.7, 0, 0.5], [0, 0.7 * w / h, 0.5], [0, 0, 1]], np.float32)
    frames = list(render_frames(poses, k, size, scene))
    reps = max(1, min(n_clips, 50))
    t_encode = timed(lambda: [write_video(root / "e.mp4", frames, 30, codec=codec) for _ in range(reps)]) / reps
    t_batched = timed(lambda: [list(render_frames(poses, k, size, scene)) for _ in range(reps)]) / reps
    one_per_call = w * h
    t_single = timed(lambda: [list(render_frames(poses, k, size, scene, one_per_call)) for _ in range(reps)]) / reps
    return {
        "size": f"{w}x{h}x{n_frames}",
        "clips": n_clips,
        "clips/s": n_clips / t_sample,
        "vs encode-only": (t_sample / n_clips) / t_encode,
        "batched vs per-frame render": t_single / t_batched,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=int, default=8, help="clips at 256x144x150")
    ap.add_argument("--tiny", type=int, default=500, help="clips at 64x36x34")
    ap.add_argument("--codec", default="libx264")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            bench(args.demo, 150, (256, 144), args.codec, Path(tmp)),
            bench(args.tiny, 34, (64, 36), args.codec, Path(tmp)),
        ]
    print(f"{'size':<14}{'clips':>7}{'clips/s':>10}{'x encode-only time':>20}{'batched speed-up':>18}")
    for r in rows:
        print(
            f"{r['size']:<14}{r['clips']:>7}{r['clips/s']:>10.1f}{r['vs encode-only']:>20.2f}"
            f"{r['batched vs per-frame render']:>18.2f}"
        )


if __name__ == "__main__":
    main()

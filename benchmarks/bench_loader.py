"""Training-window loader against the trainer that consumes it, timed in the same run.

    python benchmarks/bench_loader.py [--shards yume-data-demo/real-world/shards] [--preset cpu] [--steps 40]
                                      [--workers 0 2] [--hd]

Shards: the demo's (`yume-data demo` writes them: 8 clips of 150 frames at 256x144, H.264). Timed:

  (a) decode cost per clip: mp4 bytes -> frames at the latent space's size (PyAV decode + scale in FFmpeg's scaler),
      and frames -> latents, per clip and per frame, best of 3 over every clip of the shards. `--hd` adds one
      generated 1280x720 clip of 150 frames (Sekai's frame size; the generated town compresses to a low bitrate,
      so real clips decode somewhat slower).
  (b) the loader alone: windows/s over whole epochs, for each `--workers` setting.
  (c) the trainer alone: `training_stub.train.Trainer.train_step` of the `--preset` config on batches built from
      windows already in memory (text contexts included, their captions cached as in training): windows/s consumed.
  (d) the two together, for each `--workers` setting: each step's time blocked on the loader, against the step's
      whole time (`--warmup` steps, which start the workers, are left out).

and prints (b)/(c), the loader's headroom over the trainer (must exceed 1), and the data-wait share of (d) (the bar:
at most 5% of a step). When `training_stub.train` is not importable, (c) and (d) use a stand-in consumer: a small
transformer's forward and backward over the window's latent tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import webdataset as wds

from training_stub.data import DataConfig, WindowLoader, decode_clip, resolve_shards

BAR = 0.05  # the trainer must not wait on data for more than this share of a step


class Timed:
    """An iterator that adds the time spent in `next` to `wait`."""

    def __init__(self, iterable):
        self.it, self.wait = iter(iterable), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.wait += time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ (a) decode


def decode_cost(clips: list[tuple[str, bytes]], cfg: DataConfig) -> list[dict]:
    space = cfg.latents
    rows = []
    for name, data in clips:
        best_d = best_e = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            frames = decode_clip(data, space)
            t1 = time.perf_counter()
            space.encode(frames)
            t2 = time.perf_counter()
            best_d, best_e = min(best_d, t1 - t0), min(best_e, t2 - t1)
        rows.append({"clip": name, "frames": len(frames), "decode_s": best_d, "encode_s": best_e})
    return rows


def hd_clip(tmp: Path) -> tuple[str, bytes]:
    from yume_core.sample_data import make_sekai_sample

    sample = make_sekai_sample(tmp / "hd", n_clips=1, n_frames=150, size=(1280, 720))
    return "1280x720 (generated)", sample.video_path(sample.clip_ids[0]).read_bytes()


# ------------------------------------------------------------------------------------------------ consumers


class TrainerConsumer:
    """The real trainer of the preset: text contexts (event text cached, actions from the cache) + one step."""

    name = "training_stub.train.Trainer"

    def __init__(self, preset: str, tmp: Path):
        from training_stub.config import load_config
        from training_stub.text import embed_actions
        from training_stub.train import TextSide, Trainer, batches

        self.config = load_config(preset)
        cache = embed_actions(tmp / "actions.safetensors", self.config.text_encoder)
        self.text = TextSide(self.config.text_encoder, self.config.text_max_length, cache)
        self.trainer = Trainer(self.config, self.text.dim, "cpu")
        self.batch_size = self.config.batch_size
        self._batches = batches

    def batches(self, windows):
        return self._batches(windows, self.text, self.config)

    def step(self, batch) -> None:
        self.trainer.train_step([batch])


class StandInConsumer:
    """A 4-layer transformer (width 128) over the chunk's latent tokens (2x2 patches) with the history's mean as
    extra tokens: forward, MSE loss, backward, AdamW step."""

    name = "stand-in transformer"

    def __init__(self, cfg: DataConfig, batch_size: int = 8):
        space = cfg.latents
        self.batch_size, self.patch = batch_size, 2
        dim = space.channels * self.patch * self.patch
        layer = torch.nn.TransformerEncoderLayer(128, 4, 512, batch_first=True)
        self.model = torch.nn.Sequential(torch.nn.Linear(dim, 128), torch.nn.TransformerEncoder(layer, 4),
                                         torch.nn.Linear(128, dim))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:  # [T, C, h, w] -> [T * h/p * w/p, C*p*p]
        t = torch.nn.functional.pixel_unshuffle(x, self.patch)
        return t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1])

    def batches(self, windows):
        pending = []
        for w in windows:
            pending.append(w)
            if len(pending) == self.batch_size:
                yield pending
                pending = []

    def step(self, batch) -> None:
        x = torch.stack([torch.cat([self._tokens(w["history"].mean(0, keepdim=True)), self._tokens(w["chunk"])])
                         for w in batch])
        loss = torch.nn.functional.mse_loss(self.model(x), x)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def make_consumer(preset: str, tmp: Path):
    try:
        consumer = TrainerConsumer(preset, tmp)
        return consumer, consumer.config.data
    except ImportError as e:  # the trainer is not there: time the stand-in
        print(f"(training_stub.train not importable: {e}; timing a stand-in consumer)")
        cfg = DataConfig()
        return StandInConsumer(cfg), cfg


# ------------------------------------------------------------------------------------------------ timing


def loader_rate(shards, cfg: DataConfig, epochs: int) -> tuple[float, int]:
    loader = WindowLoader(shards, cfg, epochs=epochs)
    t0 = time.perf_counter()
    n = sum(1 for _ in loader)
    return n / (time.perf_counter() - t0), n


def trainer_rate(consumer, windows: list[dict], steps: int, warmup: int) -> float:
    stream = consumer.batches(windows * (1 + (steps + warmup) * consumer.batch_size // max(1, len(windows))))
    times = []
    for i, batch in zip(range(steps + warmup), stream):
        t0 = time.perf_counter()
        consumer.step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return consumer.batch_size / statistics.median(times)


def fed(consumer, shards, cfg: DataConfig, steps: int, warmup: int) -> dict:
    """Steps fed by the loader: per step, (time blocked on the loader, whole step time)."""
    timed = Timed(WindowLoader(shards, cfg))
    stream = iter(consumer.batches(timed))
    waits, totals = [], []
    for i in range(steps + warmup):
        w0, t0 = timed.wait, time.perf_counter()
        batch = next(stream)
        consumer.step(batch)
        if i >= warmup:
            waits.append(timed.wait - w0)
            totals.append(time.perf_counter() - t0)
    return {"wait_share": sum(waits) / sum(totals), "max_wait_share": max(w / t for w, t in zip(waits, totals)),
            "step_s": statistics.median(totals)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default=str(ROOT / "yume-data-demo" / "real-world" / "shards"))
    ap.add_argument("--preset", default="cpu", help="training_stub config preset whose trainer consumes the windows")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per loader-alone timing")
    ap.add_argument("--hd", action="store_true", help="also time decoding a generated 1280x720 clip")
    ap.add_argument("--threads", type=int, help="trainer threads (default: cores left beside the most workers)")
    args = ap.parse_args(argv)
    if not Path(args.shards).exists():
        print(f"{args.shards} not found: run `yume-data demo` (or `make demo`) first, or pass --shards")
        return 2
    torch.manual_seed(0)
    cores = os.cpu_count() or 1
    # A trainer leaves its loader workers their cores: oversubscribed, its intra-op threads wait on each other at
    # every barrier (measured here: 7x slower steps on 2 cores with 2 threads and 2 busy workers). One setting for
    # every measurement, so (c) and (d) compare like with like.
    torch.set_num_threads(args.threads or max(1, cores - max(args.workers)))
    print(f"CPU cores: {cores}, trainer threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        consumer, cfg = make_consumer(args.preset, Path(tmp))
        space = cfg.latents
        print(f"consumer: {consumer.name}; latents {space.height}x{space.width} patch {space.patch} "
              f"(grid {space.latent_size}, {space.channels} ch), chunk {cfg.chunk_latents} latents, "
              f"history <= {cfg.max_history_chunks} chunks, batch {consumer.batch_size}")

        clips = [(s["__key__"], s["mp4"]) for s in wds.WebDataset(resolve_shards(args.shards), shardshuffle=False)]
        meta = json.loads(next(iter(wds.WebDataset(resolve_shards(args.shards), shardshuffle=False)))["json"])
        if args.hd:
            clips.append(hd_clip(Path(tmp)))
        print(f"\n(a) decode cost per clip ({len(clips)} clips; demo clips {meta['width']}x{meta['height']}):")
        for row in decode_cost(clips, cfg):
            print(f"  {row['clip'][:32]:<32} {row['frames']:>4} frames  decode {row['decode_s'] * 1e3:7.1f} ms "
                  f"({row['decode_s'] / row['frames'] * 1e3:5.2f} ms/frame)  encode {row['encode_s'] * 1e3:5.1f} ms")

        print("\n(b) loader alone:")
        alone = {}
        for w in args.workers:
            rate, n = loader_rate(args.shards, dataclasses.replace(cfg, workers=w), args.epochs)
            alone[w] = rate
            print(f"  workers={w}: {rate:8.1f} windows/s ({n} windows, {args.epochs} epochs)")

        windows = list(WindowLoader(args.shards, cfg, epochs=1))
        consumed = trainer_rate(consumer, windows, args.steps, args.warmup)
        print(f"\n(c) trainer alone: {consumed:.1f} windows/s ({consumer.batch_size / consumed * 1e3:.1f} ms per step)")

        print("\n(d) loader feeding the trainer:")
        worst = 0.0
        for w in args.workers:
            r = fed(consumer, args.shards, dataclasses.replace(cfg, workers=w), args.steps, args.warmup)
            worst = max(worst, r["wait_share"]) if w == max(args.workers) else worst
            print(f"  workers={w}: headroom (b)/(c) {alone[w] / consumed:6.2f}x   data wait {r['wait_share']:6.1%} "
                  f"of a step (worst step {r['max_wait_share']:.1%}), step {r['step_s'] * 1e3:.1f} ms")
    best = min(args.workers, key=lambda w: -alone[w])
    print(f"load average now {os.getloadavg()[0]:.1f}")
    print(f"\nratio: loader/trainer {alone[best] / consumed:.2f}x at workers={best}; data-wait share at "
          f"workers={max(args.workers)}: {worst:.1%} (bar: <= {BAR:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

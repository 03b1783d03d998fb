"""Per-chunk latency against history length: TSCM against full context (the baseline) and a sliding window.

    python benchmarks/bench_tscm.py [--config cpu|big|FILE] [--device cpu|cuda] [--history 8 16 32 64]
                                    [--repeats 5] [--train-steps 0] [--json out.json]

For each mode and each history length H (in chunks; the history is the first latent plus H chunks, as in a rollout)
it times one sampling step of the current chunk (the model's forward; the history is encoded once per chunk, so it
is timed separately and added once per `steps` sampling steps in the per-chunk figure) with an untrained model of
the config's size, best of `--repeats`. Printed: per-step and per-chunk latency, tokens in self-attention, forward
tokens/s, and the full/TSCM latency ratio at every H (the aim: >= 4x at 64 chunks). On CUDA it also records peak
memory; configurations that run out of memory, or whose full-context token count exceeds `--max-tokens`, are
reported as skipped. `--train-steps N` also times N training steps on random windows of the config's longest
history (windows/s and tokens/s), for throughput on a GPU with `--config big`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training_stub.config import load_config, with_mode
from training_stub.train import Batch, Trainer, build_model
from training_stub.tscm import token_counts

TEXT_DIM = 32


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, repeats, device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def time_chunk(model, config, mode, history_chunks, device, repeats, autocast):
    data = config.data
    c, (h, w) = data.latents.channels, data.latents.latent_size
    n_hist = 1 + history_chunks * data.chunk_latents
    history = torch.randn(n_hist, c, h, w, device=device)
    x = torch.randn(1, data.chunk_latents, c, h, w, device=device)
    t = torch.full((1,), 0.5, device=device)
    with autocast():
        context, mask = model.encode_text([torch.randn(40, TEXT_DIM, device=device)])
        encoded = model.encode_history([history], [n_hist], mode)
        model(x, t, encoded, context, mask)  # warm-up at this size
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        encode_s = _best(lambda: model.encode_history([history], [n_hist], mode), repeats, device)
        step_s = _best(lambda: model(x, t, encoded, context, mask), repeats, device)
    tokens = encoded.tokens.shape[1] + x.shape[1] * ((h + 1) // 2) * ((w + 1) // 2)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"mode": mode, "history_chunks": history_chunks, "history_latents": n_hist, "tokens": tokens,
            "step_ms": 1000 * step_s, "encode_ms": 1000 * encode_s,
            "chunk_ms": 1000 * (encode_s + config.sample_steps * step_s), "tokens_per_s": tokens / step_s,
            "peak_memory_bytes": peak}


def time_training(config, device, steps):
    """Training steps on random windows at the config's longest history: windows/s and tokens/s (forward tokens)."""
    data = config.data
    c, (h, w) = data.latents.channels, data.latents.latent_size
    trainer = Trainer(config, TEXT_DIM, device)
    n_hist = 1 + data.max_history_chunks * data.chunk_latents
    b = config.batch_size
    batch = Batch(histories=[torch.randn(n_hist, c, h, w) for _ in range(b)], chunk_starts=[n_hist] * b,
                  chunk=torch.randn(b, data.chunk_latents, c, h, w), chunk_mask=None,
                  contexts=[torch.randn(40, TEXT_DIM) for _ in range(b)])
    trainer.train_step([batch])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step([batch])
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    counts = token_counts(n_hist, (h, w), config.model.tscm, config.model.patch)
    tokens = b * (counts["temporal_spatial"] + data.chunk_latents * ((h + 1) // 2) * ((w + 1) // 2))
    return {"step_ms": 1000 * per_step, "windows_per_s": b / per_step, "tokens_per_s": tokens / per_step,
            "batch_size": b, "history_latents": n_hist}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="cpu", help="preset (cpu, big) or YAML file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--history", type=int, nargs="+", default=[8, 16, 32, 64], help="history lengths in chunks")
    ap.add_argument("--modes", nargs="+", default=["tscm", "full", "sliding"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200_000, help="skip configurations with more tokens")
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    config = load_config(args.config)
    model = build_model(config, TEXT_DIM).to(device).eval()
    if device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        from contextlib import nullcontext as autocast
    space = config.data.latents
    print(f"config {args.config}: latents {space.latent_size} x {space.channels} ch, chunk {config.data.chunk_latents} "
          f"latents, width {config.model.width}, depth {config.model.depth}, {config.sample_steps} steps/chunk; "
          f"device {device}, torch threads {torch.get_num_threads()}")
    rows = []
    fine = config.model.patch
    for hc in args.history:
        for mode in args.modes:
            n_hist = 1 + hc * config.data.chunk_latents
            hist_tokens = token_counts(n_hist, space.latent_size, with_mode(config, mode).model.tscm, fine)
            if hist_tokens["temporal_spatial"] > args.max_tokens:
                rows.append({"mode": mode, "history_chunks": hc, "skipped": f"{hist_tokens['temporal_spatial']} tokens"})
                continue
            try:
                rows.append(time_chunk(model, config, mode, hc, device, args.repeats, autocast))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"mode": mode, "history_chunks": hc, "skipped": "out of memory"})
    print(f"\n{'history':>8} {'mode':>8} {'tokens':>7} {'step ms':>9} {'chunk ms':>9} {'tok/s':>10} {'peak MiB':>9}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['history_chunks']:>8} {r['mode']:>8}  skipped: {r['skipped']}")
            continue
        peak = "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
        print(f"{r['history_chunks']:>8} {r['mode']:>8} {r['tokens']:>7} {r['step_ms']:>9.2f} {r['chunk_ms']:>9.2f} "
              f"{r['tokens_per_s']:>10.0f} {peak:>9}")
    ratios = {}
    by = {(r["mode"], r["history_chunks"]): r for r in rows if "skipped" not in r}
    for hc in args.history:
        if ("full", hc) in by and ("tscm", hc) in by:
            ratios[hc] = by[("full", hc)]["chunk_ms"] / by[("tscm", hc)]["chunk_ms"]
    print("\nfull context / TSCM per-chunk latency: " + ", ".join(f"{hc} chunks {r:.1f}x" for hc, r in ratios.items()))
    tscm = [by[("tscm", hc)]["chunk_ms"] for hc in args.history if ("tscm", hc) in by]
    if len(tscm) > 1:
        print(f"TSCM per-chunk latency across history lengths: max/min {max(tscm) / min(tscm):.2f} "
              f"(median {statistics.median(tscm):.1f} ms)")
    result = {"config": args.config, "device": str(device), "rows": rows, "full_over_tscm": ratios}
    if args.train_steps:
        result["training"] = time_training(config, device, args.train_steps)
        t = result["training"]
        print(f"training: {t['step_ms']:.1f} ms/step, {t['windows_per_s']:.1f} windows/s, {t['tokens_per_s']:.0f} "
              f"tokens/s (batch {t['batch_size']}, history {t['history_latents']} latents)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""One denoising step of Wan 2.1 T2V 14B at 720p x 81 frames, and what 80,000 videos cost at that rate.

    python benchmarks/bench_wan_step.py                 # needs CUDA (an 80 GB+ GPU); skips with a message otherwise
    python benchmarks/bench_wan_step.py --small         # a tiny config on the CPU: exercises the same code path

What is timed: the real-size `WanTransformer3DModel` architecture (40 layers, 40 heads x 128 = 5120 wide, FFN 13824,
16 latent channels in and out, UMT5 text width 4096, patch (1, 2, 2)) with random weights built directly on the GPU
in bfloat16 (no download, ~28 GB), on a 720p x 81-frame latent (16 x 21 x 90 x 160: 75,600 tokens) with a
512-token text context. One sampling step is two forward passes (classifier-free guidance: conditional and
unconditional), so

    seconds per video ~= steps x 2 x forward time  (+ text encoding and VAE decoding, not timed here: seconds)
    GPU-hours for N videos = N x seconds per video / 3600

(a) baseline: forward passes with no cache hook: the firm figure (every step costs this with the real model too).
(b) the same model with a diffusers cache hook (`--cache first_block --threshold 0.2` by default) over a short
    simulated trajectory (`--trajectory` steps, latents moving as a sampler would move them): how much a hook saves
    depends on how similar consecutive steps are, which random weights do not reproduce, so (b) only shows the
    hook's mechanics and overhead. Measure real savings on real checkpoints (`yume-data plan synth --calibrate`
    with and without `--cache`).
The ratio printed is (a)'s per-forward time over (b)'s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

WAN21_14B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}
LATENT_720P = (16, 21, 90, 160)  # channels, (81 - 1) / 4 + 1 frames, 720 / 8, 1280 / 8

TINY = {**WAN21_14B, "num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64,
        "num_layers": 2, "rope_max_seq_len": 32}
LATENT_TINY = (16, 3, 8, 8)


def build(config: dict, device: str, dtype):
    """Random weights, created on `device` in `dtype` (no float32 copy of 14B parameters on the way)."""
    import torch
    from diffusers import WanTransformer3DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def inputs(latent: tuple, text_dim: int, text_len: int, device: str, dtype, seed: int = 0):
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn((1, *latent), generator=g).to(device, dtype)
    cond = torch.randn((1, text_len, text_dim), generator=g).to(device, dtype)
    uncond = torch.randn((1, text_len, text_dim), generator=g).to(device, dtype)
    return latents, cond, uncond


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forwards(model, latents, contexts, device: str, repeats: int, warmup: int) -> list[float]:
    """Seconds per forward pass at a fixed timestep, conditional and unconditional alternating."""
    import torch

    t = torch.tensor([999], device=device)
    times = []
    with torch.inference_mode():
        for k in range(warmup + repeats):
            ctx = contexts[k % 2]
            _sync(device)
            started = time.perf_counter()
            model(hidden_states=latents, timestep=t, encoder_hidden_states=ctx, return_dict=False)
            _sync(device)
            if k >= warmup:
                times.append(time.perf_counter() - started)
    return times


def time_trajectory(model, latents, contexts, device: str, steps: int) -> list[float]:
    """Seconds per forward over a simulated Euler trajectory with CFG, inside the cache contexts pipelines use."""
    import torch

    times = []
    x = latents.clone()
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    with torch.inference_mode():
        for i in range(steps):
            t = torch.tensor([sigmas[i] * 1000], device=device)
            _sync(device)
            started = time.perf_counter()
            with model.cache_context("cond"):
                cond = model(hidden_states=x, timestep=t, encoder_hidden_states=contexts[0], return_dict=False)[0]
            with model.cache_context("uncond"):
                uncond = model(hidden_states=x, timestep=t, encoder_hidden_states=contexts[1], return_dict=False)[0]
            x = x + (sigmas[i + 1] - sigmas[i]) * (uncond + 5.0 * (cond - uncond))
            _sync(device)
            times.append((time.perf_counter() - started) / 2)
    return times


def cache_config(kind: str, threshold: float):
    if kind == "first_block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=threshold)
    if kind == "taylorseer":
        from diffusers import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig()
    raise SystemExit(f"unknown --cache {kind!r}; choose first_block or taylorseer")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny config on the CPU (checks the code path)")
    ap.add_argument("--repeats", type=int, default=4, help="timed forward passes (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--trajectory", type=int, default=10, help="simulated steps for the cache-hook run")
    ap.add_argument("--cache", default="first_block", help="first_block or taylorseer")
    ap.add_argument("--threshold", type=float, default=0.2, help="first_block threshold")
    ap.add_argument("--steps", type=int, default=50, help="sampling steps per video (Wan 2.1 T2V default)")
    ap.add_argument("--videos", type=int, default=80_000, help="videos to project GPU-hours for")
    args = ap.parse_args(argv)

    import torch

    if args.small:
        device, dtype, config, latent, text_len = "cpu", torch.float32, TINY, LATENT_TINY, 16
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("bench_wan_step: skipped: no CUDA device (run with --small to exercise the code path on a CPU)")
        return 0
    else:
        device, dtype, config, latent, text_len = "cuda", torch.bfloat16, WAN21_14B, LATENT_720P, 512
    name = "tiny config, CPU, float32" if args.small else f"Wan 2.1 14B config, {torch.cuda.get_device_name()}, bf16"
    started = time.perf_counter()
    model = build(config, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    latents, cond, uncond = inputs(latent, config["text_dim"], text_len, device, dtype)
    tokens = latent[1] * (latent[2] // 2) * (latent[3] // 2)
    print(f"{name}: {params / 1e9:,.3f} B parameters ({params:,}), latent {latent} = {tokens:,} tokens, built in "
          f"{time.perf_counter() - started:.1f} s")

    base = time_forwards(model, latents, (cond, uncond), device, args.repeats, args.warmup)
    forward = statistics.median(base)
    model.enable_cache(cache_config(args.cache, args.threshold))
    cached = time_trajectory(model, latents, (cond, uncond), device, args.trajectory)
    model.disable_cache()
    cached_forward = statistics.fmean(cached)

    per_video = args.steps * 2 * forward
    gpu_hours = args.videos * per_video / 3600
    print(f"(a) no cache hook:  {forward:.4f} s per forward (median of {len(base)}: "
          f"{', '.join(f'{t:.4f}' for t in base)})")
    print(f"(b) {args.cache} hook: {cached_forward:.4f} s per forward (mean over a {args.trajectory}-step simulated "
          f"trajectory; random weights: indicative only)")
    print(f"    ratio (a)/(b): {forward / cached_forward:.2f}x")
    print(f"per video: {args.steps} steps x 2 (CFG) x {forward:.4f} s = {per_video:,.1f} s "
          "(+ text encoding and VAE decode, not timed)")
    unit = "CPU-hours (tiny config: not a real projection)" if args.small else "GPU-hours"
    print(f"{args.videos:,} videos: {gpu_hours:,.1f} {unit} from (a); {gpu_hours * cached_forward / forward:,.1f} "
          "with (b)'s rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())

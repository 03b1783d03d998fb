"""`gpu_check` section `wan`: Wan 2.1 T2V 14B and Wan 2.2 I2V A14B: one sampling step, its FLOPs and MFU, the attention kernel."""

from __future__ import annotations

import os
import time

from gpu_sections.common import ROOT, Part, attention_probe, datasheet_peak, device_info, matmul_rate, seconds_left, sig, torch_device


def wan_forward_flops(config: dict, latent: tuple, text_len: int) -> dict:
    """Model FLOPs of one WanTransformer3DModel forward (multiply-add = 2), from the shapes: every matmul, the
    patch embedding and the attention products, the timestep embedding included (negligible at 14B, but it is what
    makes the count exact, so a test can hold it to torch's FLOP counter without a tolerance)."""
    c, t, h, w = latent
    pt, ph, pw = config["patch_size"]
    d = config["num_attention_heads"] * config["attention_head_dim"]
    n = (t // pt) * (h // ph) * (w // pw)
    self_proj = 4 * 2 * n * d * d
    self_attn = 4 * n * n * d
    cross = 2 * 2 * n * d * d + 2 * 2 * text_len * d * d + 4 * n * text_len * d
    ffn = 2 * 2 * n * d * config["ffn_dim"]
    layers = config["num_layers"] * (self_proj + self_attn + cross + ffn)
    ends = 2 * n * d * c * pt * ph * pw + 2 * n * d * config["out_channels"] * pt * ph * pw
    text = 2 * text_len * (config["text_dim"] * d + d * d)
    timestep = 2 * (config["freq_dim"] * d + d * d + d * 6 * d)  # sinusoid -> d -> d, then the 6 modulations
    total = layers + ends + text + timestep
    return {"total": total, "attention_share": config["num_layers"] * self_attn / total, "tokens": n}


def _preset_steps(name: str, default: int) -> int:
    """Sampling steps of a synthesis preset (synthesis/presets/NAME.yaml), so the projection follows the presets."""
    try:
        import yaml

        return int(yaml.safe_load((ROOT / "synthesis" / "presets" / f"{name}.yaml").read_text())["steps"])
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return default


def section_wan(part: Part, until: float, dry: bool) -> None:
    import gc

    import torch

    import bench_wan_step as bench

    device = torch_device(dry)
    dtype = torch.float32 if dry else torch.bfloat16
    part["device"] = device_info(device)
    part.save()
    import diffusers

    part["diffusers"] = diffusers.__version__
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        part["diffusers_attention_backend"] = str(_AttentionBackendRegistry.get_active_backend()[0].value)
    except (ImportError, AttributeError):
        part["diffusers_attention_backend"] = os.environ.get("DIFFUSERS_ATTN_BACKEND", "native")
    part["matmul"] = matmul_rate(device, dtype, 256 if dry else 8192, 0.05 if dry else 1.0)
    peak = None if dry else datasheet_peak(part["device"]["name"])
    part["datasheet_peak"] = peak
    part.save()
    print(f"matmul {part['matmul']['tflops']:.3g} TFLOP/s ({part['matmul']['dtype']}); datasheet peak: "
          f"{peak['tflops'] if peak else 'card not recognised'}", flush=True)

    base, latent, text_len = (bench.TINY, bench.LATENT_TINY, 16) if dry else (bench.WAN21_14B, bench.LATENT_720P, 512)
    heads = base["num_attention_heads"]
    tokens = latent[1] * (latent[2] // 2) * (latent[3] // 2)
    part["attention"] = attention_probe(device, dtype, (1, heads, tokens, base["attention_head_dim"]),
                                        repeats=2 if dry else 3)
    part.save()
    print(f"SDPA at Wan's self-attention shape: {part['attention']['default_backend']}; ms {part['attention']['ms']}",
          flush=True)

    models = [
        ("wan21_t2v_14b", base, latent, _preset_steps("wan21-t2v-720p", 50), 80_000),
        ("wan22_i2v_a14b_expert", {**base, "in_channels": 36}, (36, *latent[1:]), _preset_steps("wan22-i2v-720p", 40),
         10_000),
    ]
    steps_timed = 1 if dry else 2
    part["models"] = {}
    last_cost = None
    for key, config, shape, steps, videos in models:
        if last_cost is not None and seconds_left(until) < 1.2 * last_cost:
            part["models"][key] = {"skipped": f"{seconds_left(until):.0f} s left, the previous model took {last_cost:.0f} s"}
            part.save()
            continue
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = bench.build(config, str(device), dtype)
        params = sum(p.numel() for p in model.parameters())
        build_s = time.perf_counter() - t0
        latents, cond, uncond = bench.inputs(shape, config["text_dim"], text_len, str(device), dtype)
        forwards = bench.time_forwards(model, latents, (cond, uncond), str(device), repeats=2 * steps_timed, warmup=1)
        step_s = sum(forwards) / steps_timed  # cond + uncond of each step
        flops = wan_forward_flops(config, shape, text_len)
        achieved = flops["total"] / (step_s / 2) / 1e12
        row = {
            "parameters": params, "latent": list(shape), "tokens": flops["tokens"], "text_tokens": text_len,
            "dtype": str(dtype).replace("torch.", ""), "build_s": sig(build_s),
            "forward_s": [sig(f) for f in forwards], "step_s": sig(step_s),
            "model_tflop_per_forward": sig(flops["total"] / 1e12),
            "attention_share_of_flops": sig(flops["attention_share"], 3),
            "achieved_tflops": sig(achieved),
            "mfu_vs_measured_matmul": sig(achieved / part["matmul"]["tflops"], 3),
            "mfu_vs_datasheet_peak": sig(achieved / peak["tflops"], 3) if peak else None,
            "peak_memory_gib": sig(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda"
            else None,
            "steps_per_video": steps, "seconds_per_video": sig(steps * step_s),
            "videos": videos, "gpu_hours": sig(videos * steps * step_s / 3600),
            "note": "transformer only; text encoding and VAE decoding are not timed",
        }
        part["models"][key] = row
        part.save()
        print(f"{key}: {params / 1e9:.2f} B params, {row['step_s']:.3f} s per step (2 forwards), MFU "
              f"{row['mfu_vs_measured_matmul']:.2f} of measured matmul"
              + (f", {row['mfu_vs_datasheet_peak']:.2f} of datasheet peak" if peak else ""), flush=True)
        del model, latents, cond, uncond
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        last_cost = time.perf_counter() - t0

"""`gpu_check` section `tscm`: TSCM on CUDA (`benchmarks/bench_tscm.py --config big`): per-chunk latency against history length."""

from __future__ import annotations

from contextlib import nullcontext

from gpu_sections.common import Part, device_info, seconds_left, sig, torch_device


DRY_TSCM = {"batch_size": 2, "data": {"max_history_chunks": 2}, "model": {"width": 32, "depth": 1, "heads": 2}}


def section_tscm(part: Part, until: float, dry: bool) -> None:
    import torch

    import bench_tscm as bench

    device = torch_device(dry)
    part["device"] = device_info(device)
    preset = "cpu" if dry else "big"
    history = [1, 2] if dry else [8, 16, 32, 64]
    repeats, max_tokens, train_steps = (1, 200_000, 1) if dry else (5, 200_000, 5)
    # a dry run shrinks the cpu preset further: it checks the code path, in seconds on two busy cores
    config = bench.load_config(preset, DRY_TSCM if dry else None)
    model = bench.build_model(config, bench.TEXT_DIM).to(device).eval()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    space = config.data.latents
    part["setup"] = {"config": preset, "latent_size": list(space.latent_size), "channels": space.channels,
                     "chunk_latents": config.data.chunk_latents, "width": config.model.width,
                     "depth": config.model.depth, "sample_steps": config.sample_steps, "repeats": repeats,
                     "command": f"python benchmarks/bench_tscm.py --device {device.type} --config {preset}"}
    rows = part["rows"] = []
    for hc in history:
        for mode in ("tscm", "full", "sliding"):
            n_hist = 1 + hc * config.data.chunk_latents
            counts = bench.token_counts(n_hist, space.latent_size, bench.with_mode(config, mode).model.tscm,
                                        config.model.patch)
            if counts["temporal_spatial"] > max_tokens:
                rows.append({"mode": mode, "history_chunks": hc, "skipped": f"{counts['temporal_spatial']} tokens"})
            elif seconds_left(until) < (1 if dry else 8):
                rows.append({"mode": mode, "history_chunks": hc, "skipped": "time budget"})
            else:
                try:
                    rows.append(bench.time_chunk(model, config, mode, hc, device, repeats, autocast))
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append({"mode": mode, "history_chunks": hc, "skipped": "out of memory"})
            part.save()
    by = {(r["mode"], r["history_chunks"]): r for r in rows if "skipped" not in r}
    part["full_over_tscm"] = {str(hc): sig(by[("full", hc)]["chunk_ms"] / by[("tscm", hc)]["chunk_ms"], 3)
                              for hc in history if ("full", hc) in by and ("tscm", hc) in by}
    tscm = [by[("tscm", hc)]["chunk_ms"] for hc in history if ("tscm", hc) in by]
    part["tscm_chunk_ms_max_over_min"] = round(max(tscm) / min(tscm), 3) if len(tscm) > 1 else None
    part.save()
    print(f"full/TSCM per-chunk latency: {part['full_over_tscm']}", flush=True)
    del model
    if seconds_left(until) > (2 if dry else 20):
        part["training"] = bench.time_training(config, device, train_steps)
        part.save()

"""`gpu_check` section `vbench`: Native VBench scoring with the real architectures and random weights: model rate and end to end."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from gpu_sections.common import Part, cpu_cores, device_info, seconds_left, sig, sync, torch_device


def vbench_configs(dry: bool) -> dict:
    """DINO ViT-B/16 and the CLIP ViT-B/32 and ViT-L/14 vision towers, as their checkpoints' configs give them."""
    from transformers import CLIPVisionConfig, ViTConfig

    if dry:
        return {
            "dino": ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=32, patch_size=16, qkv_bias=True),
            "clip_b32": CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=16, projection_dim=16),
            "clip_l14": CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=16, projection_dim=24),
        }
    return {  # facebook/dino-vitb16, openai/clip-vit-base-patch32, openai/clip-vit-large-patch14
        "dino": ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          image_size=224, patch_size=16, qkv_bias=True),
        "clip_b32": CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512,
                                     hidden_act="quick_gelu"),
        "clip_l14": CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                     num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                                     hidden_act="quick_gelu"),
    }


def _save_random_models(folder: Path, dry: bool) -> dict:
    """Random-weight checkpoints of the three architectures (and a LAION-shaped head), as local model paths."""
    import torch
    from transformers import CLIPVisionModelWithProjection, ViTModel
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass
    torch.manual_seed(0)
    configs = vbench_configs(dry)
    paths = {}
    for key, config in configs.items():
        model = (ViTModel(config, add_pooling_layer=False) if key == "dino"
                 else CLIPVisionModelWithProjection(config))
        paths[key] = folder / key
        model.half().save_pretrained(paths[key])  # the scorer loads float32; half a file to write and read
        paths[f"{key}_parameters"] = sum(p.numel() for p in model.parameters())
    head = {"weight": torch.randn(1, configs["clip_l14"].projection_dim) * 0.01, "bias": torch.zeros(1)}
    paths["head"] = folder / "aesthetic_head.pth"
    torch.save(head, paths["head"])
    return paths


def _score_in_memory(scorer, frames) -> dict:
    """One video's scores from frames already in memory: `NativeScorer._measure` without the decoding."""
    import torch

    from filtering import native

    video = native._Video(set(scorer._encoders), "temporal_flickering" in scorer.dimensions)
    with torch.inference_mode():
        for start in range(0, len(frames), scorer.frame_batch):
            chunk = frames[start:start + scorer.frame_batch]
            video.add_frames(chunk)
            on_device = torch.from_numpy(chunk).to(scorer._device)
            video.add_features(native._encode(scorer._encoders, on_device), len(chunk))
    return {dim: scorer._reduce(dim, video) for dim in scorer.dimensions}


def _model_rate(scorer, frames, videos: int, device) -> dict:
    """videos/s of the model work alone (transfer, VBench's transforms and the three ViTs) on frames in memory."""
    import torch

    from filtering import native

    models = {dim: enc for dim, enc in scorer._encoders.items()}

    def one():
        with torch.inference_mode():
            for start in range(0, len(frames), scorer.frame_batch):
                native._encode(models, torch.from_numpy(frames[start:start + scorer.frame_batch]).to(device))
        sync(device)

    one()
    t0 = time.perf_counter()
    for _ in range(videos):
        one()
    wall = time.perf_counter() - t0
    return {"videos": videos, "videos_per_s": sig(videos / wall), "frames_per_s": sig(videos * len(frames) / wall)}


def section_vbench(part: Part, until: float, dry: bool) -> None:
    import numpy as np
    import torch

    from filtering.native import NativeScorer

    device = torch_device(dry)
    part["device"] = device_info(device)
    frames_n, (w, h) = (9, (64, 36)) if dry else (81, (1280, 720))
    videos = 2 if dry else 8
    part["setup"] = {"frames_per_video": frames_n, "size": [w, h], "frame_batch": 64,
                     "models": "random weights: DINO ViT-B/16, CLIP ViT-B/32, CLIP ViT-L/14 (vision towers)"}
    with tempfile.TemporaryDirectory(prefix="gpu_check_vbench_") as tmp:
        t0 = time.perf_counter()
        paths = _save_random_models(Path(tmp), dry)
        part["setup"]["parameters"] = {k[:-11]: v for k, v in paths.items() if k.endswith("_parameters")}
        part["setup"]["models_built_s"] = round(time.perf_counter() - t0, 1)
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (h // 8, 2 * w // 8, 3), np.uint8).repeat(8, 0).repeat(8, 1)
        frames = np.stack([base[:, (4 * t) % (base.shape[1] - w):][:, :w] for t in range(frames_n)])
        workers = 4 if dry else min(16, cpu_cores())
        with NativeScorer(dino_model=str(paths["dino"]), clip_model=str(paths["clip_b32"]),
                          aesthetic_model=str(paths["clip_l14"]), aesthetic_head=str(paths["head"]),
                          device=str(device), workers=workers) as scorer:
            part["setup"]["models_loaded_s"] = round(time.perf_counter() - t0, 1)
            scores = _score_in_memory(scorer, frames)
            if not all(np.isfinite(v) for v in scores.values()):
                raise RuntimeError(f"non-finite scores from the in-memory path: {scores}")
            t1 = time.process_time()
            _score_in_memory(scorer, frames)
            part["cpu_s_per_video_in_memory"] = sig(time.process_time() - t1, 3)  # flicker sums, launches
            precision = torch.get_float32_matmul_precision()
            part["gpu_models"] = {"float32": _model_rate(scorer, frames, videos, device)}
            part.save()
            print(f"models on {device.type}, float32: {part['gpu_models']['float32']['videos_per_s']} videos/s",
                  flush=True)
            if device.type == "cuda" and seconds_left(until) > 15:
                torch.set_float32_matmul_precision("high")
                try:
                    part["gpu_models"]["tf32"] = _model_rate(scorer, frames, videos, device)
                finally:
                    torch.set_float32_matmul_precision(precision)
                part.save()
            if seconds_left(until) < (3 if dry else 30):
                part["end_to_end"] = {"skipped": "time budget"}
                return
            import bench_scoring

            t2 = time.perf_counter()
            sources = bench_scoring.make_sources(Path(tmp) / "videos", 2 if dry else 4, frames_n, (w, h))
            items = [(f"v{i}", sources[i % len(sources)][1]) for i in range(4 if dry else 2 * workers)]
            encode_s = time.perf_counter() - t2
            scorer.score(items[:1])
            t3 = time.perf_counter()
            results = scorer.score(items)
            wall = time.perf_counter() - t3
            bad = [r.error for r in results if not r.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} videos failed to score: {bad[0]}")
            part["end_to_end"] = {"workers": workers, "videos": len(items), "videos_per_s": sig(len(items) / wall),
                                  "sources_encoded_s": round(encode_s, 1),
                                  "note": "PyAV decoding on worker threads, then the same model work"}
            part.save()
            print(f"end to end ({workers} workers): {part['end_to_end']['videos_per_s']} videos/s", flush=True)

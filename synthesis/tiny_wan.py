"""Tiny random-weight Wan pipelines, built offline: the `tiny-random` model specs of the synthesis stage.

Three kinds, each the architecture of a real checkpoint at toy sizes:

- `t2v`: `WanPipeline` like `Wan-AI/Wan2.1-T2V-14B-Diffusers` (UMT5 text encoder, `AutoencoderKLWan`, one
  `WanTransformer3DModel` with 16 input channels).
- `i2v-2.1`: `WanImageToVideoPipeline` like `Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`: 36 input channels (noise
  latents + mask + image latents) and a CLIP vision encoder (`CLIPVisionModel`, the real checkpoint's class) whose
  penultimate hidden states enter every block's added cross-attention (`image_dim`, `added_kv_proj_dim`).
- `i2v-2.2`: `WanImageToVideoPipeline` like `Wan-AI/Wan2.2-I2V-A14B-Diffusers`: two experts, `transformer` for the
  high-noise steps and `transformer_2` (other weights) for the low-noise ones, switched at `boundary_ratio` 0.9;
  no CLIP encoder.

Real parts: the VAE keeps Wan's factors (8x spatial, 4x temporal, 16 latent channels) and the transformers their
(1, 2, 2) patches, so sizes must be multiples of 16 and frame counts 4k+1 exactly as for the 14B models; only widths
are small (VAE base 8 channels, transformer 2 heads x 16, 2 layers). The text side is `yume_core.tiny_text`'s
UMT5 encoder and character-level tokenizer. Weights come from `torch.manual_seed(seed)`; `tiny-random:<seed>`
picks another draw.

The pipeline is saved as a diffusers checkpoint folder (`model_index.json` + one folder per component) under
`$YUME_DATA_CACHE/tiny-random-wan/<hash>` (default `~/.cache/yume-data`), and loaded with the same
`DiffusionPipeline.from_pretrained` call as a real checkpoint, so tests and the demo run the production loading
path (dtype, device, offload, cache hooks). Built into a temp dir and renamed into place, so concurrent builders
(worker processes, ranks) never see half a checkpoint. A build takes about 0.1 s after the imports.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from yume_core.storage import build_once, cache_root

TINY_KINDS = ("t2v", "i2v-2.1", "i2v-2.2")
BUILDER_VERSION = 3

_TRANSFORMER = {
    "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16, "out_channels": 16, "text_dim": 32,
    "freq_dim": 32, "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
_VAE = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
        "temperal_downsample": [False, True, True]}
_CLIP = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
         "intermediate_size": 32, "patch_size": 8}


def _settings(kind: str, seed: int) -> dict:
    import diffusers

    return {"kind": kind, "seed": seed, "builder": BUILDER_VERSION, "transformer": _TRANSFORMER, "vae": _VAE,
            "clip": _CLIP if kind == "i2v-2.1" else None, "diffusers_major": diffusers.__version__.split(".")[0]}


def tiny_wan_dir(kind: str = "t2v", seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder of the tiny Wan pipeline `kind` for `seed`, built on first use."""
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny Wan kind {kind!r}; choose one of {TINY_KINDS}")
    settings = _settings(kind, seed)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "tiny-random-wan"
    return build_once(root / f"{kind}-{digest}", "model_index.json",
                      lambda work: build_tiny_wan(kind, seed).save_pretrained(work))


def build_tiny_wan(kind: str = "t2v", seed: int = 0):
    """The tiny pipeline object itself (float32, CPU); `tiny_wan_dir` saves it for loading."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
    )

    from yume_core.tiny_text import tiny_umt5_encoder

    tokenizer, text_encoder = tiny_umt5_encoder(seed, d_model=_TRANSFORMER["text_dim"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**_VAE)
        # Wan's own scheduler choice (its checkpoints ship UniPC in flow-prediction mode); the stage replaces it
        # with the configured scheduler and flow shift at load time anyway.
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            num_train_timesteps=1000, flow_shift=3.0)
        common = {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "scheduler": scheduler}
        if kind == "t2v":
            return WanPipeline(transformer=_transformer(seed, in_channels=16), **common)
        if kind == "i2v-2.1":
            from transformers import CLIPVisionConfig, CLIPVisionModel

            try:  # transformers 5: the PIL backend by name (the plain name wants torchvision and warns without it)
                from transformers import CLIPImageProcessorPil as CLIPImageProcessor
            except ImportError:
                from transformers import CLIPImageProcessor
            encoder = CLIPVisionModel(CLIPVisionConfig(**_CLIP)).eval()
            processor = CLIPImageProcessor(size=_CLIP["image_size"], crop_size=_CLIP["image_size"])
            transformer = _transformer(seed, in_channels=36, image_dim=_CLIP["hidden_size"],
                                       added_kv_proj_dim=_TRANSFORMER["num_attention_heads"]
                                       * _TRANSFORMER["attention_head_dim"])
            return WanImageToVideoPipeline(transformer=transformer, image_encoder=encoder, image_processor=processor,
                                           **common)
        if kind == "i2v-2.2":
            return WanImageToVideoPipeline(transformer=_transformer(seed, in_channels=36),
                                           transformer_2=_transformer(seed + 1, in_channels=36), boundary_ratio=0.9,
                                           **common)
    raise ValueError(f"unknown tiny Wan kind {kind!r}; choose one of {TINY_KINDS}")


def _transformer(seed: int, **sizes):
    import torch
    from diffusers import WanTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WanTransformer3DModel(**_TRANSFORMER, **sizes).eval()

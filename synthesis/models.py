"""Model spec -> a ready Wan pipeline (T2V or I2V) on a device, with its scheduler, precision and speed options.

Spec forms (the synthesis stage's reading of `yume_core.model_spec`):

- `tiny-random[:seed]` or `tiny-random-t2v[:seed]`: a tiny random `WanPipeline` (see `synthesis.tiny_wan`).
- `tiny-random-i2v-2.1[:seed]`: a tiny `WanImageToVideoPipeline` with a CLIP vision encoder (Wan 2.1 I2V style).
- `tiny-random-i2v-2.2[:seed]`: a tiny two-expert `WanImageToVideoPipeline` (Wan 2.2 I2V A14B style, no CLIP).
- a hub id (`Wan-AI/Wan2.1-T2V-14B-Diffusers`, `Wan-AI/Wan2.2-I2V-A14B-Diffusers`,
  `Wan-AI/Wan2.1-I2V-14B-720P-Diffusers`) or a local diffusers checkpoint folder. Whether it is T2V or I2V comes
  from its `model_index.json` (read before any weights are loaded).

Every form is loaded by the same `DiffusionPipeline.from_pretrained` call (tiny ones from a cached folder).

Speed options and what they cost:

- Precision: `dtype="auto"` is bfloat16 on a GPU (what Wan was trained and released in; half the memory and about
  twice the matmul throughput of float32) and float32 on a CPU (bfloat16 matmuls are slow on most CPUs). The VAE
  and the CLIP image encoder always stay in float32, as diffusers' Wan examples load them: they are small, and the
  VAE decoder in bfloat16 shows banding in dark gradients.
- `cpu_offload`: `enable_model_cpu_offload` keeps each component on the CPU until it runs (text encoder, then the
  transformer(s), then the VAE), so a 14B model fits a 24-48 GB GPU; it costs host-to-device copies of each
  component per video (seconds, against minutes of denoising at 720p). Also the automatic fallback after a GPU
  out-of-memory error (see `synthesis.generate`).
- `cache`: diffusers' cache hooks on the transformer(s) skip recomputation between similar denoising steps.
  Each trades some fidelity (fine texture, small motions) for speed; the unhooked model is the reference:
    * `first_block` (First Block Cache): runs the first block each step and reuses the other blocks' cached
      residual when the first block's output changed by less than `threshold` (relative). 0.05 is close to lossless
      and saves little at 50 steps; 0.1-0.2 skips roughly a third to a half of the steps' remaining blocks with
      visible softening of detail. Adaptive: it skips more where the trajectory is smooth.
    * `pab` (Pyramid Attention Broadcast): reuses self-attention outputs for `skip_range` steps inside the
      timestep window `timestep_range` (the middle of the trajectory, where attention changes slowly). Skipping
      attention every other step saves about a fifth of transformer time; the first and last steps run in full.
    * `taylorseer` (TaylorSeer): computes every `interval`-th step in full after `warmup_steps` full steps and
      predicts module outputs in between with a Taylor expansion; larger intervals are faster and drift more.
  FasterCache assumes the conditional and unconditional passes are batched together, which Wan's pipelines do not
  do, so it is not offered. Figures measured on a GPU belong in BENCHMARKS.md (benchmarks/bench_wan_step.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from yume_core.model_spec import MODEL_LOAD_LOCK, TINY_RANDOM, parse_model_spec

T2V, I2V = "t2v", "i2v"
PIPELINE_KINDS = {"WanPipeline": T2V, "WanImageToVideoPipeline": I2V}
TINY_SPECS = {
    TINY_RANDOM: "t2v",
    f"{TINY_RANDOM}-t2v": "t2v",
    f"{TINY_RANDOM}-i2v-2.1": "i2v-2.1",
    f"{TINY_RANDOM}-i2v-2.2": "i2v-2.2",
}
SCHEDULERS = ("unipc", "euler")
CACHE_KINDS = ("none", "first_block", "pab", "taylorseer")


@dataclass(frozen=True)
class CacheConfig:
    kind: str = "none"  # none | first_block | pab | taylorseer (see the module docstring for the trade-offs)
    threshold: float = 0.05  # first_block: relative change of the first block's output below which steps reuse
    skip_range: int = 2  # pab: recompute self-attention every `skip_range` steps inside `timestep_range`
    timestep_range: tuple[int, int] = (100, 800)  # pab: the timesteps (of 1000) where attention is reused
    interval: int = 5  # taylorseer: full computation every `interval` steps
    warmup_steps: int = 3  # taylorseer: full steps before the first prediction

    def __post_init__(self):
        if self.kind not in CACHE_KINDS:
            raise ValueError(f"unknown cache kind {self.kind!r}; choose one of {CACHE_KINDS}")


@dataclass(frozen=True)
class WanSpec:
    spec: str  # as the user wrote it
    source: str  # what from_pretrained gets: hub id or folder (tiny: resolved when loading)
    tiny_kind: str | None = None  # t2v | i2v-2.1 | i2v-2.2 for tiny-random specs
    seed: int = 0

    @property
    def is_tiny(self) -> bool:
        return self.tiny_kind is not None


def parse_wan_spec(spec: str) -> WanSpec:
    """Parse a synthesis model spec (module docstring); ValueError naming the accepted forms otherwise."""
    name, _, seed = (spec or "").strip().partition(":")
    if name in TINY_SPECS:
        parsed = parse_model_spec(TINY_RANDOM + (f":{seed}" if seed else ""))  # validates the seed
        return WanSpec(spec.strip(), "", TINY_SPECS[name], parsed.seed)
    if name.startswith(TINY_RANDOM):
        raise ValueError(f"unknown tiny model {spec!r}; synthesis knows {sorted(TINY_SPECS)} (each with :<seed>)")
    parsed = parse_model_spec(spec)
    return WanSpec(parsed.spec, str(Path(parsed.spec).expanduser()) if parsed.kind == "path" else parsed.spec)


def pipeline_kind(spec: WanSpec) -> str:
    """`t2v` or `i2v`, from the spec's name (tiny) or its `model_index.json` (fetched alone for a hub id)."""
    if spec.is_tiny:
        return T2V if spec.tiny_kind == "t2v" else I2V
    path = Path(spec.source) / "model_index.json"
    if path.is_file():
        class_name = json.loads(path.read_text()).get("_class_name")
    else:
        from diffusers import DiffusionPipeline

        class_name = DiffusionPipeline.load_config(spec.source).get("_class_name")
    if class_name not in PIPELINE_KINDS:
        raise ValueError(f"model {spec.spec!r} is a {class_name}; synthesis runs {sorted(PIPELINE_KINDS)} checkpoints")
    return PIPELINE_KINDS[class_name]


@dataclass(frozen=True)
class ModelLimits:
    """The sizes a Wan checkpoint can render, from its config files alone (no weights)."""

    spatial: int  # width and height: multiples of this (VAE factor x patch)
    temporal: int  # frames: temporal x k + 1
    max_side: int  # the largest width or height its rotary position table covers
    max_frames: int  # the most frames it covers
    train_timesteps: int  # steps above this are not a schedule the scheduler can make

    def problems(self, width: int, height: int, frames: int, steps: int) -> list[str]:
        found = []
        if width % self.spatial or height % self.spatial:
            found.append(f"width and height must be multiples of {self.spatial}")
        if (frames - 1) % self.temporal:
            found.append(f"frames must be {self.temporal}k + 1")
        if max(width, height) > self.max_side:
            found.append(f"width and height must be at most {self.max_side}")
        if frames > self.max_frames:
            found.append(f"frames must be at most {self.max_frames}")
        if steps > self.train_timesteps:
            found.append(f"steps must be at most {self.train_timesteps}")
        return found


def model_limits(spec: WanSpec) -> ModelLimits | None:
    """What the checkpoint accepts, read from `transformer/`, `vae/` and `scheduler/` configs; None when they cannot
    be read here (a hub id on an offline machine without it cached): the workers' own checks apply then.

    Why: diffusers' Wan pipelines accept any size and fail deep inside the transformer when its rotary table is too
    short (`shape '[1, 45, 1, -1]' is invalid` for 720p on the tiny model), once per video.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

    from synthesis.tiny_wan import tiny_wan_dir

    source = str(tiny_wan_dir(spec.tiny_kind, spec.seed)) if spec.is_tiny else spec.source
    try:
        transformer = WanTransformer3DModel.load_config(source, subfolder="transformer")
        vae = AutoencoderKLWan.load_config(source, subfolder="vae")
        scheduler = UniPCMultistepScheduler.load_config(source, subfolder="scheduler")
    except (OSError, ValueError):
        return None
    p_t, p_h, _ = transformer.get("patch_size", (1, 2, 2))
    rope = int(transformer.get("rope_max_seq_len", 1024))
    temporal = int(vae.get("scale_factor_temporal") or 4)
    spatial = int(vae.get("scale_factor_spatial") or 8) * p_h
    return ModelLimits(spatial=spatial, temporal=temporal, max_side=rope * spatial,
                       max_frames=(rope * p_t - 1) * temporal + 1,
                       train_timesteps=int(scheduler.get("num_train_timesteps", 1000)))


def resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtypes = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
              "float32": torch.float32, "fp32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; choose auto or one of {sorted(dtypes)}")
    return dtypes[name]


def make_scheduler(base_config, name: str, flow_shift: float):
    """Wan's flow-matching schedulers with the shift diffusers' Wan docs use (5.0 at 720p, 3.0 at 480p)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "unipc":
        return UniPCMultistepScheduler.from_config(base_config, prediction_type="flow_prediction",
                                                   use_flow_sigmas=True, flow_shift=flow_shift)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=base_config.get("num_train_timesteps", 1000),
                                               shift=flow_shift)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def denoisers(pipe) -> list:
    """The pipeline's transformer experts (one for Wan 2.1, two for Wan 2.2 A14B)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def cache_hook_config(cache: CacheConfig, pipe):
    """The diffusers config object for `cache` (None for `none`)."""
    if cache.kind == "none":
        return None
    if cache.kind == "first_block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=cache.threshold)
    if cache.kind == "pab":
        from diffusers import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=cache.skip_range,
            spatial_attention_timestep_skip_range=tuple(cache.timestep_range),
            current_timestep_callback=lambda: pipe.current_timestep,
        )
    from diffusers import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=cache.interval, disable_cache_before_step=cache.warmup_steps)


def apply_cache(pipe, cache: CacheConfig) -> None:
    """Hook every expert (each keeps its own state: a hook config object is not shared between models)."""
    for model in denoisers(pipe):
        hook = cache_hook_config(cache, pipe)
        if hook is not None:
            model.enable_cache(hook)


def load_pipeline(spec: WanSpec, device: str, dtype: str = "auto", cpu_offload: bool = False,
                  scheduler: str = "unipc", flow_shift: float = 5.0, cache: CacheConfig = CacheConfig()):
    """Load the pipeline once (callers cache it per worker), place it, and apply the speed options."""
    import torch
    from diffusers import DiffusionPipeline

    from synthesis.tiny_wan import tiny_wan_dir

    source = str(tiny_wan_dir(spec.tiny_kind, spec.seed)) if spec.is_tiny else spec.source
    main = resolve_dtype(dtype, device)
    with MODEL_LOAD_LOCK:
        pipe = DiffusionPipeline.from_pretrained(
            source, dtype={"default": main, "vae": torch.float32, "image_encoder": torch.float32}
        )
    if type(pipe).__name__ not in PIPELINE_KINDS:
        raise ValueError(f"model {spec.spec!r} loaded as {type(pipe).__name__}; "
                         f"expected one of {sorted(PIPELINE_KINDS)}")
    pipe.scheduler = make_scheduler(pipe.scheduler.config, scheduler, flow_shift)
    apply_cache(pipe, cache)
    if cpu_offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe

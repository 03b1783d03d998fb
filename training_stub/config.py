"""Settings of the training stub: one typed tree (data, model with its TSCM memory, optimiser, loop) and two presets.

`cpu` (the default) is sized so a training step takes about a tenth of a second on two cores and the loss falls
visibly within minutes; `big` is a GPU-sized model for benchmarks and real runs. A YAML file is merged over a preset
(`preset: big` at its top picks the base; default `cpu`), and unknown keys are errors, as everywhere in the project.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training_stub.data import DataConfig
from yume_core.config import ConfigError, from_dict, load_yaml, merge, to_dict
from yume_core.samples import TASKS

MODES = ("tscm", "full", "sliding")


@dataclass(frozen=True)
class TSCMConfig:
    """How the history of earlier latents reaches the current chunk.

    `mode`:
    - `tscm`: temporal-spatial path plus channel path (below).
    - `full`: every history latent at the finest patch in self-attention (tokens grow linearly with the history,
      attention quadratically): the baseline TSCM is measured against.
    - `sliding`: only the last `sliding_window` latents, at the finest patch; older history is forgotten.

    Temporal-spatial path (`tiers`): a latent of age `a` (1 = the newest history latent) is patchified by the first
    tier `(max_age, pt, ph, pw)` with `a <= max_age`; `pt > 1` merges `pt` consecutive latents into one token column.
    Latents older than the last tier's `max_age` leave this path (the channel path still sees them), and with
    `keep_first` the clip's first latent (history[0]) always stays at the finest patch. So the token count grows
    with the history only until `tiers[-1][0]` latents and is constant after: that bound is what makes the per-chunk
    cost flat. The default keeps 32 latents: on an 8x8 latent grid 2x16 + 6x4 + 8x1 + 16/4 = 68 tokens plus 16 for
    the first latent, against 16 per latent (512 for 8 chunks of 4) with full context.

    Channel path: the whole history patchified at `channel_patch` and projected to `channel_dim` channels; each
    block mixes it into the current tokens by linear attention (O(history), cheap), so nothing is forgotten.
    """

    mode: str = "tscm"
    tiers: tuple[tuple[int, int, int, int], ...] = ((2, 1, 2, 2), (8, 1, 4, 4), (16, 1, 8, 8), (32, 4, 8, 8))
    keep_first: bool = True
    channel_patch: tuple[int, int, int] = (8, 4, 4)
    channel_dim: int = 96
    channel_heads: int = 4
    sliding_window: int = 8

    def __post_init__(self):
        # YAML gives lists; keep tuples so configs compare and hash as values
        object.__setattr__(self, "tiers", tuple(tuple(int(v) for v in t) for t in self.tiers))
        object.__setattr__(self, "channel_patch", tuple(int(v) for v in self.channel_patch))
        if self.mode not in MODES:
            raise ConfigError(f"tscm.mode must be one of {MODES}, got {self.mode!r}")
        ages = [int(t[0]) for t in self.tiers]
        if not self.tiers or any(len(t) != 4 for t in self.tiers) or ages != sorted(set(ages)) or ages[0] < 1:
            raise ConfigError(f"tscm.tiers must be (max_age, pt, ph, pw) rows with increasing max_age >= 1, got {self.tiers}")
        if any(min(t[1:]) < 1 for t in self.tiers) or min(self.channel_patch) < 1 or len(self.channel_patch) != 3:
            raise ConfigError("tscm patch sizes must be positive")
        if self.channel_dim % self.channel_heads:
            raise ConfigError(f"tscm.channel_dim {self.channel_dim} must be divisible by channel_heads {self.channel_heads}")
        if self.sliding_window < 1:
            raise ConfigError("tscm.sliding_window must be at least 1 latent")


@dataclass(frozen=True)
class ModelConfig:
    """A DiT over latent chunks: `patch` is the current chunk's (and the finest history) patch size; `text_dim` is
    the text encoder's width (0: taken from the action cache when training starts, then stored with the model)."""

    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    patch: tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 0
    tscm: TSCMConfig = field(default_factory=TSCMConfig)

    def __post_init__(self):
        object.__setattr__(self, "patch", tuple(int(v) for v in self.patch))
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ConfigError(f"model.width {self.width} must split into {self.heads} heads of even size")
        if len(self.patch) != 3 or self.patch[0] != 1:
            raise ConfigError(f"model.patch must be (1, ph, pw) (one latent per token column), got {self.patch}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 50
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """`steps` counts optimiser steps, each over `batch_size * grad_accum` windows.

    `autocast`: `auto` uses bf16 autocast on CUDA and none on CPU (CPU bf16 matmuls are slower than fp32 on most
    CPUs without AMX, and the CPU preset is small enough for fp32), `bf16` forces it, `off` disables it.
    `timesteps`: `logit_normal` (SD3's choice: most samples at mid noise, where the velocity is hardest) or `uniform`.
    `text_dropout`: probability of dropping a window's text (event + action) for classifier-free guidance.
    `schedule`: the task of each step, cycled (Yume-1.5 alternates T2V and I2V): step s trains
    `schedule[s % len(schedule)]`. A T2V step conditions on text (and the history of a continuing chunk) only: a
    clip's first chunk is generated together with its first frame, from noise. An I2V step keeps the first frame
    clean as the condition (history at timestep 0, outside the loss).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    autocast: str = "auto"
    timesteps: str = "logit_normal"
    text_encoder: str = "tiny-random"
    text_max_length: int = 64
    text_dropout: float = 0.1
    sample_steps: int = 4
    log_every: int = 10
    checkpoint_every: int = 250
    seed: int = 0
    schedule: tuple[str, ...] = ("t2v", "i2v")

    def __post_init__(self):
        schedule = self.schedule.replace("/", ",").split(",") if isinstance(self.schedule, str) else self.schedule
        object.__setattr__(self, "schedule", tuple(str(t).strip() for t in schedule if str(t).strip()))
        if not self.schedule or set(self.schedule) - set(TASKS):
            raise ConfigError(f"schedule must be a non-empty list of {list(TASKS)}, got {list(self.schedule)}")
        if self.autocast not in ("auto", "bf16", "off"):
            raise ConfigError(f"autocast must be auto, bf16 or off, got {self.autocast!r}")
        if self.timesteps not in ("logit_normal", "uniform"):
            raise ConfigError(f"timesteps must be logit_normal or uniform, got {self.timesteps!r}")
        if min(self.steps, self.batch_size, self.grad_accum, self.sample_steps, self.log_every) < 1:
            raise ConfigError("steps, batch_size, grad_accum, sample_steps and log_every must be at least 1")


# Sizes are chosen for the latent grid: 32x32 px at patch 4 is an 8x8 grid of 48 channels, so a latent is 16 tokens
# at (1,2,2), 4 at (1,4,4) and 1 at (1,8,8); chunks of 4 latents (16 frames) keep a CPU step (batch 8) near 0.2 s.
# `big` (GPU): a 32x56 grid (448 tokens per latent at (1,2,2)), Yume-1.5's 8-latent chunks, a 768-wide 12-block DiT;
# its tiers keep 56 latents (7 chunks) in self-attention: 2688 history tokens, against 448 per latent at full context.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "data": {"latents": {"height": 32, "width": 32, "patch": 4}, "chunk_latents": 4, "max_history_chunks": 8},
    },
    "big": {
        "data": {"latents": {"height": 128, "width": 224, "patch": 4}, "chunk_latents": 8, "max_history_chunks": 8},
        "model": {
            "width": 768, "depth": 12, "heads": 12,
            "tscm": {"tiers": [[2, 1, 2, 2], [8, 1, 4, 4], [24, 1, 8, 8], [56, 4, 8, 8]], "sliding_window": 16},
        },
        "batch_size": 4,
        "grad_accum": 4,
        "steps": 20000,
        "checkpoint_every": 1000,
    },
}


def config_dict(name_or_path: str | Path | None = None) -> dict:
    """The settings mapping of a preset name or a YAML file merged over its `preset` (default `cpu`)."""
    if name_or_path is None:
        name_or_path = "cpu"
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        return merge({}, PRESETS[name_or_path])
    data = load_yaml(name_or_path)
    base = data.pop("preset", "cpu")
    if base not in PRESETS:
        raise ConfigError(f"{name_or_path}: unknown preset {base!r}; known: {sorted(PRESETS)}")
    return merge(PRESETS[base], data)


def load_config(name_or_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A preset name (`cpu`, `big`) or a YAML file, plus overrides (None values ignored)."""
    return from_dict(TrainConfig, merge(config_dict(name_or_path), overrides or {}), "train")


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a config stored with a checkpoint (`config_to_dict`)."""
    return from_dict(TrainConfig, data, "train")


def config_to_dict(config: TrainConfig) -> dict:
    return _lists(to_dict(config))


def _lists(obj):
    # tuples -> lists so the dict is plain JSON and round-trips through from_dict
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def with_mode(config: TrainConfig, mode: str) -> TrainConfig:
    """The same config with the history memory switched to `mode` (weights are shared by all modes)."""
    tscm = dataclasses.replace(config.model.tscm, mode=mode)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, tscm=tscm))


__all__ = [
    "MODES", "PRESETS", "ModelConfig", "OptimConfig", "TSCMConfig", "TrainConfig",
    "config_dict", "config_from_dict", "config_to_dict", "load_config", "with_mode",
]

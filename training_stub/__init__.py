"""A small but faithful TSCM video world model that trains on the shards, and the inference check that shows
TSCM's promise: a per-chunk cost that stops growing with history.

    loader = WindowLoader("out/shards", DataConfig())          # streaming windows: history + chunk + actions + text
    embed_actions("actions.safetensors")                       # the fixed action phrases, encoded once
    train("out/shards", load_config("cpu"), "run/")            # rectified flow, checkpoints, loss plot
    report = run_check(*load_trained("run/"), ...)             # TSCM vs full context vs sliding window

Frames live in a fixed latent space (`LatentSpace`: resize + pixel-unshuffle, Wan-style causal time axis) so the
whole loop runs on a CPU; the `big` preset is for a GPU.
"""

from training_stub.config import MODES, PRESETS, ModelConfig, OptimConfig, TrainConfig, TSCMConfig, load_config
from training_stub.data import DataConfig, WindowLoader
from training_stub.flow_matching import euler_sample, velocity_loss
from training_stub.infer_check import judge, load_trained, rollout, run_check
from training_stub.latents import LatentSpace
from training_stub.model import WorldDiT
from training_stub.text import ActionCache, EventTextCache, TextEncoder, embed_actions
from training_stub.train import TextSide, Trainer, train
from training_stub.tscm import ChannelFusion, HistoryEncoder, PatchEmbed, plan, token_counts

__all__ = [
    "MODES",
    "PRESETS",
    "ActionCache",
    "ChannelFusion",
    "DataConfig",
    "EventTextCache",
    "HistoryEncoder",
    "LatentSpace",
    "ModelConfig",
    "OptimConfig",
    "PatchEmbed",
    "TSCMConfig",
    "TextEncoder",
    "TextSide",
    "TrainConfig",
    "Trainer",
    "WindowLoader",
    "WorldDiT",
    "embed_actions",
    "euler_sample",
    "judge",
    "load_config",
    "load_trained",
    "plan",
    "rollout",
    "run_check",
    "token_counts",
    "train",
    "velocity_loss",
]

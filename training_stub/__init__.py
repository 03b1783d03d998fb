"""A small but faithful TSCM video world model that trains on the mixture of sets, and the inference check that
shows TSCM's promise (a per-chunk cost that stops growing with history) in both tasks.

    loader = WindowLoader("out/real_world", DataConfig(), task="i2v")  # windows: history + chunk + actions + texts
    embed_actions("actions.safetensors")                               # the fixed action phrases, encoded once
    train(None, load_config("cpu"), "run/", mixture="out/mixture.yaml")  # T2V/I2V alternating, metrics, loss plot
    report = run_check(model, start, contexts, "run/check", ...)       # both tasks; TSCM vs full vs sliding

Frames live in a fixed latent space (`LatentSpace`: resize + pixel-unshuffle, Wan-style causal time axis) so the
whole loop runs on a CPU; the `big` preset is for a GPU.
"""

from training_stub.config import MODES, PRESETS, ModelConfig, OptimConfig, TrainConfig, TSCMConfig, load_config
from training_stub.data import DataConfig, WindowLoader
from training_stub.flow_matching import euler_sample, velocity_loss
from training_stub.infer_check import check_checkpoint, judge, load_trained, rollout, run_check
from training_stub.latents import LatentSpace
from training_stub.mixture import Draw, MixtureWindows, StreamWindows
from training_stub.model import WorldDiT
from training_stub.text import ActionCache, EventTextCache, TextEncoder, embed_actions
from training_stub.train import METRICS_LOG, TextSide, Trainer, read_metrics, train
from training_stub.tscm import ChannelFusion, HistoryEncoder, PatchEmbed, plan, token_counts

__all__ = [
    "METRICS_LOG",
    "MODES",
    "PRESETS",
    "ActionCache",
    "ChannelFusion",
    "check_checkpoint",
    "DataConfig",
    "Draw",
    "EventTextCache",
    "HistoryEncoder",
    "LatentSpace",
    "MixtureWindows",
    "ModelConfig",
    "OptimConfig",
    "PatchEmbed",
    "StreamWindows",
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
    "read_metrics",
    "rollout",
    "run_check",
    "token_counts",
    "train",
    "velocity_loss",
]

"""The training loop: windows from shards -> rectified-flow loss on the current chunk given history and text.

AdamW with linear warm-up, optional bf16 autocast, gradient accumulation, checkpoints every `checkpoint_every`
steps (and at the end) with resume, and a loss log (`loss.jsonl`, one line per step) with its plot (`loss.png`).
Every random draw of a step (timesteps, noise, text dropout) comes from one generator saved in the checkpoint, so a
resumed run takes the same next step as an uninterrupted one whenever the loader resumes at the exact data position.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from training_stub import checkpoint as ckpt
from training_stub.config import TrainConfig, config_from_dict, config_to_dict
from training_stub.flow_matching import noisy, sample_timesteps, velocity_loss
from training_stub.model import WorldDiT, count_parameters
from yume_core.figures import agg_figure, save_png
from yume_core.storage import atomic_write_text

LOSS_LOG, LOSS_PLOT, ACTION_CACHE = "loss.jsonl", "loss.png", "action_cache.safetensors"


@dataclass
class Batch:
    histories: list[torch.Tensor]  # [T_h, C, h, w] each, T_h may differ (and be 0)
    chunk_starts: list[int]  # latent index of each chunk's first latent in its clip (latent 0 is the first frame)
    chunk: torch.Tensor  # [B, T, C, h, w], shorter chunks padded at the end
    chunk_mask: torch.Tensor | None  # [B, T] True = real latent; None when no chunk was padded
    contexts: list[torch.Tensor]  # [L_i, text_dim] event text tokens then action tokens


class TextSide:
    """The text each window is conditioned on: its event caption (encoded on demand, cached) followed by the tokens
    of its action phrases (precomputed, cached on disk)."""

    def __init__(self, encoder_spec: str, max_length: int, action_cache: str | Path, device: str = "cpu"):
        from training_stub.text import ActionCache, EventTextCache, TextEncoder

        self.actions = ActionCache.load(action_cache)
        self.encoder = TextEncoder(encoder_spec, max_length=max_length, device=device)
        if self.encoder.dim != self.actions.dim:
            raise ValueError(
                f"action cache {action_cache} holds {self.actions.dim}-wide embeddings but text encoder {encoder_spec!r} "
                f"is {self.encoder.dim} wide; rebuild the cache with the same encoder"
            )
        self.events = EventTextCache(self.encoder)
        self.dim = self.encoder.dim

    def context(self, text: str, phrases: Sequence[str]) -> torch.Tensor:
        parts = [self.events.get(text)] if text else []
        parts += [self.actions.get(p) for p in phrases]
        if not parts:
            return torch.zeros(0, self.dim)
        return torch.cat([p.float().cpu() for p in parts])


def ensure_action_cache(path: str | Path | None, output: str | Path, encoder_spec: str) -> Path:
    """The given cache, or `output/action_cache.safetensors`, computed with `encoder_spec` when absent."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"action cache {path} not found; omit --action-cache to compute one")
        return Path(path)
    path = Path(output) / ACTION_CACHE
    if not path.is_file():
        from training_stub.text import embed_actions

        path.parent.mkdir(parents=True, exist_ok=True)
        embed_actions(path, encoder_spec=encoder_spec)
    return path


def collate(windows: Sequence[dict], contexts: Sequence[torch.Tensor], chunk_latents: int) -> Batch:
    lengths = [w["chunk"].shape[0] for w in windows]
    chunk = torch.nn.utils.rnn.pad_sequence([w["chunk"].float() for w in windows], batch_first=True)
    mask = None
    if len(set(lengths)) > 1:
        mask = torch.arange(chunk.shape[1])[None] < torch.tensor(lengths)[:, None]
    return Batch(
        histories=[w["history"].float() for w in windows],
        chunk_starts=[int(w["chunk_start"]) if "chunk_start" in w else 1 + int(w["chunk_index"]) * chunk_latents
                      for w in windows],
        chunk=chunk,
        chunk_mask=mask,
        contexts=list(contexts),
    )


def autocast_for(config: TrainConfig, device: torch.device):
    enabled = config.autocast == "bf16" or (config.autocast == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(config: TrainConfig, text_dim: int) -> WorldDiT:
    """The model of `config`, its initial weights drawn from `config.seed` (without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return WorldDiT(config.model, config.data.latents.channels, text_dim)


class Trainer:
    """Model, optimiser, step counter and the step's random generator: everything a checkpoint restores."""

    def __init__(self, config: TrainConfig, text_dim: int, device: str | torch.device = "cpu"):
        self.config = dataclasses.replace(config, model=dataclasses.replace(config.model, text_dim=text_dim))
        self.device = torch.device(device)
        self.model = build_model(self.config, text_dim).to(self.device)
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=tuple(o.betas),
                                           weight_decay=o.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    def loss(self, batch: Batch) -> torch.Tensor:
        """Rectified-flow loss of one batch (timesteps, noise and text dropout drawn from the generator)."""
        cfg, dev = self.config, self.device
        b = batch.chunk.shape[0]
        t = sample_timesteps(b, cfg.timesteps, self.generator)
        noise = torch.randn(batch.chunk.shape, generator=self.generator)
        drop = torch.rand(b, generator=self.generator) < cfg.text_dropout
        x0, noise, t = batch.chunk.to(dev), noise.to(dev), t.to(dev)
        mask = None if batch.chunk_mask is None else batch.chunk_mask.to(dev)
        with autocast_for(cfg, dev):
            history = self.model.encode_history([h.to(dev) for h in batch.histories], batch.chunk_starts)
            context, context_mask = self.model.encode_text([c.to(dev) for c in batch.contexts], drop)
            pred = self.model(noisy(x0, noise, t), t, history, context, context_mask, mask)
        return velocity_loss(pred, x0, noise, mask)

    def lr(self) -> float:
        o = self.config.optim
        return o.lr * min(1.0, (self.step + 1) / max(1, o.warmup_steps))

    def train_step(self, batches: Sequence[Batch]) -> float:
        """One optimiser step over `batches` (gradient accumulation); returns the mean loss."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        total = 0.0
        for batch in batches:
            loss = self.loss(batch)
            (loss / len(batches)).backward()
            total += float(loss.detach())
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total / len(batches)

    def save(self, output: str | Path, data_state: dict, extra: dict | None = None) -> Path:
        state = {
            "config": config_to_dict(self.config),
            "data": data_state,
            "generator": ckpt.generator_state(self.generator),
            **(extra or {}),
        }
        return ckpt.save_checkpoint(output, self.step, self.model, self.optimizer, state)

    def restore(self, folder: str | Path) -> dict:
        """Load a checkpoint written by `save`; returns its state (with the data position under `data`)."""
        state = ckpt.read_state(folder)
        ckpt.load_model_weights(self.model, folder)
        ckpt.load_optimizer(self.optimizer, Path(folder) / ckpt.OPTIMIZER_FILE)
        ckpt.restore_generator(self.generator, state["generator"])
        self.step = int(state["step"])
        return state


def batches(windows: Iterable[dict], text: TextSide, config: TrainConfig) -> Iterator[Batch]:
    """Consecutive windows grouped `batch_size` at a time (the loader shuffles); a last partial batch is kept."""
    pending: list[dict] = []
    for window in windows:
        pending.append(window)
        if len(pending) == config.batch_size:
            yield _batch(pending, text, config)
            pending = []
    if pending:
        yield _batch(pending, text, config)


def _batch(windows: list[dict], text: TextSide, config: TrainConfig) -> Batch:
    contexts = [text.context(w.get("text") or "", w.get("actions") or []) for w in windows]
    return collate(windows, contexts, config.data.chunk_latents)


def train(shards: str | Path | None, config: TrainConfig, output: str | Path, steps: int | None = None,
          resume: bool = True, action_cache: str | Path | None = None, device: str = "auto",
          windows=None, log: Callable[[str], None] = print) -> dict:
    """Train until `steps` (default `config.steps`) optimiser steps; returns a summary.

    `windows`: an iterable of window dicts with `state_dict`/`load_state_dict` (default: a `WindowLoader` over
    `shards`). With `resume`, a checkpoint under `output` is continued: weights, optimiser, step, RNG and data
    position; the config stored with it wins over `config` except for `steps`.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    folder = ckpt.resolve(output) if resume else None
    if folder is not None:
        config = dataclasses.replace(config_from_dict(ckpt.read_state(folder)["config"]), steps=config.steps)
    total_steps = steps if steps is not None else config.steps
    dev = resolve_device(device)
    cache_path = ensure_action_cache(action_cache, output, config.text_encoder)
    text = TextSide(config.text_encoder, config.text_max_length, cache_path)
    trainer = Trainer(config, text.dim, dev)
    if windows is None:
        from training_stub.data import WindowLoader

        windows = WindowLoader(shards, config.data)
    log_rows: list[dict] = []
    if folder is not None:
        state = trainer.restore(folder)
        windows.load_state_dict(state["data"])
        log_rows = [r for r in read_loss_log(output / LOSS_LOG) if r["step"] <= trainer.step]
        log(f"resumed from {folder} at step {trainer.step}")
    log(f"model: {count_parameters(trainer.model) / 1e6:.2f}M parameters, mode {config.model.tscm.mode}, "
        f"device {dev}, batch {config.batch_size} x {config.grad_accum}")
    extra = {"action_cache": _relative(cache_path, output), "shards": None if shards is None else str(shards)}
    rows = _run(trainer, windows, text, config, output, total_steps, log_rows, extra, log)
    folder = trainer.save(output, windows.state_dict(), extra)
    write_loss_log(output / LOSS_LOG, rows)
    plot_loss(rows, output / LOSS_PLOT)
    return summarize(rows, trainer.step, folder)


def _run(trainer, windows, text, config, output, total_steps, rows, extra, log) -> list[dict]:
    stream = batches(windows, text, config)
    start, last_log = time.perf_counter(), time.perf_counter()
    offset = rows[-1]["elapsed_s"] if rows else 0.0
    while trainer.step < total_steps:
        group = [b for _, b in zip(range(config.grad_accum), stream)]
        if not group:
            log("the data ran out before the last step")
            break
        loss = trainer.train_step(group)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {trainer.step}; lower optim.lr or check the data")
        rows.append({"step": trainer.step, "loss": round(loss, 6), "lr": trainer.lr(),
                     "windows": sum(b.chunk.shape[0] for b in group),
                     "elapsed_s": round(offset + time.perf_counter() - start, 3)})
        if trainer.step % config.log_every == 0 or trainer.step == total_steps:
            recent = [r["loss"] for r in rows[-config.log_every:]]
            rate = config.log_every / max(time.perf_counter() - last_log, 1e-9)
            log(f"step {trainer.step}/{total_steps} loss {sum(recent) / len(recent):.4f} ({rate:.1f} steps/s)")
            last_log = time.perf_counter()
        if config.checkpoint_every and trainer.step % config.checkpoint_every == 0 and trainer.step < total_steps:
            trainer.save(output, windows.state_dict(), extra)
            write_loss_log(output / LOSS_LOG, rows)
    return rows


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def summarize(rows: list[dict], step: int, folder: Path, window: int = 50) -> dict:
    """First and last `window`-step mean losses: a single step's loss is noisy (its timestep is random)."""
    losses = [r["loss"] for r in rows]
    n = min(window, max(1, len(losses) // 2))
    return {
        "steps": step,
        "checkpoint": str(folder),
        "loss_start": sum(losses[:n]) / n if losses else None,
        "loss_end": sum(losses[-n:]) / n if losses else None,
        "mean_over_steps": n,
        "elapsed_s": rows[-1]["elapsed_s"] if rows else 0.0,
    }


def read_loss_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_loss_log(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def plot_loss(rows: list[dict], path: str | Path, smooth: int = 25) -> Path | None:
    """Per-step loss (faint) and its running mean over `smooth` steps."""
    if not rows:
        return None
    import numpy as np

    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    k = max(1, min(smooth, len(loss)))
    mean = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig = agg_figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(steps, loss, alpha=0.3, lw=0.8, label="loss per step")
    ax.plot(steps[k - 1 :], mean, lw=2, label=f"mean of {k} steps")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("rectified-flow loss (velocity MSE)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)

"""The training loop: the step's task and windows from the mixture -> rectified-flow loss on the chunk given history
and text.

Each step trains one task (`TrainConfig.schedule`, T2V and I2V alternating by default) on windows drawn from the
mixture's sets (`training_stub.mixture`). The two tasks see a window differently:

- I2V: the clip's first frame is the condition. It is the first latent of the window's history, which enters the
  model clean at timestep 0 and is not in the loss; the chunk is noised and predicted.
- T2V: text only. A clip's first chunk has no history to continue, so its first frame is generated with it: the
  latent joins the chunk (1 + chunk_latents latents, all noised, all in the loss) and the history is empty. A later
  chunk continues a video that exists by then (a T2V rollout generated its first frame), so its history is kept.

So the model tells the tasks apart by what it is given (a clean start latent or none), with no flag to learn, and an
inference rollout of either task is the same code with or without a start frame (`infer_check.rollout`). Each task
trains on its own event text (`texts[task]`: Sekai's scene caption for T2V and the event caption for I2V on
real-world clips); the action phrases follow it, none for sets without labels.

AdamW with linear warm-up, optional bf16 autocast, gradient accumulation, checkpoints every `checkpoint_every`
steps (and at the end) with resume, a per-step log (`metrics.jsonl`: step, task, loss, the sets of the step's
windows and the loss per set, learning rate, windows, the step's seconds, of which `draw_s` went to deciding the
task and sets and `load_s` to waiting on the data streams) and its plot (`loss.png`, a curve per task). Every
random draw of a step (timesteps, noise, text dropout) comes from one generator saved in the checkpoint, the
sampler's draws are a function of (seed, step) and every stream's position is exact, so a resumed run takes the
same next step as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training_stub import checkpoint as ckpt
from training_stub.config import TrainConfig, config_from_dict, config_to_dict
from training_stub.flow_matching import noisy, sample_timesteps, velocity_loss
from training_stub.model import WorldDiT, count_parameters
from yume_core.figures import agg_figure, save_png
from yume_core.storage import atomic_write_text

METRICS_LOG, LOSS_PLOT, ACTION_CACHE = "metrics.jsonl", "loss.png", "action_cache.safetensors"


@dataclass
class Batch:
    histories: list[torch.Tensor]  # [T_h, C, h, w] each, T_h may differ (and be 0)
    chunk_starts: list[int]  # latent index of each chunk's first latent in its clip (latent 0 is the first frame)
    chunk: torch.Tensor  # [B, T, C, h, w], shorter chunks padded at the end
    chunk_mask: torch.Tensor | None  # [B, T] True = real latent; None when no chunk was padded
    contexts: list[torch.Tensor]  # [L_i, text_dim] event text tokens then action tokens
    task: str | None = None  # the task the batch trains (None: windows as they are)
    sets: list[str] = field(default_factory=list)  # the set of each window, when known


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


def task_window(window: dict, task: str | None) -> dict:
    """The window as `task` trains it (see the module docstring): for T2V, a clip's first chunk takes its first
    latent out of the history (clean condition) into the chunk (generated); any other window is unchanged."""
    history = window["history"]
    chunk_latents = window["chunk"].shape[0]
    start = int(window["chunk_start"]) if "chunk_start" in window else 1 + int(window["chunk_index"]) * chunk_latents
    if task != "t2v" or start != 1 or history.shape[0] != 1:
        return window
    return {**window, "history": history[:0], "chunk": torch.cat([history, window["chunk"]]), "chunk_start": 0}


def task_text(window: dict, task: str | None) -> str:
    """The event text `task` trains on (`texts[task]`), else the window's single `text`."""
    texts = window.get("texts")
    if task is not None and isinstance(texts, dict) and texts.get(task):
        return texts[task]
    return window.get("text") or ""


def collate(windows: Sequence[dict], contexts: Sequence[torch.Tensor], chunk_latents: int, task: str | None = None,
            sets: Sequence[str] | None = None) -> Batch:
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
        task=task,
        sets=list(sets) if sets is not None else [w.get("set", "windows") for w in windows],
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
        self.sample_losses: list[float] = []  # per window of the last `train_step`, in order (for per-set figures)

    def loss(self, batch: Batch) -> torch.Tensor:
        """Rectified-flow loss of one batch (timesteps, noise and text dropout drawn from the generator); the loss
        of each window is appended to `sample_losses`."""
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
        loss, per_sample = velocity_loss(pred, x0, noise, mask, per_sample=True)
        self.sample_losses.extend(per_sample.detach().cpu().tolist())
        return loss

    def lr(self) -> float:
        o = self.config.optim
        return o.lr * min(1.0, (self.step + 1) / max(1, o.warmup_steps))

    def train_step(self, batches: Sequence[Batch]) -> float:
        """One optimiser step over `batches` (gradient accumulation); returns the mean loss."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        self.sample_losses = []
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


def batches(windows: Iterable[dict], text: TextSide, config: TrainConfig, task: str | None = None) -> Iterator[Batch]:
    """Consecutive windows grouped `batch_size` at a time (the loader shuffles); a last partial batch is kept.
    `task`: build them as that task trains them (None: as they are, on their `text`)."""
    pending: list[dict] = []
    for window in windows:
        pending.append(window)
        if len(pending) == config.batch_size:
            yield _batch(pending, text, config, task)
            pending = []
    if pending:
        yield _batch(pending, text, config, task)


def _batch(windows: list[dict], text: TextSide, config: TrainConfig, task: str | None = None,
           sets: Sequence[str] | None = None) -> Batch:
    windows = [task_window(w, task) for w in windows]
    contexts = [text.context(task_text(w, task), w.get("actions") or []) for w in windows]
    return collate(windows, contexts, config.data.chunk_latents, task, sets)


def open_data(config: TrainConfig, shards=None, mixture=None, windows=None, log: Callable[[str], None] = print):
    """Where a run's steps get their data: `windows` (an iterable with `state_dict`/`load_state_dict`), a mixture
    file, or shards (a folder, a pattern or URLs; a path ending in .yaml is taken for a mixture)."""
    from training_stub.mixture import MixtureWindows, StreamWindows, is_mixture_file

    if windows is not None:
        return StreamWindows(windows, config.schedule)
    if mixture is not None and shards is not None:
        raise ValueError("give shards or a mixture, not both")
    if mixture is None and is_mixture_file(shards):
        shards, mixture = None, shards
    if mixture is not None:
        from yume_core import remote

        if not (remote.exists(str(mixture)) if remote.is_url(str(mixture)) else Path(mixture).is_file()):
            raise FileNotFoundError(f"{mixture}: no mixture file here (`yume-data build` writes OUT/mixture.yaml)")
        return MixtureWindows.open(mixture, config.data, config.schedule, config.seed, log=log)
    if shards is None:
        raise ValueError("nothing to train on: give shards, a mixture or windows")
    return MixtureWindows.open(shards, config.data, config.schedule, config.seed, log=log)


def train(shards: str | Path | None, config: TrainConfig, output: str | Path, steps: int | None = None,
          resume: bool = True, action_cache: str | Path | None = None, device: str = "auto",
          windows=None, log: Callable[[str], None] = print, mixture: str | Path | None = None) -> dict:
    """Train until `steps` (default `config.steps`) optimiser steps; returns a summary.

    Data: `mixture` (an Energon metadataset such as `OUT/mixture.yaml`; `shards` may name it too when it ends in
    .yaml), else `shards` (one set: a folder, a brace pattern or URLs), else `windows` (an iterable of window dicts
    with `state_dict`/`load_state_dict`). With `resume`, a checkpoint under `output` is continued: weights,
    optimiser, step, RNG, the sampler and every stream's position; the config stored with it wins over `config`
    except for `steps`.
    """
    from training_stub.mixture import is_mixture_file

    if mixture is None and is_mixture_file(shards):
        shards, mixture = None, shards
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    folder = ckpt.resolve(output) if resume else None
    if folder is not None:
        config = dataclasses.replace(config_from_dict(ckpt.read_state(folder)["config"]), steps=config.steps)
    total_steps = steps if steps is not None else config.steps
    data = open_data(config, shards, mixture, windows, log)  # first: a wrong path fails before any model loads
    dev = resolve_device(device)
    cache_path = ensure_action_cache(action_cache, output, config.text_encoder)
    text = TextSide(config.text_encoder, config.text_max_length, cache_path)
    trainer = Trainer(config, text.dim, dev)
    rows: list[dict] = []
    if folder is not None:
        state = trainer.restore(folder)
        data.load_state_dict(state["data"], log=log)
        rows = [r for r in read_metrics(output / METRICS_LOG) if r["step"] <= trainer.step]
        log(f"resumed from {folder} at step {trainer.step}")
    write_metrics(output / METRICS_LOG, rows)  # drops steps after the checkpoint; each new step is appended
    log(f"model: {count_parameters(trainer.model) / 1e6:.2f}M parameters, mode {config.model.tscm.mode}, "
        f"device {dev}, batch {config.batch_size} x {config.grad_accum}, tasks {'/'.join(data.schedule)}")
    sets = getattr(data, "describe", lambda: [])()
    for s in sets:
        log(f"set {s['set']}: weight {s['weight']:g}, trains {'+'.join(s['tasks']) or 'nothing'} ({s['path']})")
    i2v = next((s["path"] for s in sets if "i2v" in s["tasks"]), None)
    extra = {"action_cache": _relative(cache_path, output),
             "shards": i2v or (None if shards is None or isinstance(shards, (list, tuple)) else str(shards)),
             "mixture": None if mixture is None else str(mixture), "sets": sets}
    rows = _run(trainer, data, text, config, output, total_steps, rows, extra, log)
    folder = trainer.save(output, data.state_dict(), extra)
    write_metrics(output / METRICS_LOG, rows)
    plot_loss(rows, output / LOSS_PLOT)
    summary = summarize(rows, trainer.step, folder)
    if hasattr(data, "requested"):
        summary["requested"] = data.requested()
        summary["expected"] = data.expected()
        summary["sets"] = sets
    summary["notes"] = list(getattr(data, "notes", []))
    return summary


def _run(trainer, data, text, config, output, total_steps, rows, extra, log) -> list[dict]:
    n, size = config.batch_size * config.grad_accum, config.batch_size
    start = last_log = time.perf_counter()
    last_step = trainer.step
    offset = rows[-1]["elapsed_s"] if rows else 0.0
    with open(output / METRICS_LOG, "a", encoding="utf-8") as metrics:
        while trainer.step < total_steps:
            t0 = time.perf_counter()
            draw = data.step(trainer.step, n)
            if not draw.windows:
                log("the data ran out before the last step")
                break
            group = [_batch(draw.windows[i : i + size], text, config, draw.task, draw.sets[i : i + size])
                     for i in range(0, len(draw.windows), size)]
            lr = trainer.lr()
            loss = trainer.train_step(group)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {trainer.step} ({draw.task}); lower optim.lr "
                                         "or check the data")
            by_set: dict[str, list[float]] = defaultdict(list)
            for name, value in zip(draw.sets, trainer.sample_losses):
                by_set[name].append(value)
            now = time.perf_counter()
            row = {"step": trainer.step, "task": draw.task, "loss": round(loss, 6),
                   "sets": dict(sorted(Counter(draw.sets).items())),
                   "loss_by_set": {k: round(sum(v) / len(v), 6) for k, v in sorted(by_set.items())},
                   "lr": lr, "windows": len(draw.windows), "seconds": round(now - t0, 4),
                   "draw_s": round(draw.draw_s, 6), "load_s": round(draw.load_s, 4),
                   "elapsed_s": round(offset + now - start, 3)}
            rows.append(row)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            if trainer.step % config.log_every == 0 or trainer.step == total_steps:
                recent = rows[-config.log_every:]
                per_task = defaultdict(list)
                for r in recent:
                    per_task[r.get("task", "-")].append(r["loss"])
                tasks = ", ".join(f"{t} {sum(v) / len(v):.4f}" for t, v in sorted(per_task.items()))
                rate = (trainer.step - last_step) / max(now - last_log, 1e-9)
                log(f"step {trainer.step}/{total_steps} loss {sum(r['loss'] for r in recent) / len(recent):.4f} "
                    f"({tasks}; {rate:.1f} steps/s)")
                last_log, last_step = now, trainer.step
            if config.checkpoint_every and trainer.step % config.checkpoint_every == 0 and trainer.step < total_steps:
                trainer.save(output, data.state_dict(), extra)
    return rows


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _means(losses: list[float], window: int) -> tuple[float | None, float | None, int]:
    n = min(window, max(1, len(losses) // 2))
    if not losses:
        return None, None, n
    return sum(losses[:n]) / n, sum(losses[-n:]) / n, n


def summarize(rows: list[dict], step: int, folder: Path, window: int = 50) -> dict:
    """First and last `window`-step mean losses, overall and per task (a single step's loss is noisy: its timestep
    is random), and the windows each set and task got."""
    start, end, n = _means([r["loss"] for r in rows], window)
    by_task: dict[str, list[float]] = defaultdict(list)
    sets, tasks = Counter(), Counter()
    for r in rows:
        task = r.get("task", "-")
        by_task[task].append(r["loss"])
        sets.update(r.get("sets") or {})
        tasks[task] += r.get("windows", 0)
    total = sum(sets.values())
    per_task = {}
    for task, losses in sorted(by_task.items()):
        a, b, m = _means(losses, window)
        per_task[task] = {"steps": len(losses), "loss_start": a, "loss_end": b, "mean_over_steps": m}
    return {
        "steps": step,
        "checkpoint": str(folder),
        "loss_start": start,
        "loss_end": end,
        "mean_over_steps": n,
        "elapsed_s": rows[-1]["elapsed_s"] if rows else 0.0,
        "tasks": per_task,
        "windows_by_set": dict(sorted(sets.items())),
        "windows_by_task": dict(sorted(tasks.items())),
        "realized": {k: v / total for k, v in sorted(sets.items())} if total else {},
    }


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a `metrics.jsonl` (a last line cut short by a killed run is left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def write_metrics(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def plot_loss(rows: list[dict], path: str | Path, smooth: int = 25) -> Path | None:
    """Per-step loss (faint) and its trailing mean over `smooth` steps, one colour per task."""
    if not rows:
        return None
    import numpy as np

    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r.get("task") or "loss"].append(r)
    fig = agg_figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, (task, part) in enumerate(sorted(groups.items())):
        color = f"C{i}"
        steps = np.array([r["step"] for r in part])
        loss = np.array([r["loss"] for r in part], dtype=np.float64)
        k = max(1, min(smooth, len(loss)))
        csum = np.concatenate([[0.0], np.cumsum(loss)])
        idx = np.arange(1, len(loss) + 1)
        mean = (csum[idx] - csum[np.maximum(0, idx - k)]) / np.minimum(idx, k)  # trailing mean, shorter at the start
        ax.plot(steps, loss, color=color, alpha=0.25, lw=0.8)
        ax.plot(steps, mean, color=color, lw=2, label=f"{task} (mean of the last {k} of its steps)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("rectified-flow loss (velocity MSE)")
    ax.set_title("training loss per task" if len(groups) > 1 else "training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)

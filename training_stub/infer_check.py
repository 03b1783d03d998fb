"""Inference check: roll a trained model out chunk by chunk, in both tasks, and show that TSCM's cost per chunk stops
growing.

Both tasks the model trains are rolled out. I2V starts from a start frame: chunk k is sampled (a few Euler steps)
conditioned on the start latent and every chunk generated before it. T2V starts from text alone: the first chunk is
generated together with its first frame from noise (no history), and every later chunk continues what was generated,
as in training (`training_stub.train`). For each task, each history mode (`tscm`, `full`, `sliding`) generates K
chunks autoregressively from the same action sequence. Per chunk we record wall time, a robust time, the history's
token counts and peak memory; each task's TSCM rollout is decoded and written as a video; the curves go to
`infer_check.json` and `infer_check.png`. A task passes when its rollouts stay finite and its timings pass the
verdict below; the check passes when every task does.

The verdict compares the window's first and last chunk (`first`, `last`; chunks 8 and 32 by default), in each
mode, on two counts:
- tokens: TSCM's self-attended history may grow by at most `tolerance` (15%) from chunk `first` to `last` (it is
  bounded by the tiers: 83 -> 84 tokens on the `cpu` preset); exact, so no load can blur it.
- time per sampling step, the cost the paper says stays constant: after the rollout, one sampling step of chunk
  `first` and one of chunk `last` are timed back to back, `paired` times (15), alternating which goes first; the
  ratio is the median over those pairs of last / first. Both steps of a pair run within milliseconds of each other,
  so a change in the machine's load (on 2 shared cores it inflates even CPU time by tens of percent, and over a
  whole rollout it moved a fit through chunks timed one after another by +18%) scales both alike, and the median
  drops the pairs a burst split. On a CPU the clock is the process's CPU time (`time.process_time`), which time spent descheduled does not
  inflate; on CUDA it is wall time after a synchronise. Measured under load 3-4 on 2 cores: TSCM's median ratio
  0.96-1.04 (single pairs 0.66-1.34), full context's 3.1-3.5x (chunks 8 -> 20 on the `cpu` preset).
Pass: TSCM's tokens and step time stay within +-`tolerance`, and full context's step time grows at least
`full_growth` (1.5x), else the model is too small for attention to show. Anything else fails with the reason. The
history encoding (once per chunk; its channel path grows linearly with the history by design) is in the per-chunk
times of the report and the plot, not in the verdict.

Per chunk the report also has a robust time: its history encoding + `steps` x the fastest of its sampling steps,
the steps timed during the rollout plus `repeats` re-timings after it in a shuffled chunk order (see `rollout`).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` per chunk. On CPU PyTorch keeps no allocator statistics
(and tracemalloc does not see its buffers), so we report an estimate of the largest working set of one block: the
attention score matrix (batch x heads x N x N floats, what the math kernel materialises) plus the token
activations (N x width floats, times the MLP ratio plus the q/k/v/out copies). It is labelled `estimate` in the JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from training_stub.flow_matching import euler_schedule
from training_stub.model import WorldDiT
from yume_core.figures import agg_figure, save_png
from yume_core.storage import atomic_write_text

FLAT_TOLERANCE = 0.15
FULL_GROWTH = 1.5
PAIRS = 15


@dataclass
class ChunkStats:
    chunk: int  # 1-based; chunk k is conditioned on the start latent and k - 1 generated chunks
    history_latents: int
    history_tokens: int  # in self-attention
    channel_tokens: int  # in linear attention (tscm only)
    seconds: float  # wall time: history encoding + all sampling steps
    robust_seconds: float  # see the module docstring
    step_seconds: list[float] = field(default_factory=list)  # wall time of each timed forward pass
    peak_memory_bytes: int = 0
    paired_step_seconds: list[float] = field(default_factory=list)  # the verdict's paired timings (`rollout`)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimated_block_bytes(tokens: int, model: WorldDiT, batch: int = 1) -> int:
    cfg = model.config
    scores = batch * cfg.heads * tokens * tokens * 4
    activations = batch * tokens * cfg.width * 4 * int(cfg.mlp_ratio + 4)
    return scores + activations


TASKS = ("t2v", "i2v")


@torch.no_grad()
def rollout(model: WorldDiT, start: torch.Tensor, contexts: Sequence[torch.Tensor], chunks: int, chunk_latents: int,
            steps: int, mode: str, seed: int = 0, repeats: int = 2, shift: float = 1.0, task: str = "i2v",
            pair: tuple[int, int] | None = None, paired: int = PAIRS) -> tuple[torch.Tensor, list[ChunkStats]]:
    """Generate `chunks` chunks; `contexts[k % len]` conditions chunk k+1. `task` i2v: after the start latent
    [C, h, w], which stays as given; t2v: from text alone, the first chunk with its first latent (1 + chunk_latents
    latents, no history), `start` only giving the latent's shape. Returns (all latents
    [1 + chunks * chunk_latents, C, h, w], per-chunk stats).

    After the rollout, `repeats` passes re-time one sampling step of every chunk, the chunks in a random order each
    pass: a burst of load from another process then lands on random chunks instead of on a run of neighbours. Then,
    with `pair` (two 1-based chunks a, b), a step of a and a step of b are timed back to back `paired` times, which
    one goes first alternating, into those chunks' `paired_step_seconds` (the verdict's measurement, see the module
    docstring)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    latents = [start.to(device)[None]] if task == "i2v" else []
    times = euler_schedule(steps, shift).to(device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def timed_step(x, t, encoded, context, context_mask):
        _sync(device)
        s0, c0 = time.perf_counter(), clock()
        v = model(x, t, encoded, context, context_mask)
        _sync(device)
        return v, time.perf_counter() - s0, clock() - c0

    rows, inputs = [], []
    for k in range(chunks):
        history = torch.cat(latents) if latents else start.new_zeros((0, *start.shape)).to(device)
        length = chunk_latents + (1 if task == "t2v" and k == 0 else 0)  # T2V generates the first frame too
        noise = torch.randn((1, length, *start.shape), generator=generator).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0, c0 = time.perf_counter(), clock()
        encoded = model.encode_history([history], [history.shape[0]], mode)
        context, context_mask = model.encode_text([contexts[k % len(contexts)].to(device)])
        _sync(device)
        encode_s, encode_c = time.perf_counter() - t0, clock() - c0
        x, step_s, step_c = noise, [], []
        for i in range(steps):
            v, wall, cpu = timed_step(x, times[i].expand(1), encoded, context, context_mask)
            step_s.append(wall)
            step_c.append(cpu)
            x = x + (times[i + 1] - times[i]) * v
        tokens = encoded.tokens.shape[1]
        n = tokens + x.shape[1] * math.prod(-(-s // p) for s, p in zip(start.shape[1:], model.config.patch[1:]))
        peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else estimated_block_bytes(n, model))
        rows.append({"history": history.shape[0], "tokens": tokens, "encode": (encode_s, encode_c),
                     "wall": step_s, "cpu": step_c, "peak": int(peak),
                     "channel": 0 if encoded.channel is None else encoded.channel.shape[1]})
        inputs.append((x, times[steps - 1].expand(1), encoded, context, context_mask))
        latents.append(x[0])
    order = torch.Generator().manual_seed(seed + 1)
    for _ in range(repeats):
        for k in torch.randperm(chunks, generator=order).tolist():
            _, wall, cpu = timed_step(*inputs[k])
            rows[k]["wall"].append(wall)
            rows[k]["cpu"].append(cpu)
    paired_times: dict[int, list[float]] = {}
    if pair is not None:
        if not all(1 <= c <= chunks for c in pair) or pair[0] == pair[1]:
            raise ValueError(f"pair {pair}: two different chunks of 1..{chunks}")
        a, b = pair
        paired_times = {a: [], b: []}
        for i in range(paired):
            for c in ((a, b) if i % 2 == 0 else (b, a)):
                paired_times[c].append(timed_step(*inputs[c - 1])[2])
    stats = [
        ChunkStats(
            chunk=k + 1, history_latents=r["history"], history_tokens=r["tokens"], channel_tokens=r["channel"],
            seconds=r["encode"][0] + sum(r["wall"][:steps]), robust_seconds=r["encode"][1] + steps * min(r["cpu"]),
            step_seconds=[round(s, 6) for s in r["wall"]], peak_memory_bytes=r["peak"],
            paired_step_seconds=paired_times.get(k + 1, []),
        )
        for k, r in enumerate(rows)
    ]
    return torch.cat(latents).cpu(), stats


def paired_ratio(first: ChunkStats, last: ChunkStats) -> float:
    """Median over the pairs of last's step time / first's (`rollout(pair=...)`)."""
    ratios = [b / a for a, b in zip(first.paired_step_seconds, last.paired_step_seconds) if a > 0]
    if not ratios:
        raise ValueError(f"chunks {first.chunk} and {last.chunk} have no paired timings")
    return float(np.median(ratios))


def judge(series: dict[str, list[ChunkStats]], first: int = 8, last: int = 32, tolerance: float = FLAT_TOLERANCE,
          full_growth: float = FULL_GROWTH) -> dict:
    """The verdict on per-mode chunk stats (see the module docstring): {"passed", "reasons", "ratio": {mode: paired
    step time of chunk `last` over chunk `first`}, "tokens": {mode: [history tokens at first, at last]}, "pairs":
    {mode: pairs timed}, "window": [first, last], ...}."""
    reasons: list[str] = []
    ratios: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    pairs: dict[str, int] = {}
    for mode in ("tscm", "full"):
        if mode not in series:
            reasons.append(f"mode {mode} was not run; the check compares tscm with full context")
    available = max((s.chunk for v in series.values() for s in v), default=0)
    if last <= first:
        reasons.append(f"the window {first}..{last} is empty: it needs a first and a later last chunk")
    elif available < last:
        reasons.append(f"only {available} chunks were generated; the check needs chunks {first} to {last}")
    if not reasons:
        for mode, stats in series.items():
            by_chunk = {s.chunk: s for s in stats}
            a, b = by_chunk[first], by_chunk[last]
            tokens[mode] = [a.history_tokens, b.history_tokens]
            pairs[mode] = min(len(a.paired_step_seconds), len(b.paired_step_seconds))
            if pairs[mode] == 0:
                reasons.append(f"mode {mode}: chunks {first} and {last} were not timed in pairs (rollout pair=)")
                continue
            ratios[mode] = paired_ratio(a, b)
        t0, t1 = tokens["tscm"]
        if t1 > t0 * (1 + tolerance):
            reasons.append(f"TSCM's self-attended history grew from {t0} to {t1} tokens from chunk {first} to {last} "
                           f"(allowed +{100 * tolerance:.0f}%): its history is not bounded")
        if "tscm" in ratios and abs(ratios["tscm"] - 1) > tolerance:
            why = ("its history cost is not bounded" if ratios["tscm"] > 1 else
                   "its step got faster as its history grew, so the timings are noise: rerun on a quieter machine or "
                   "with more pairs")
            reasons.append(
                f"TSCM's step time changed by {100 * (ratios['tscm'] - 1):+.1f}% from chunk {first} to {last} (median "
                f"of {pairs['tscm']} paired timings; allowed +-{100 * tolerance:.0f}%): {why}"
            )
        if "full" in ratios and ratios["full"] < full_growth:
            reasons.append(
                f"full context's step time grew only {ratios['full']:.2f}x from chunk {first} to {last} (expected >= "
                f"{full_growth}x): the model is too small for attention to dominate, so the comparison shows nothing"
            )
    return {"passed": not reasons, "reasons": reasons, "ratio": ratios, "tokens": tokens, "pairs": pairs,
            "window": [first, last], "tolerance": tolerance, "full_growth_min": full_growth}


def plot(series: dict[str, dict[str, list[ChunkStats]]], path: str | Path, memory_label: str) -> Path:
    """Latency and memory per chunk against history length: a colour per mode, a line style per task."""
    fig = agg_figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    styles = {"i2v": "-", "t2v": "--"}
    modes = sorted({m for per_task in series.values() for m in per_task})
    for task, per_mode in series.items():
        for mode, stats in per_mode.items():
            color = f"C{modes.index(mode)}"
            hist = [s.chunk - 1 for s in stats]
            kw = {"marker": ".", "color": color, "ls": styles.get(task, "-"), "label": f"{task} {mode}"}
            ax1.plot(hist, [1000 * s.robust_seconds for s in stats], **kw)
            ax2.plot(hist, [s.peak_memory_bytes / 2**20 for s in stats], **kw)
    ax1.set_xlabel("history length (chunks before the current one)")
    ax1.set_ylabel("per-chunk latency (ms, robust)")
    ax1.set_title("latency per chunk")
    ax2.set_xlabel("history length (chunks before the current one)")
    ax2.set_ylabel(f"peak memory (MiB, {memory_label})")
    ax2.set_title("memory per chunk")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def run_check(model: WorldDiT, start: torch.Tensor, contexts: Sequence[torch.Tensor], output: str | Path,
              chunks: int, chunk_latents: int, steps: int, modes: Sequence[str] = ("tscm", "full", "sliding"),
              first: int = 8, last: int = 32, decode=None, fps: float = 16.0, seed: int = 0, repeats: int = 2,
              log=print, tasks: Sequence[str] = TASKS, start_source: str = "start frame", paired: int = PAIRS) -> dict:
    """Roll out every task in every mode, write `infer_check.json`, `infer_check.png` and (with `decode`, latents ->
    uint8 frames) `rollout_<task>_tscm.mp4` under `output`; return the report. Its `verdict` says pass or fail and
    why (every task must pass); `tasks[task]` holds each task's verdict, rollouts and videos."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {list(TASKS)}, got {list(tasks)}")
    series: dict[str, dict[str, list[ChunkStats]]] = {}
    per_task = {}
    for task in tasks:
        series[task], videos, broken = {}, {}, []
        for mode in modes:
            t0 = time.perf_counter()
            window = (first, last) if 1 <= first < last <= chunks else None  # else judge says why there is none
            latents, stats = rollout(model, start, contexts, chunks, chunk_latents, steps, mode, seed, repeats,
                                     task=task, pair=window, paired=paired)
            series[task][mode] = stats
            if not bool(torch.isfinite(latents).all()):
                broken.append(mode)
            log(f"{task} {mode:>8}: {chunks} chunks in {time.perf_counter() - t0:.1f}s; per chunk "
                f"{1000 * stats[0].robust_seconds:.1f} ms (chunk 1) -> {1000 * stats[-1].robust_seconds:.1f} ms "
                f"(chunk {chunks}), history tokens {stats[0].history_tokens} -> {stats[-1].history_tokens}")
            if decode is not None and mode == "tscm":
                from yume_core.media import write_video

                frames = decode(latents)
                videos[mode] = str(write_video(output / f"rollout_{task}_{mode}.mp4", list(frames), fps).path)
        verdict = judge(series[task], first, last)
        if broken:
            verdict["reasons"].append(f"the {task} rollout produced non-finite latents in mode(s) {', '.join(broken)}")
            verdict["passed"] = False
        per_task[task] = {
            "verdict": verdict,
            "start": start_source if task == "i2v" else "none: text only, the first frame generated",
            "videos": videos,
            "modes": {m: [asdict(s) for s in v] for m, v in series[task].items()},
        }
    memory = "cuda_max_memory_allocated" if device.type == "cuda" else "estimate"
    report = {
        "verdict": {"passed": all(t["verdict"]["passed"] for t in per_task.values()),
                    "reasons": [f"{task}: {r}" for task, t in per_task.items() for r in t["verdict"]["reasons"]],
                    "tasks": {task: t["verdict"]["passed"] for task, t in per_task.items()},
                    "window": [first, last]},
        "chunks": chunks,
        "chunk_latents": chunk_latents,
        "steps": steps,
        "device": str(device),
        "memory_method": memory,
        "tasks": per_task,
    }
    atomic_write_text(output / "infer_check.json", json.dumps(report, indent=2))
    plot(series, output / "infer_check.png", memory)
    return report


# ----------------------------------------------------------------------------------------------------------------
# inputs


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, its TrainConfig, checkpoint folder, state) from a checkpoint or a run's output folder."""
    from training_stub import checkpoint as ckpt
    from training_stub.config import config_from_dict
    from training_stub.train import build_model

    folder = ckpt.resolve(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint here (expected state.json, or checkpoints/latest)")
    state = ckpt.read_state(folder)
    config = config_from_dict(state["config"])
    model = build_model(config, config.model.text_dim)
    ckpt.load_model_weights(model, folder)
    return model.to(device).eval(), config, folder, state


def synthetic_start_frame(height: int, width: int) -> np.ndarray:
    """A deterministic street-like image (sky, horizon, road) for when no start frame is given: [H, W, 3] uint8."""
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    sky = np.array([110, 160, 230]) * (1 - 0.5 * y) + 40
    ground = np.array([90, 85, 80]) + 60 * np.abs(x - 0.5)
    img = np.where(y < 0.45, sky, ground) * np.ones_like(x)
    road = (y > 0.45) & (np.abs(x - 0.5) < (y - 0.45) * 0.9)
    img = np.where(road, np.array([60, 60, 65]), img)
    return np.clip(img, 0, 255).astype(np.uint8)


def start_latent(space, image: str | Path | None = None, shards: str | Path | None = None, data_config=None
                 ) -> tuple[torch.Tensor, str]:
    """The start latent [C, h, w] and where it came from: an image file, else the first clip's first frame in
    `shards`, else `synthetic_start_frame`."""
    if image is not None:
        from PIL import Image

        with Image.open(image) as im:
            frame = np.asarray(im.convert("RGB"))
        return space.encode(frame[None])[0], f"image {image}"
    if shards is not None:
        from dataclasses import replace

        from training_stub.data import WindowLoader

        loader = WindowLoader(shards, replace(data_config, shuffle_buffer=0, workers=0), epochs=1)
        for window in loader:
            return window["history"][0].float(), f"first frame of {window['clip_id']} in {shards}"
        raise ValueError(f"{shards}: no training window to take a start frame from")
    return space.encode(synthetic_start_frame(space.height, space.width)[None])[0], "synthetic start frame"


# ----------------------------------------------------------------------------------------------------------------
# a trained run, end to end


# A walk that exercises every kind of action: forward, strafes, turns, tilts, standing still, backing up.
DEFAULT_ACTIONS = (("W", "·"), ("W", "·"), ("W+D", "·"), ("W", "→"), ("W", "·"), ("None", "←"), ("W+A", "·"),
                   ("A", "·"), ("W", "·"), ("None", "↑"), ("W", "·"), ("S", "·"), ("W", "↓"), ("D", "·"),
                   ("W", "←"), ("W", "·"))


def check_checkpoint(checkpoint: str | Path, output: str | Path | None = None, chunks: int = 32,
                     steps: int | None = None, modes: Sequence[str] = ("tscm", "full", "sliding"),
                     tasks: Sequence[str] = TASKS, actions: Sequence[tuple[str, str]] = DEFAULT_ACTIONS,
                     prompt: str = "", start_image: str | Path | None = None, shards: str | Path | None = None,
                     first: int = 8, last: int = 32, repeats: int = 2, device: str = "auto", threads: int = 1,
                     seed: int = 0, log=print, paired: int = PAIRS) -> dict:
    """`yume-data infer-check` as a function: load a run's newest checkpoint (or a checkpoint folder), encode the
    actions (keys, mouse) with the run's action cache and `prompt` as event text, take the I2V start frame from
    `start_image`, else `shards`, else the run's training shards (first clip), else a generated one, and `run_check`
    into `output` (default `<run>/infer-check`). `threads`: intra-op CPU threads (0: PyTorch's default; one keeps a
    small model's timings steady). Returns the report (its `verdict["passed"]`); ValueError on unknown modes, tasks
    or actions."""
    from training_stub.config import MODES
    from training_stub.train import TextSide, resolve_device
    from yume_core.actions import load_vocabulary

    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {unknown or 'none given'}; known: {list(MODES)}")
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"tasks {list(tasks)}: a non-empty subset of {list(TASKS)}")
    dev = resolve_device(device)
    if dev.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    model, config, folder, state = load_trained(checkpoint, dev)
    run_dir = folder.parent.parent
    cache_path = Path(state.get("action_cache") or "action_cache.safetensors")
    if not cache_path.is_absolute():
        cache_path = run_dir / cache_path
    text = TextSide(config.text_encoder, config.text_max_length, cache_path)
    vocabulary = load_vocabulary(text.actions.metadata.get("vocabulary", "yume15"))
    phrases = [vocabulary.phrase(k, m) for k, m in actions]  # VocabularyError (a ValueError) names a bad label
    if not phrases:
        raise ValueError("no actions given")
    contexts = [text.context(prompt, [p]) for p in phrases]
    if shards is None and start_image is None and state.get("shards") and Path(state["shards"]).exists():
        shards = state["shards"]
    start, source = start_latent(config.data.latents, start_image, shards, config.data)
    log(f"checkpoint {folder} (step {state['step']}); tasks {','.join(tasks)}; "
        f"i2v start: {source if 'i2v' in tasks else 'none'}; {len(phrases)} actions cycled")
    report = run_check(model, start, contexts, output or run_dir / "infer-check", chunks, config.data.chunk_latents,
                       steps or config.sample_steps, list(modes), first=first, last=min(last, chunks),
                       decode=config.data.latents.decode, seed=seed, repeats=repeats, log=log, tasks=list(tasks),
                       start_source=source, paired=paired)
    report["output"] = str(Path(output or run_dir / "infer-check"))
    return report

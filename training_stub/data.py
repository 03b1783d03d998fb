"""Training windows streamed from WebDataset shards: decode each clip once, encode it to latents, cut its windows.

Order. Each epoch reads the shards in a seeded permutation (seed, epoch). Shard positions are dealt round-robin to
the reader slots (`workers` DataLoader processes, times the ranks of an initialised `torch.distributed` group);
each slot reads its shards in order, cuts every clip into windows and passes them through its own seeded shuffle
buffer of `shuffle_buffer` windows (0 or 1: no shuffling). `torch.utils.data.DataLoader` takes one window from each
worker in turn, so a seed and a worker count give one window order, every run.

Resuming. `state_dict()` is `{"epoch", "shards_done"}`: the first `shards_done` shards of that epoch's permutation
have had every window handed to the caller (a shard counts once all windows before it in the permutation do as
well). `load_state_dict` makes the next iteration start after them. Delivery is at-least-once: windows of shards
that were partly consumed (read, or sitting in a shuffle buffer) when the state was taken are delivered again after
a resume; no window of a finished shard is. The shuffle buffers start empty after a resume, so the order after a
resume differs from an uninterrupted run's.

Bad samples do not stop training: a clip whose json or mp4 cannot be read, one too short for a single window, and a
window with no action chunk are skipped, counted in `WindowLoader.stats` by reason and (for damaged data) logged.
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
import webdataset as wds
from av.video.reformatter import VideoReformatter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from training_stub.latents import LatentSpace
from training_stub.windows import (
    cut_windows,
    timeline_scale,
    window_actions,
    window_text,
)

log = logging.getLogger(__name__)

# skip reasons counted in WindowLoader.stats
SKIP_REASONS = ("json_invalid", "video_undecodable", "too_short", "no_actions")


@dataclass(frozen=True)
class DataConfig:
    latents: LatentSpace = field(default_factory=LatentSpace)
    chunk_latents: int = 8  # latents per chunk (Yume-1.5: 32 frames = 8 latents)
    max_history_chunks: int = 8  # history kept before the current chunk (in chunks); shorter clips -> shorter history
    shuffle_buffer: int = 64
    workers: int = 0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.chunk_latents, int) or self.chunk_latents < 1:
            raise ValueError(f"chunk_latents must be a positive integer, got {self.chunk_latents!r}")
        for name in ("max_history_chunks", "shuffle_buffer", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


# ------------------------------------------------------------------------------------------------ shards


def resolve_shards(shards: str | Path | list[str]) -> list[str]:
    """A directory (its `*.tar`, sorted), a brace pattern or `::`-joined URLs (webdataset's syntax), one path or
    URL, or a list of them, as a list of URLs."""
    if isinstance(shards, (list, tuple)):
        urls = [str(s) for s in shards]
    elif Path(shards).is_dir():
        urls = sorted(str(p) for p in Path(shards).glob("*.tar"))
        if not urls:
            raise ValueError(f"{shards}: no *.tar shards in this directory")
    else:
        urls = wds.shardlists.expand_urls(str(shards))
    if not urls:
        raise ValueError(f"no shards in {shards!r}")
    return urls


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The epoch's permutation of shard indices: a function of (seed, epoch) only."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(num_shards)]


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------------ one clip


def decode_clip(data: bytes, space: LatentSpace) -> np.ndarray:
    """Every frame of an mp4 (bytes) as uint8 [T, height, width, 3]: scaled to cover in FFmpeg's scaler while
    decoding (area filter), then centre-cropped. The loader's hot path, with encoding to latents."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = space.resize_size(stream.codec_context.width, stream.codec_context.height)
        reformatter = VideoReformatter()  # one scaler for the clip
        frames = [reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                  for frame in container.decode(stream)]
    if not frames:
        return np.zeros((0, space.height, space.width, 3), np.uint8)
    return np.ascontiguousarray(space.crop_frames(np.stack(frames)))


def clip_windows(sample: dict, config: DataConfig) -> tuple[list[dict], Counter]:
    """The training windows of one shard sample ({"__key__", "json", "mp4", ...} as bytes) and the skip counts."""
    key = sample.get("__key__", "")
    skipped: Counter = Counter()
    try:
        meta = json.loads(sample["json"])
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        meta = e
    if not isinstance(meta, dict):
        log.warning("sample %s in %s: no readable json object (%s); skipped", key, sample.get("__url__"), meta)
        skipped["json_invalid"] += 1
        return [], skipped
    try:
        frames = decode_clip(sample["mp4"], config.latents)
    except (KeyError, av.FFmpegError, IndexError, ValueError) as e:
        log.warning("sample %s in %s: mp4 does not decode (%s); skipped", key, sample.get("__url__"), e)
        skipped["video_undecodable"] += 1
        return [], skipped
    space = config.latents
    windows = cut_windows(space.num_latents(len(frames)), config.chunk_latents, config.max_history_chunks, space)
    if not windows:
        skipped["too_short"] += 1
        return [], skipped
    actions = window_actions(windows, (meta.get("actions") or {}).get("chunks") or [], timeline_scale(meta))
    latents = space.encode(frames[: space.num_frames(windows[-1].chunk_stop)])
    clip_id = str(meta.get("clip_id") or key)
    text = window_text(meta.get("captions"))
    out = []
    for w, phrases in zip(windows, actions):
        if not phrases:
            skipped["no_actions"] += 1
            continue
        out.append({
            "key": f"{key}#{w.chunk_index}",
            "clip_id": clip_id,
            "chunk_index": w.chunk_index,
            "chunk_start": w.chunk_start,
            "history": latents[torch.from_numpy(w.history)],
            "chunk": latents[w.chunk_start : w.chunk_stop].clone(),
            "actions": phrases,
            "text": text,
        })
    return out, skipped


# ------------------------------------------------------------------------------------------------ streaming


# A worker hands windows over as numpy arrays, pickled through the DataLoader's pipe, and the main process wraps them
# back without a copy. Tensors would go through shared memory instead, which costs a socket round trip to the worker
# per tensor: measured here, 6 ms per window, more than decoding it.
_TENSORS = ("history", "chunk")


def _as_is(item):
    return item


class _WindowStream(IterableDataset):
    """One reader slot's stream (the whole stream with no workers): windows tagged with their (epoch, shard position),
    plus untagged control items: `{"__done__": (epoch, pos), "count": n}` when a shard has been read, and
    `{"__skipped__": Counter}` per clip that lost windows."""

    def __init__(self, urls: list[str], config: DataConfig, epochs: int | None, epoch: int, done: int):
        self.urls, self.config, self.epochs, self.epoch, self.done = urls, config, epochs, epoch, done

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _distributed()
        slot, slots = rank * workers + worker, world * workers
        cfg = self.config
        rng = random.Random(f"windows:{cfg.seed}:{slot}/{slots}:{self.epoch}:{self.done}")
        buffer: list[dict] = []
        epoch = self.epoch
        while self.epochs is None or epoch < self.epochs:
            order = shard_order(len(self.urls), cfg.seed, epoch)
            for pos in range(self.done if epoch == self.epoch else 0, len(self.urls)):
                if pos % slots != slot:
                    continue
                samples = wds.tarfile_samples([{"url": self.urls[order[pos]]}], handler=wds.warn_and_continue,
                                              select_files=_wanted)
                count, last = 0, None
                for sample in samples:
                    if last is not None:
                        yield from self._emit(last, buffer, rng)
                    last = clip_windows(sample, cfg)
                    for window in last[0]:
                        window["__at__"] = (epoch, pos)
                        if info is not None:  # see _TENSORS
                            for name in _TENSORS:
                                window[name] = window[name].numpy()
                    count += len(last[0])
                # announced before the shard's last clip goes out, so the shard counts as done the moment its
                # last window is handed to the caller
                yield {"__done__": (epoch, pos), "count": count}
                if last is not None:
                    yield from self._emit(last, buffer, rng)
            epoch += 1
        rng.shuffle(buffer)
        yield from buffer

    def _emit(self, clip: tuple[list[dict], Counter], buffer: list[dict], rng: random.Random):
        """Hand a clip's windows to the shuffle buffer (or straight out without one)."""
        windows, skipped = clip
        if skipped:
            yield {"__skipped__": skipped}
        size = self.config.shuffle_buffer
        for window in windows:
            if size <= 1:
                yield window
            elif len(buffer) < size:
                buffer.append(window)
            else:
                i = rng.randrange(len(buffer))
                buffer[i], window = window, buffer[i]
                yield window


def _forget_parent_thread_hooks(worker_id: int) -> None:
    """A forked worker inherits the exit hooks that the parent's background threads registered (Prefect's services
    register one each). Run at the worker's exit, they act on services that do not exist in the child and raise
    (Prefect 3.8: an AssertionError in `drain`), which ends every worker with exit code 1 and the loader with
    "DataLoader worker exited unexpectedly" whenever the trainer runs in a process that has run a flow."""
    hooks = getattr(threading, "_threading_atexits", None)
    if hooks is not None:
        hooks.clear()


def _wanted(name: str) -> bool:
    return name.endswith((".json", ".mp4"))  # poses (.npy) are not read


class WindowLoader:
    """Iterable over training windows, streaming from WebDataset shards (see the module docstring).

    Each window is a dict: `key` ("<sample key>#<chunk index>"), `clip_id`, `chunk_index`, `chunk_start` (the
    chunk's first latent in its clip: 1 + chunk_index * chunk_latents, latent 0 being the first frame), `history` float32
    [T_h, C, h, w], `chunk` float32 [chunk_latents, C, h, w], `actions` (phrases, keys into the action cache) and
    `text` (event caption, else scene caption, else ""). `history` and `chunk` are the window's own tensors.
    Iterating starts at the current position (`load_state_dict`) and advances it as windows are handed out.
    """

    def __init__(self, shards: str | Path | list[str], config: DataConfig = DataConfig(), epochs: int | None = None):
        if epochs is not None and epochs < 0:
            raise ValueError(f"epochs must be >= 0 or None (forever), got {epochs}")
        self.urls = resolve_shards(shards)
        self.config = config
        self.epochs = epochs
        self.epoch, self.shards_done = 0, 0
        self.stats: Counter = Counter()  # windows, clip skips by reason

    def state_dict(self) -> dict:
        """The data position; JSON-serialisable. At-least-once: see the module docstring."""
        return {"epoch": self.epoch, "shards_done": self.shards_done, "num_shards": len(self.urls),
                "seed": self.config.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume at the next shard boundary after `state` (from `state_dict`, of a loader over the same shards)."""
        if state.get("num_shards", len(self.urls)) != len(self.urls) or state.get("seed", self.config.seed) != self.config.seed:
            raise ValueError(
                f"state is of a loader over {state.get('num_shards')} shards with seed {state.get('seed')}; this one "
                f"has {len(self.urls)} shards and seed {self.config.seed}, so its shard order differs. Resume with the "
                "same shards and seed."
            )
        epoch, done = int(state["epoch"]), int(state["shards_done"])
        if epoch < 0 or not 0 <= done <= len(self.urls):
            raise ValueError(f"bad data position epoch={epoch}, shards_done={done} for {len(self.urls)} shards")
        self.epoch, self.shards_done = (epoch + 1, 0) if done == len(self.urls) else (epoch, done)

    def __iter__(self) -> Iterator[dict]:
        stream = _WindowStream(self.urls, self.config, self.epochs, self.epoch, self.shards_done)
        if self.config.workers == 0:
            items = iter(stream)
        else:
            items = iter(DataLoader(stream, batch_size=None, num_workers=self.config.workers, prefetch_factor=4,
                                    collate_fn=_as_is, worker_init_fn=_forget_parent_thread_hooks))
        rank, world = _distributed()
        per_rank = max(1, self.config.workers)
        slots = world * per_rank
        mine = range(rank * per_rank, (rank + 1) * per_rank)  # reader slots of this process
        expected: dict[tuple[int, int], int] = {}
        seen: Counter = Counter()

        def advance():
            while self.epochs is None or self.epoch < self.epochs:
                at = (self.epoch, self.shards_done)
                if self.shards_done % slots in mine:
                    if expected.get(at) != seen[at]:
                        return
                    expected.pop(at)
                    seen.pop(at, None)
                self.shards_done += 1
                if self.shards_done == len(self.urls):
                    self.epoch, self.shards_done = self.epoch + 1, 0

        for item in items:
            if "__skipped__" in item:
                self.stats.update(item["__skipped__"])
                continue
            if "__done__" in item:
                expected[tuple(item["__done__"])] = int(item["count"])
                advance()
                continue
            seen[tuple(item.pop("__at__"))] += 1
            if self.config.workers:
                for name in _TENSORS:
                    item[name] = torch.from_numpy(item[name])
            self.stats["windows"] += 1
            advance()
            yield item

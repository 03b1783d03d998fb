"""Training windows streamed from WebDataset shards: decode each clip once, encode it to latents, cut its windows.

Order. Each epoch reads the shards in a seeded permutation (seed, epoch). Shard positions are dealt round-robin to
the reader slots (`workers` DataLoader processes, times the ranks of an initialised `torch.distributed` group);
each slot reads its shards in order, cuts every clip into windows and passes them through its own seeded shuffle
buffer of `shuffle_buffer` windows (0 or 1: no shuffling). `torch.utils.data.DataLoader` takes one window from each
worker in turn, so a seed and a worker count give one window order, every run.

Resuming is exact. Every window leaves its slot with the slot's position after it: the epoch, the shard position,
the clip and the window within the clip that come next, the windows sitting in the shuffle buffer (as references:
epoch, shard position, clip, window) and how many shuffle draws were made (each draw is a hash of the seed, the slot
and the draw's number, so no generator state is carried). `state_dict()` is the last position of every slot plus
the slot whose turn is next, so a loader that loads it hands out exactly the windows an uninterrupted one would
have, in the same order. A resume re-reads the clips its shuffle buffers referenced (at most `shuffle_buffer` per
slot) and the clip it stopped in; it needs the same shards, seed, shuffle buffer, task and number of slots.

Tasks. `WindowLoader(..., task="i2v")` yields only the windows of samples that train that task (the json says, see
`windows.sample_tasks`); other samples are passed over before their mp4 is decoded and counted as
`task_not_trained`. Without a task every window is yielded.

Bad samples do not stop training: a clip whose json or mp4 cannot be read and one too short for a single window are
skipped, counted in `WindowLoader.stats` by reason and (for damaged data) logged. A window without action labels is
not skipped: it trains with an empty action description (`no_actions` counts them). A slot that reads a whole epoch
without finding a window stops, so a stream with nothing to give ends instead of spinning.
"""

from __future__ import annotations

import hashlib
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
from webdataset.gopen import gopen_schemes
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from training_stub.latents import LatentSpace
from training_stub.windows import (
    cut_windows,
    sample_tasks,
    timeline_scale,
    window_actions,
)
from yume_core import remote
from yume_core.samples import TASKS

log = logging.getLogger(__name__)


def _gopen_fsspec(url, mode="rb", bufsize=8192, **kw):
    """webdataset's opener for object-storage URLs: a streaming fsspec file with the configured credentials."""
    return remote.open_input(url, mode)


# webdataset opens shards through its `gopen_schemes` table, which knows no object storage but `gs` (by a gsutil
# subprocess); fsspec's filesystems take those URLs with the same credentials as every other read here
for _scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "memory"):
    gopen_schemes[_scheme] = _gopen_fsspec

# skip reasons counted in WindowLoader.stats (besides `windows`, and `no_actions`, which counts windows trained with
# an empty action description)
SKIP_REASONS = ("json_invalid", "video_undecodable", "too_short", "task_not_trained")
STATE_FORMAT = "windows/2"


@dataclass(frozen=True)
class DataConfig:
    latents: LatentSpace = field(default_factory=LatentSpace)
    chunk_latents: int = 8  # latents per chunk (Yume-1.5: 32 frames = 8 latents)
    max_history_chunks: int = 8  # history kept before the current chunk (in chunks); shorter clips -> shorter history
    # a share of windows keeps up to `long_history_chunks` instead, when that is more (`training_stub.windows`: why,
    # and how they are drawn)
    long_history: float = 0.25
    long_history_chunks: int = 32
    shuffle_buffer: int = 64
    workers: int = 0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.chunk_latents, int) or self.chunk_latents < 1:
            raise ValueError(f"chunk_latents must be a positive integer, got {self.chunk_latents!r}")
        for name in ("max_history_chunks", "long_history_chunks", "shuffle_buffer", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0 <= self.long_history <= 1:
            raise ValueError(f"long_history is a share of windows, in [0, 1], got {self.long_history!r}")


# ------------------------------------------------------------------------------------------------ shards


def resolve_shards(shards: str | Path | list[str]) -> list[str]:
    """A directory or an object-storage folder (`s3://bucket/set`: its `*.tar`, sorted), a brace pattern or
    `::`-joined URLs (webdataset's syntax), one path or URL, or a list of them, as a list of URLs."""
    if isinstance(shards, (list, tuple)):
        urls = [str(s) for s in shards]
    elif remote.is_url(str(shards)) and remote.is_dir(str(shards)):
        urls = remote.list_files(str(shards), ".tar")
        if not urls:
            raise ValueError(f"{shards}: no *.tar shards in this folder")
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


def clip_windows(sample: dict, config: DataConfig, task: str | None = None, epoch: int = 0
                 ) -> tuple[list[dict], Counter]:
    """The training windows of one shard sample ({"__key__", "json", "mp4", ...} as bytes) in `epoch` (which of
    them carry a long history is drawn per epoch) and the skip counts. With `task`, a sample that does not train it
    gives no window (counted `task_not_trained`, mp4 not decoded)."""
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
    set_name, tasks, texts = sample_tasks(meta)
    if task is not None and task not in tasks:
        skipped["task_not_trained"] += 1
        return [], skipped
    try:
        frames = decode_clip(sample["mp4"], config.latents)
    except (KeyError, av.FFmpegError, IndexError, ValueError) as e:
        log.warning("sample %s in %s: mp4 does not decode (%s); skipped", key, sample.get("__url__"), e)
        skipped["video_undecodable"] += 1
        return [], skipped
    space = config.latents
    windows = cut_windows(space.num_latents(len(frames)), config.chunk_latents, config.max_history_chunks, space,
                          config.long_history, config.long_history_chunks, f"{config.seed}:{epoch}:{key}")
    if not windows:
        skipped["too_short"] += 1
        return [], skipped
    actions = window_actions(windows, (meta.get("actions") or {}).get("chunks") or [], timeline_scale(meta))
    latents = space.encode(frames[: space.num_frames(windows[-1].chunk_stop)])
    clip_id = str(meta.get("clip_id") or key)
    text = texts.get("i2v") or texts.get("t2v") or ""
    out = []
    for w, phrases in zip(windows, actions):
        if not phrases:
            skipped["no_actions"] += 1
        out.append({
            "key": f"{key}#{w.chunk_index}",
            "clip_id": clip_id,
            "set": set_name,
            "tasks": list(tasks),
            "texts": dict(texts),
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
_STATE = "__state__"


def _as_is(item):
    return item


def _draw(key: str, n: int, bound: int) -> int:
    """The `n`-th shuffle draw of a slot, in [0, bound): a hash, so a position needs no generator state."""
    digest = hashlib.blake2b(f"{key}:{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % bound


def _fresh(epoch: int) -> dict:
    return {"epoch": epoch, "pos": 0, "sample": 0, "window": 0, "buffer": [], "draws": 0, "stats": {},
            "flushing": False, "finished": False, "empty": []}


class _WindowStream(IterableDataset):
    """The streams of this process's reader slots (one per DataLoader worker, or one without workers). Every window
    carries `(slot, position after it)` under `__state__`; a slot's last item is a window-less `{"__state__": ...,
    "__end__": True}`, so the counts of clips it skipped after its last window reach the caller too.

    `starts[slot]`: the position to start the slot from (None: the start of `epoch`). `rotation`: DataLoader
    worker w plays this process's slot (w + rotation) % workers, so the slot whose turn was next comes first."""

    def __init__(self, urls: list[str], config: DataConfig, epochs: int | None, epoch: int, task: str | None,
                 starts: dict[int, dict], rotation: int = 0):
        self.urls, self.config, self.epochs, self.epoch, self.task = urls, config, epochs, epoch, task
        self.starts, self.rotation = starts, rotation

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _distributed()
        slot = rank * workers + (worker + self.rotation) % workers
        for item in self._slot(slot, world * workers):
            if info is not None and "chunk" in item:
                for name in _TENSORS:  # see _TENSORS
                    item[name] = item[name].numpy()
            yield item

    # -------------------------------------------------------------------------------------------- reading

    def _samples(self, epoch: int, pos: int):
        url = self.urls[shard_order(len(self.urls), self.config.seed, epoch)[pos]]
        return wds.tarfile_samples([{"url": url}], handler=wds.warn_and_continue, select_files=_wanted)

    def _materialise(self, refs: list) -> list:
        """The buffered windows of `refs` [(epoch, pos, sample, window), ...], decoded again, in `refs` order."""
        wanted: dict[tuple[int, int], set[int]] = {}
        for e, p, j, _ in refs:
            wanted.setdefault((e, p), set()).add(j)
        found = {}
        for (e, p), clips in wanted.items():
            for j, sample in enumerate(self._samples(e, p)):
                if j in clips:
                    for k, w in enumerate(clip_windows(sample, self.config, self.task, e)[0]):
                        found[(e, p, j, k)] = w
                if j >= max(clips):
                    break
        missing = [r for r in refs if tuple(r) not in found]
        if missing:
            raise ValueError(f"cannot resume: the shards changed since the position was saved ({len(missing)} "
                             f"buffered windows are gone, e.g. {missing[0]}); resume with the same shards")
        return [(list(r), found[tuple(r)]) for r in refs]

    # -------------------------------------------------------------------------------------------- one slot

    def _slot(self, slot: int, slots: int):
        cfg, n = self.config, len(self.urls)
        key = f"windows:{cfg.seed}:{slot}/{slots}"
        st = self.starts.get(slot) or _fresh(self.epoch)
        if st.get("finished"):
            return
        stats = Counter(st.get("stats") or {})
        draws = int(st["draws"])
        buffer = self._materialise(st["buffer"])
        size = cfg.shuffle_buffer
        epoch, pos, sample0, window0 = int(st["epoch"]), int(st["pos"]), int(st["sample"]), int(st["window"])
        # shards read in full without a window, until one is found (then None): a slot that has read every shard
        # and found nothing stops
        empty = None if st.get("empty") is None else set(st["empty"])

        def snapshot(e, p, j, k, **extra) -> dict:
            return {"epoch": e, "pos": p, "sample": j, "window": k, "buffer": [r for r, _ in buffer],
                    "draws": draws, "stats": dict(stats), "flushing": False, "finished": False,
                    "empty": None if empty is None else sorted(empty), **extra}

        if not st.get("flushing") and slot < n:  # slots past the number of shards never get one
            while (self.epochs is None or epoch < self.epochs) and (empty is None or len(empty) < n):
                order = shard_order(n, cfg.seed, epoch)
                for p in range(pos, n):
                    if p % slots != slot:
                        continue
                    for j, sample in enumerate(self._samples(epoch, p)):
                        if j < sample0:
                            continue
                        resumed_clip = j == sample0 and window0 > 0
                        windows, skipped = clip_windows(sample, cfg, self.task, epoch)
                        if not resumed_clip:  # counted when the clip was first read
                            stats.update(skipped)
                        for k in range(window0 if resumed_clip else 0, len(windows)):
                            empty = None
                            item = ([epoch, p, j, k], windows[k])
                            if size > 1:
                                if len(buffer) < size:
                                    buffer.append(item)
                                    continue
                                i = _draw(key, draws, len(buffer))
                                draws += 1
                                buffer[i], item = item, buffer[i]
                            after = (j, k + 1) if k + 1 < len(windows) else (j + 1, 0)
                            window = item[1]
                            window[_STATE] = (slot, snapshot(epoch, p, *after))
                            yield window
                    # past the shard, not past the first clip read: a position saved after a shard's last window
                    # points one clip past its end, and the next shard is read from its first clip
                    sample0 = window0 = 0
                    if empty is not None:  # read in full, nothing found
                        empty.add(order[p])
                epoch, pos, sample0, window0 = epoch + 1, 0, 0, 0
            if empty is not None and len(empty) >= n and (self.epochs is None or epoch < self.epochs):
                log.warning("reader slot %d of %d read all %d shards without finding a window%s; it stops", slot,
                            slots, n, f" for task {self.task}" if self.task else "")
            random.Random(f"{key}:flush:{draws}").shuffle(buffer)  # the end of the last epoch: drain the buffer
        while buffer:
            _, window = buffer.pop(0)
            window[_STATE] = (slot, snapshot(epoch, 0, 0, 0, flushing=True))
            yield window
        yield {_STATE: (slot, snapshot(epoch, 0, 0, 0, flushing=True, finished=True)), "__end__": True}


def _forget_parent_thread_hooks(worker_id: int) -> None:
    """A forked worker inherits the exit hooks that the parent's background threads registered (Prefect's services
    register one each). Run at the worker's exit, they act on services that do not exist in the child and raise
    (Prefect 3.8: an AssertionError in `drain`), which ends every worker with exit code 1 and the loader with
    "DataLoader worker exited unexpectedly" whenever the trainer runs in a process that has run a flow."""
    hooks = getattr(threading, "_threading_atexits", None)
    if hooks is not None:
        hooks.clear()


def _wanted(name: str) -> bool:
    return name.endswith((".json", ".mp4"))  # poses (.npy) and start images (.jpg) are not read


class WindowLoader:
    """Iterable over training windows, streaming from WebDataset shards (see the module docstring).

    Each window is a dict: `key` ("<sample key>#<chunk index>"), `clip_id`, `set` (real_world | synthetic | event),
    `tasks` (what its sample trains), `texts` ({"t2v": event text or None, "i2v": ...}), `chunk_index`,
    `chunk_start` (the chunk's first latent in its clip: 1 + chunk_index * chunk_latents, latent 0 being the first
    frame), `history` float32 [T_h, C, h, w], `chunk` float32 [chunk_latents, C, h, w], `actions` (phrases, keys
    into the action cache; empty without labels) and `text` (the I2V text, else the T2V text, else ""). `history` and
    `chunk` are the window's own tensors. Iterating starts at the current position (`load_state_dict`) and advances
    it as windows are handed out. `task`: only windows of samples that train it.
    """

    def __init__(self, shards: str | Path | list[str], config: DataConfig = DataConfig(), epochs: int | None = None,
                 task: str | None = None):
        if epochs is not None and epochs < 0:
            raise ValueError(f"epochs must be >= 0 or None (forever), got {epochs}")
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)} or None, got {task!r}")
        self.urls = resolve_shards(shards)
        self.config = config
        self.epochs = epochs
        self.task = task
        self.epoch = 0  # where slots without a saved position start
        self._streams: dict[int, dict] = {}  # slot -> its position after the last item handed out
        self._next = 0  # this process's slot (0..workers-1) whose item comes next
        self._windows = 0

    @property
    def _slots(self) -> int:
        return _distributed()[1] * max(1, self.config.workers)

    @property
    def stats(self) -> Counter:
        """Windows handed out and clips skipped by reason (see the module docstring)."""
        total = Counter({"windows": self._windows} if self._windows else {})
        for st in self._streams.values():
            total.update(st.get("stats") or {})
        return total

    def state_dict(self) -> dict:
        """The exact data position; JSON-serialisable."""
        epochs = [st["epoch"] for st in self._streams.values() if not st.get("finished")]
        return {"format": STATE_FORMAT, "num_shards": len(self.urls), "seed": self.config.seed,
                "shuffle_buffer": self.config.shuffle_buffer, "slots": self._slots, "task": self.task,
                "epoch": min(epochs, default=self.epoch), "windows": self._windows, "next": self._next,
                "start_epoch": self.epoch,
                "streams": {str(k): json.loads(json.dumps(v)) for k, v in sorted(self._streams.items())}}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly after `state` (from `state_dict` of a loader over the same shards and settings)."""
        if state.get("num_shards", len(self.urls)) != len(self.urls) or state.get("seed", self.config.seed) != self.config.seed:
            raise ValueError(
                f"state is of a loader over {state.get('num_shards')} shards with seed {state.get('seed')}; this one "
                f"has {len(self.urls)} shards and seed {self.config.seed}, so its shard order differs. Resume with the "
                "same shards and seed."
            )
        if state.get("format") != STATE_FORMAT:  # a shard boundary, as saved before exact positions
            epoch, done = int(state["epoch"]), int(state["shards_done"])
            if epoch < 0 or not 0 <= done <= len(self.urls):
                raise ValueError(f"bad data position epoch={epoch}, shards_done={done} for {len(self.urls)} shards")
            epoch, done = (epoch + 1, 0) if done == len(self.urls) else (epoch, done)
            self.epoch, self._next, self._windows = epoch, 0, 0
            self._streams = {s: {**_fresh(epoch), "pos": done} for s in range(self._slots)}
            return
        mismatch = [f"{name} {state.get(name)!r} (now {mine!r})" for name, mine in (
            ("slots", self._slots), ("shuffle_buffer", self.config.shuffle_buffer), ("task", self.task))
            if state.get(name) != mine]
        if mismatch:
            raise ValueError("cannot resume this data position exactly: it was saved with " + ", ".join(mismatch)
                             + "; resume with the same workers, ranks, shuffle buffer and task")
        self.epoch = int(state.get("start_epoch", 0))
        self._streams = {int(k): v for k, v in state["streams"].items()}
        self._next, self._windows = int(state["next"]), int(state.get("windows", 0))

    def __iter__(self) -> Iterator[dict]:
        workers = self.config.workers
        stream = _WindowStream(self.urls, self.config, self.epochs, self.epoch, self.task, dict(self._streams),
                               self._next if workers else 0)
        if workers == 0:
            items = iter(stream)
        else:
            items = iter(DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=4,
                                    collate_fn=_as_is, worker_init_fn=_forget_parent_thread_hooks))
        per_rank = max(1, workers)
        for item in items:
            slot, position = item.pop(_STATE)
            self._streams[slot] = position
            self._next = (slot % per_rank + 1) % per_rank
            if item.pop("__end__", False):
                continue
            if workers:
                for name in _TENSORS:
                    item[name] = torch.from_numpy(item[name])
            self._windows += 1
            yield item

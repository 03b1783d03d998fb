"""Where a clip's training windows lie: chunks, their history and their action phrases. Pure index arithmetic.

Chunks. A clip of n frames has `LatentSpace.num_latents(n)` latents; latent 0 (frame 0 alone) is the clip's first
frame, the image an I2V model starts from, and is never a chunk to predict. Chunk k is latents
1 + k*L .. (k+1)*L (L = `chunk_latents`), i.e. frames 1 + k*L*t .. (k+1)*L*t (t = `temporal`): with Yume-1.5's
8 latents of 4 frames, frames 1-32, 33-64, ...: a 33-frame Yume segment is exactly one first frame and one chunk.
Only whole chunks are windows; a trailing partial chunk is dropped, like the trailing partial action chunk of the
quantizer, so every window's chunk has exactly L latents. A clip shorter than 1 + L*t frames has no window.

History. The latents before the chunk, oldest first: all of them while there are at most `H * L` (+ the first
latent), else latent 0 followed by the `H * L` latents right before the chunk (Yume-1.5 keeps the first frame's
latent however far the generation has gone). `H` is `max_history_chunks`, except for a `long_history` share of
windows, which get an `H` drawn uniformly from `max_history_chunks + 1 .. long_history_chunks` (`history_chunks`;
no window is long when `long_history_chunks` is not above `max_history_chunks`).
Why: TSCM's temporal-spatial path keeps only the newest latents (32 with the default tiers, as many as the `cpu`
preset's `max_history_chunks` keeps), and older history reaches the model only through its channel path. A rollout
goes far past that (the inference check: 77-125 latents), so training needs windows in that regime too, or the
channel path never learns to carry what the temporal-spatial path has dropped. The draws are a hash of the seed,
the epoch, the clip's key and the chunk's index: a clip read again (a resume) is cut into the same windows.

Actions. Labels live on the pose timeline (`actions.frames` frames at `actions.fps`); the mp4 may have been resampled
to another rate, so a window is mapped by time, not by frame number (`timeline_scale`; pose i is frame i when the
shard kept the source's rate). Its phrases are those of the action chunks
(`actions.chunks`, 32 frames each, `end_frame` inclusive) that have at least half of their own duration inside the
window, in time order, with consecutive repeats merged; if none has, the one that overlaps the window longest.
With the defaults (32-frame windows at the pose rate) that is exactly one phrase: chunk k's window, frames
1 + 32k .. 32(k+1), holds 31 of action chunk k's 32 frames and 1 of chunk k+1's. A longer window (or a video stored
at a lower rate than the poses) gets every action chunk it spans, so no action of the window goes unsaid.
A window with no overlapping action chunk gets none: it trains with an empty action description, as every window
of a set without labels (synthetic, event) does; the loader counts such windows as `no_actions`.

Tasks and texts (`sample_tasks`). A schema-v1 sample says which tasks it trains (`tasks`) and the event text of each
(`event_text`); the action description is kept apart (the phrases above). Shards written before schema v1 (real-world
only) are read the way they were written: T2V on Sekai's scene caption, I2V on the event caption when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import hashlib
from dataclasses import dataclass

import numpy as np

from training_stub.latents import LatentSpace
from yume_core.samples import TASKS


@dataclass(frozen=True)
class Window:
    chunk_index: int
    history: np.ndarray  # int64 latent indices, oldest first
    chunk_start: int  # first latent of the chunk
    chunk_stop: int  # one past its last latent
    frame_start: int  # first frame of the chunk (inclusive), on the mp4's timeline
    frame_end: int  # last frame of the chunk (inclusive)


def history_chunks(key: str, chunk_index: int, max_history_chunks: int, long_history: float = 0.0,
                   long_history_chunks: int = 0) -> int:
    """How many chunks of history the window `chunk_index` of the clip drawn as `key` keeps (see the module
    docstring): two uniforms from a hash of (key, chunk_index), one deciding whether the window is long, one its
    length."""
    if long_history <= 0 or long_history_chunks <= max_history_chunks:
        return max_history_chunks
    digest = hashlib.blake2b(f"{key}#{chunk_index}".encode(), digest_size=16).digest()
    is_long, length = (int.from_bytes(digest[i : i + 8], "little") / 2**64 for i in (0, 8))
    if is_long >= long_history:
        return max_history_chunks
    return max_history_chunks + 1 + int(length * (long_history_chunks - max_history_chunks))


def cut_windows(num_latents: int, chunk_latents: int, max_history_chunks: int, space: LatentSpace,
                long_history: float = 0.0, long_history_chunks: int = 0, key: str = "") -> list[Window]:
    """The windows of a clip with `num_latents` latents (see the module docstring); `key` names the clip's draw of
    long histories (its seed, epoch and sample key)."""
    n_chunks = max(0, (num_latents - 1) // chunk_latents)
    out = []
    for k in range(n_chunks):
        start = 1 + k * chunk_latents
        stop = start + chunk_latents
        keep = history_chunks(key, k, max_history_chunks, long_history, long_history_chunks) * chunk_latents
        if start <= keep + 1:
            history = np.arange(start, dtype=np.int64)
        else:
            history = np.concatenate([[0], np.arange(start - keep, start)]).astype(np.int64)
        out.append(Window(k, history, start, stop, *space.frame_range(start, stop)))
    return out


def timeline_scale(meta: Mapping) -> float:
    """Pose-timeline frames per mp4 frame, from a shard sample's json. 1 when the shard kept the source's frame rate
    (`provenance.shards.fps` null: one pose per video frame, whatever the nominal rates say); else by the two rates
    when both are known, else by the two lengths (both span the clip's duration), else 1."""
    if "fps" in ((meta.get("provenance") or {}).get("shards") or {}) and meta["provenance"]["shards"]["fps"] is None:
        return 1.0
    actions = meta.get("actions") or {}
    fps, action_fps = meta.get("fps"), actions.get("fps")
    if fps and action_fps:
        return float(action_fps) / float(fps)
    frames, action_frames = meta.get("frames"), actions.get("frames")
    if frames and action_frames:
        return float(action_frames) / float(frames)
    return 1.0


def window_actions(windows: Sequence[Window], chunks: Sequence[Mapping], scale: float) -> list[list[str]]:
    """The phrases of each window (see the module docstring); `scale`: pose frames per mp4 frame."""
    if not windows:
        return []
    if not chunks:
        return [[] for _ in windows]
    c0 = np.array([c["start_frame"] for c in chunks], np.float64)
    c1 = np.array([c["end_frame"] for c in chunks], np.float64) + 1.0  # half-open, in pose frames
    w0 = np.array([w.frame_start for w in windows], np.float64)[:, None] * scale
    w1 = (np.array([w.frame_end for w in windows], np.float64)[:, None] + 1.0) * scale
    overlap = np.clip(np.minimum(w1, c1) - np.maximum(w0, c0), 0.0, None)  # [windows, chunks]
    share = overlap / np.maximum(c1 - c0, 1e-9)
    chosen = share >= 0.5 - 1e-9
    phrases = [c.get("phrase") or "" for c in chunks]
    out = []
    for i in range(len(windows)):
        picked = np.flatnonzero(chosen[i])
        if picked.size == 0 and overlap[i].max() > 0:
            picked = [int(np.argmax(overlap[i]))]
        names: list[str] = []
        for j in picked:
            if phrases[j] and (not names or names[-1] != phrases[j]):
                names.append(phrases[j])
        out.append(names)
    return out


def _text(value) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def sample_tasks(meta: Mapping) -> tuple[str, tuple[str, ...], dict[str, str | None]]:
    """(set, tasks, {task: event text}) of a shard sample's json; a task without text is not trained."""
    if "event_text" in meta and "tasks" in meta:
        texts = {t: _text((meta.get("event_text") or {}).get(t)) for t in TASKS}
        listed = set(meta.get("tasks") or [])
        tasks = tuple(t for t in TASKS if t in listed and texts[t])
        return str(meta.get("set") or "real_world"), tasks, texts
    captions = meta.get("captions") or {}  # written before schema v1: a real-world clip
    texts = {"t2v": _text(captions.get("scene")), "i2v": _text(captions.get("caption_event"))}
    return "real_world", tuple(t for t in TASKS if texts[t]), texts

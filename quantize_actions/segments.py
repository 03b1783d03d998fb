"""Two views of the per-step labels that training consumes: constant-label runs and fixed-length chunks.

Frame convention (Yume's): step i of stride s goes from frame i*s to frame (i+1)*s, frames numbered from the
trajectory's first pose. A run of steps i..j-1 therefore covers frames i*s..j*s, both inclusive, and its length in
frames is (j - i)*s + 1; that is what `min_segment_frames` is compared with (Yume's 47-pose segment has 46 steps and
"Duration: 47 frames").

Chunks mirror Yume-1.5's autoregressive generation of `chunk_frames` frames at a time: chunk k is frames
[k*L, (k+1)*L - 1]. A chunk's steps are the steps whose both frames lie inside it, so the step that bridges two
chunks (frame (k+1)*L - 1 -> (k+1)*L at stride 1) belongs to neither: it describes motion between two generated
chunks, not within one. Only whole chunks are made (frames up to the last subsampled pose); a trailing partial one
is dropped. QuantizeConfig guarantees chunk_frames >= 2*stride, so every chunk holds at least one step.

Both are computed for all clips of a batch at once (run starts from np.diff, majorities from np.bincount).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from quantize_actions.config import QuantizeConfig
from quantize_actions.labels import key_strings, mouse_strings
from quantize_actions.rule import BatchLabels
from yume_core.actions import KEY_LABELS, MOUSE_LABELS, NUM_LABELS, phrase_table
from yume_core.manifest import SEGMENT_TYPE


@dataclass(frozen=True)
class Spans:
    """Segments or chunks of many clips as flat columns; clip c owns rows offsets[c]:offsets[c+1]."""

    start_frame: np.ndarray  # int32, inclusive
    end_frame: np.ndarray  # int32, inclusive
    keys: np.ndarray  # uint8 codes
    mouse: np.ndarray  # uint8 codes
    agreement: np.ndarray  # float32
    offsets: np.ndarray  # int64 (n_clips + 1,)
    vocabulary: str  # name or path of the action vocabulary that words the labels

    def _phrase_codes(self) -> np.ndarray:
        return self.keys.astype(np.int64) * NUM_LABELS + self.mouse

    def to_dicts(self, clip: int = 0) -> list[dict]:
        lo, hi = self.offsets[clip], self.offsets[clip + 1]
        phrases = phrase_table(self.vocabulary)
        return [
            {
                "start_frame": int(s),
                "end_frame": int(e),
                "keys": KEY_LABELS[k],
                "mouse": MOUSE_LABELS[m],
                "agreement": float(a),
                "phrase": phrases[p],
            }
            for s, e, k, m, a, p in zip(
                self.start_frame[lo:hi], self.end_frame[lo:hi], self.keys[lo:hi], self.mouse[lo:hi],
                self.agreement[lo:hi], self._phrase_codes()[lo:hi],
            )
        ]

    def to_arrow(self) -> pa.ListArray:
        """One list<SEGMENT_TYPE> entry per clip, built from the flat columns without Python objects per span."""
        phrases = pa.array(phrase_table(self.vocabulary), pa.string())
        values = pa.StructArray.from_arrays(
            [
                pa.array(self.start_frame, pa.int32()),
                pa.array(self.end_frame, pa.int32()),
                key_strings(self.keys),
                mouse_strings(self.mouse),
                pa.array(self.agreement, pa.float32()),
                phrases.take(pa.array(self._phrase_codes())),
            ],
            fields=list(SEGMENT_TYPE),
        )
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), values)


def _clip_of(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def _per_clip_offsets(clip_of_row: np.ndarray, n_clips: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(clip_of_row, minlength=n_clips))]).astype(np.int64)


def segment_runs(labels: BatchLabels, config: QuantizeConfig = QuantizeConfig()) -> Spans:
    n_steps, n_clips, s = len(labels.keys), len(labels.offsets) - 1, config.stride
    pair = labels.keys.astype(np.int16) * NUM_LABELS + labels.mouse
    is_start = np.ones(n_steps, bool)
    is_start[1:] = pair[1:] != pair[:-1]
    is_start[labels.offsets[:-1][np.diff(labels.offsets) > 0]] = True  # runs never cross clips
    starts = np.flatnonzero(is_start)
    ends = np.append(starts[1:], n_steps)  # exclusive
    clip = _clip_of(labels.offsets)[starts]
    local = starts - labels.offsets[clip]
    keep = (ends - starts) * s + 1 >= config.min_segment_frames
    starts, ends, clip, local = starts[keep], ends[keep], clip[keep], local[keep]
    return Spans(
        start_frame=(local * s).astype(np.int32),
        end_frame=((local + ends - starts) * s).astype(np.int32),
        keys=labels.keys[starts],
        mouse=labels.mouse[starts],
        agreement=np.ones(len(starts), np.float32),
        offsets=_per_clip_offsets(clip, n_clips),
        vocabulary=config.vocabulary,
    )


def fixed_chunks(labels: BatchLabels, config: QuantizeConfig = QuantizeConfig()) -> Spans:
    s, length = config.stride, config.chunk_frames
    steps_per_clip = np.diff(labels.offsets)
    n_chunks = np.where(steps_per_clip > 0, (steps_per_clip * s + 1) // length, 0)
    chunk_offsets = np.concatenate([[0], np.cumsum(n_chunks)]).astype(np.int64)
    total = int(chunk_offsets[-1])

    clip = _clip_of(labels.offsets)
    local = np.arange(len(labels.keys)) - labels.offsets[clip]
    k = local * s // length
    inside = (k == (local + 1) * s // length) & (k < n_chunks[clip])
    chunk = chunk_offsets[clip[inside]] + k[inside]
    keys, mouse = labels.keys[inside], labels.mouse[inside]

    def majority(codes):  # argmax returns the first maximum: ties go to the smallest code
        counts = np.bincount(chunk * NUM_LABELS + codes, minlength=total * NUM_LABELS)
        return counts.reshape(total, NUM_LABELS).argmax(axis=1).astype(np.uint8)

    maj_keys, maj_mouse = majority(keys), majority(mouse)
    agree = (keys == maj_keys[chunk]) & (mouse == maj_mouse[chunk])
    share = np.bincount(chunk, weights=agree, minlength=total) / np.bincount(chunk, minlength=total)
    chunk_clip = _clip_of(chunk_offsets)
    index = np.arange(total) - chunk_offsets[chunk_clip]
    return Spans(
        start_frame=(index * length).astype(np.int32),
        end_frame=((index + 1) * length - 1).astype(np.int32),
        keys=maj_keys,
        mouse=maj_mouse,
        agreement=share.astype(np.float32),
        offsets=chunk_offsets,
        vocabulary=config.vocabulary,
    )


def segments(key_codes, mouse_codes, config: QuantizeConfig = QuantizeConfig()) -> list[dict]:
    """Runs of one (keys, mouse) label at least `min_segment_frames` long, as SEGMENT_TYPE dicts."""
    return segment_runs(BatchLabels.single(key_codes, mouse_codes), config).to_dicts()


def chunks(key_codes, mouse_codes, config: QuantizeConfig = QuantizeConfig()) -> list[dict]:
    """Consecutive `chunk_frames`-frame chunks with their majority labels and agreement, as SEGMENT_TYPE dicts."""
    return fixed_chunks(BatchLabels.single(key_codes, mouse_codes), config).to_dicts()

"""Many trajectories as one flat array, so every computation is one vectorised pass over a whole batch.

Layout: structure of arrays. `columns[4*r + c]` holds matrix entry (r, c) of every pose of every clip, back to
back, as one contiguous float64 row. The rule, the validation and the metrics then run as a few dozen 1-D
multiply-adds over ~10^5-10^6 contiguous values; measured on 360k poses this is ~10x faster than einsum or fancy
indexing on an (M, 4, 4) array, where each op walks 4x4 blocks with tiny inner loops.

Pairs of consecutive poses are formed over the whole flat array and the pairs that straddle two clips are masked
out afterwards, which is cheaper than gathering pair indices and guarantees no step mixes two clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TrajectoryBatch:
    columns: np.ndarray  # float64 (16, M)
    lengths: np.ndarray  # int64 (n_clips,): poses per clip

    @classmethod
    def from_list(cls, poses_list: Sequence[np.ndarray]) -> "TrajectoryBatch":
        arrays = [np.asarray(p) for p in poses_list]
        for i, p in enumerate(arrays):
            if p.ndim != 3 or p.shape[1:] != (4, 4):
                raise ValueError(f"trajectory {i} has shape {p.shape}, expected (N, 4, 4)")
        lengths = np.array([len(p) for p in arrays], np.int64)
        columns = np.empty((16, int(lengths.sum())))  # C order: each component row contiguous
        if arrays:
            np.concatenate([p.reshape(len(p), 16).T for p in arrays], axis=1, out=columns)
        return cls(columns, lengths)

    def entry(self, row: int, col: int) -> np.ndarray:
        return self.columns[4 * row + col]

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def clip_of_frame(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.lengths)), self.lengths)

    def pair_inside(self) -> np.ndarray:
        """bool (M-1,): frames i and i+1 belong to the same clip."""
        inside = np.ones(max(self.columns.shape[1] - 1, 0), bool)
        last = np.cumsum(self.lengths)[self.lengths > 0] - 1
        inside[last[last < len(inside)]] = False
        return inside

    def _take_frames(self, frames: np.ndarray, lengths: np.ndarray) -> "TrajectoryBatch":
        return TrajectoryBatch(self.columns.take(frames, axis=1), lengths.astype(np.int64))

    def subsample(self, stride: int) -> "TrajectoryBatch":
        """Each clip's P[::stride]."""
        if stride == 1:
            return self
        n_sub = (self.lengths + stride - 1) // stride
        sub_starts = np.concatenate([[0], np.cumsum(n_sub)[:-1]])
        clip = np.repeat(np.arange(len(n_sub)), n_sub)
        local = np.arange(n_sub.sum()) - sub_starts[clip]
        return self._take_frames(self.starts[clip] + local * stride, n_sub)

    def select(self, keep: np.ndarray) -> "TrajectoryBatch":
        """The clips where `keep` (bool per clip) is true."""
        return self._take_frames(np.flatnonzero(np.repeat(keep, self.lengths)), self.lengths[keep])

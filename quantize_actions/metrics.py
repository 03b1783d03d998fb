"""Continuous motion summaries of a trajectory, as Yume-1.0 put into its captions (FACTS §3).

- speed: mean |p_{i+1} - p_i| * fps over all consecutive frames (p = camera centre, P[:3, 3]). Sekai translations
  are scaled per video to +-1, so this is in normalised units per second, comparable within a video only.
- turn_deg: mean angle between consecutive displacement vectors, skipping pairs where either displacement is shorter
  than 1e-6 (Yume's cut-off): a standing camera has no heading, and its jitter would read as random turns.
- view_rotation_deg: mean angle between consecutive camera z axes (R[:, 2], the viewing direction).
A mean over no pairs (a still camera, a one-pose clip) is 0.0, which is what Yume's caption code writes then.
Yume's code also averages speed only over displacements that enter a turn pair; we follow the FACTS definition and
average all of them. Angles are atan2(|u x v|, u.v), exact for tiny angles where arccos(u.v) is not.
All frames are used (no stride): these describe the motion itself, not the action labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from quantize_actions.batch import TrajectoryBatch

MIN_DISPLACEMENT = 1e-6


def _angle_deg(u, v) -> np.ndarray:
    """Angles between vectors given as 3 component rows each."""
    cross = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    dot = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    return np.degrees(np.arctan2(np.sqrt(cross[0] ** 2 + cross[1] ** 2 + cross[2] ** 2), dot))


def _mean_per_clip(values: np.ndarray, mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mean of values[mask] over each clip's index range [starts[c], starts[c+1]); 0.0 where the mask is empty.

    np.add.reduceat sums each clip's own range only, so a clip's result does not depend on which other clips share
    its batch (a cumulative-sum difference would, in the last bits).
    """
    n = len(values)
    if n == 0:
        return np.zeros(len(starts))
    bounds = np.minimum(np.append(starts, n), n)
    nonempty = np.diff(bounds) > 0
    first = np.minimum(bounds[:-1], n - 1)  # reduceat needs valid indices; empty ranges are zeroed below
    total = np.where(nonempty, np.add.reduceat(np.where(mask, values, 0.0), first), 0.0)
    count = np.where(nonempty, np.add.reduceat(mask.astype(np.int64), first), 0)
    return np.divide(total, count, out=np.zeros(len(count)), where=count > 0)


def motion_metrics_batch(batch: TrajectoryBatch, fps: float = 30.0) -> dict[str, np.ndarray]:
    """speed, turn_deg, view_rotation_deg (float64, one value per clip) in one pass over the batch.

    Pair i is frames (i, i+1) and turn pair i is displacements (i, i+1); both belong to the clip of frame i, so
    each clip's pairs start at its first frame index.
    """
    starts = batch.starts
    inside = batch.pair_inside()
    disp = [np.diff(batch.entry(r, 3)) for r in range(3)]
    dist = np.sqrt(disp[0] ** 2 + disp[1] ** 2 + disp[2] ** 2)
    speed = _mean_per_clip(dist, inside, starts) * fps

    moving = inside & (dist >= MIN_DISPLACEMENT)
    turn_angles = _angle_deg([d[:-1] for d in disp], [d[1:] for d in disp])
    turn = _mean_per_clip(turn_angles, moving[:-1] & moving[1:], starts)

    z = [batch.entry(r, 2) for r in range(3)]
    view = _mean_per_clip(_angle_deg([c[:-1] for c in z], [c[1:] for c in z]), inside, starts)
    return {"speed": speed, "turn_deg": turn, "view_rotation_deg": view}


def motion_metrics_many(poses_list: Sequence[np.ndarray], fps: float = 30.0) -> dict[str, np.ndarray]:
    return motion_metrics_batch(TrajectoryBatch.from_list(poses_list), fps)


def motion_metrics(poses: np.ndarray, fps: float = 30.0) -> dict[str, float]:
    return {k: float(v[0]) for k, v in motion_metrics_many([poses], fps).items()}

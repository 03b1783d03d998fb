"""Trajectory checks: the ways monocular pose estimation (MegaSaM, for Sekai) is known to fail, flagged per clip.

A broken trajectory is labelled like any other, so a clip whose poses jitter, jump or freeze gets confident-looking
actions that describe the estimator, not the camera. Each check compares the clip with its own motion (Sekai
scales every video's translations to +-1, so no absolute distance means the same in two clips):

- noise level sigma: the clip's median second difference of position |p[i+1] - 2 p[i] + p[i-1]| (the error of a
  constant-velocity prediction) over 3.77, its median for isotropic noise of sd sigma per axis.
- moving windows: 0.5 s (`PATH_FRAMES`) displacements |p[i+15] - p[i]| beyond what noise alone reaches 99% of the
  time (4.76 sigma). A clip *moves* when at least 5% of its windows do (noise alone puts ~1% there). Its path
  speed is their median displacement per frame, its typical step the median frame-to-frame step where they start;
  so a clip that stands still for most of its length is still measured against its walking.
- jitter: positions scatter around the path. The median prediction error over a block of `jitter_window` frames
  (blocks on two grids half a block apart; a median, so one bad frame or a jump is not jitter), in path steps,
  exceeds `jitter_ratio` somewhere in the clip. Clean walks stay near or under 1 (Yume's 63 fixtures: at most 1.0;
  generated walks with pose noise of 0.3 of a step: under 2); noise of one step per axis gives ~3.8. Only a moving
  clip is judged: a camera that never moves beyond its own noise has no path to scatter around (and the heading
  mode labels it None).
- jump: one frame-to-frame step longer than `jump_ratio` times the larger of the typical step and the median step
  of its 17-step block (so a smooth speed-up is not a jump). Walking stays under ~2.6, noise of a step per axis
  (which also lengthens the typical step) ~2.5.
- frozen: `frozen_frames` or more poses in a row that do not change (translation under `frozen_share` of a
  typical step and rotation under that share of the clip's median rotation step), while the clip changes elsewhere:
  what an estimator that lost track writes. Standing still is not frozen: estimation noise still moves the pose by a
  sizeable share of a step.
The figures behind each verdict (the ratios and the frame where each is worst) go beside the flags, so a person
can find the place in the video. All of it is flat-array arithmetic over a whole batch (`perclip.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.config import TRAJECTORY_FLAGS, CheckConfig, QuantizeConfig
from quantize_actions.heading import MOVING_SHARE, SECOND_DIFFERENCE_MEDIAN
from quantize_actions.perclip import block_medians, per_clip_max, per_clip_median
from yume_core.manifest import DROPPED, OK, TRAJECTORY_FIGURES_TYPE, mark_each

PATH_FRAMES = 15  # the baseline of a moving window (0.5 s at 30 fps): noise does not grow with it, motion does
STEP_NOISE_P99 = 3.368 * np.sqrt(2.0)  # 99th percentile of a 3-d chi norm, times sqrt(2): a noisy displacement
JUMP_NEIGHBOURS = 17  # steps in the neighbourhood median a jump is also measured against (+-8 frames)


@dataclass(frozen=True)
class CheckResult:
    """Per clip: the flags (a bool column per check) and the figures behind them."""

    flags: np.ndarray  # bool (n_clips, len(TRAJECTORY_FLAGS))
    step: np.ndarray  # float64: typical frame-to-frame step
    path_step: np.ndarray  # float64: path speed per frame over moving windows (NaN: the clip does not move)
    jitter: np.ndarray  # float64: worst rolling median prediction error, in path steps (NaN: not judged)
    jitter_frame: np.ndarray  # int64: centre frame of that window (-1: none)
    jump: np.ndarray  # float64: longest step, in typical steps
    jump_frame: np.ndarray  # int64: the frame that step arrives at (-1: none)
    frozen_frames: np.ndarray  # int64: longest run of unchanged poses, in frames (0: none)
    frozen_frame: np.ndarray  # int64: its first frame (-1: none)

    def flag_lists(self) -> list[list[str]]:
        return [[f for f, on in zip(TRAJECTORY_FLAGS, row) if on] for row in self.flags]

    def to_arrow(self) -> tuple[pa.ListArray, pa.StructArray]:
        """`trajectory_flags` (list<string>, [] when clean) and `trajectory_figures` (TRAJECTORY_FIGURES_TYPE)."""
        names = pa.array(TRAJECTORY_FLAGS, pa.string())
        clip, flag = np.nonzero(self.flags)  # row-major: each clip's flags in TRAJECTORY_FLAGS order
        offsets = np.concatenate([[0], np.cumsum(np.bincount(clip, minlength=len(self.flags)))]).astype(np.int32)
        flags = pa.ListArray.from_arrays(pa.array(offsets), names.take(pa.array(flag, pa.int64())))

        def number(x, kind):
            return pa.array(x, kind, mask=np.isnan(x))

        def frame(x):
            return pa.array(x, pa.int32(), mask=x < 0)

        figures = pa.StructArray.from_arrays(
            [number(self.step, pa.float64()), number(self.path_step, pa.float64()),
             number(self.jitter, pa.float32()), frame(self.jitter_frame), number(self.jump, pa.float32()),
             frame(self.jump_frame), pa.array(self.frozen_frames, pa.int32()), frame(self.frozen_frame)],
            fields=list(TRAJECTORY_FIGURES_TYPE),
        )
        return flags, figures


def _norm(rows) -> np.ndarray:
    return np.sqrt(sum(r * r for r in rows))


def check_batch(batch: TrajectoryBatch, config: CheckConfig = CheckConfig()) -> CheckResult:
    """Run every check on every clip of the batch (all frames: the checks describe the poses, not the labels)."""
    n_clips, m = len(batch.lengths), batch.columns.shape[1]
    frame_clip = batch.clip_of_frame
    local = np.arange(m) - batch.starts[frame_clip]
    p = [batch.entry(r, 3) for r in range(3)]

    # frame-to-frame steps (step i: frame i -> i + 1) within clips, and their rotation; differences are taken over
    # the whole flat batch (contiguous slices) and the few that straddle two clips dropped afterwards
    step_at = np.flatnonzero(batch.pair_inside())
    step_clip = frame_clip[step_at]
    steps = _norm([np.diff(q) for q in p])[step_at]
    turn = _norm([np.diff(batch.entry(r, c)) for r in range(3) for c in range(3)])[step_at]
    turn /= np.sqrt(2.0)  # |R' - R|_F = 2 sqrt(2) sin(angle / 2): about the angle times sqrt(2)

    # second differences (at frame i, between steps i - 1 and i) and the noise level they imply
    mid = step_at[:-1][np.diff(step_at) == 1] + 1
    mid_clip = frame_clip[mid]
    second = _norm([q[2:] - 2 * q[1:-1] + q[:-2] for q in p])[mid - 1] if m > 2 else np.zeros(0)
    sigma = np.nan_to_num(per_clip_median(second, mid_clip, n_clips) / SECOND_DIFFERENCE_MEDIAN)

    # moving windows, path speed, typical step (while moving; over all steps in a clip that never moves)
    k = PATH_FRAMES
    span_at = np.flatnonzero(frame_clip[:-k] == frame_clip[k:]) if m > k else np.zeros(0, np.int64)
    span_clip = frame_clip[span_at]
    window = _norm([q[k:] - q[:-k] for q in p])[span_at] if m > k else np.zeros(0)
    moving = window > STEP_NOISE_P99 * sigma[span_clip]
    n_moving = np.bincount(span_clip[moving], minlength=n_clips)
    moves = (n_moving > 0) & (n_moving >= MOVING_SHARE * np.bincount(span_clip, minlength=n_clips))
    path_step = np.where(moves, per_clip_median(window / k, span_clip, n_clips, moving), np.nan)
    starts_moving = np.zeros(m, bool)
    starts_moving[span_at[moving]] = True  # the steps that start a moving window
    typical = np.nan_to_num(per_clip_median(steps, step_clip, n_clips, starts_moving[step_at] | ~moves[step_clip]))

    # jitter: medians of the prediction error over blocks of frames (two grids, half a block apart), moving clips
    w = config.jitter_window
    centres, medians = [], []
    for offset in (0, w // 2):
        _, (centre, median) = block_medians(second, moves[mid_clip], mid_clip, n_clips, w, offset)
        centres.append(centre[~np.isnan(median)])
        medians.append(median[~np.isnan(median)])
    order = np.argsort(np.concatenate(centres), kind="stable")  # clip order, for the per-clip maximum
    centre, median = np.concatenate(centres)[order], np.concatenate(medians)[order]
    best, at = per_clip_max(median / path_step[mid_clip[centre]], mid_clip[centre], n_clips)
    jitter = np.where(at >= 0, best, np.nan)
    jitter_frame = np.where(at >= 0, local[mid[centre[np.maximum(at, 0)]]] if len(centre) else -1, -1)

    # jump: the longest step against the typical step and its neighbourhood's (a smooth speed-up is not a jump)
    neighbourhood, _ = block_medians(steps, np.ones(len(steps), bool), step_clip, n_clips, JUMP_NEIGHBOURS)
    reference = np.fmax(typical[step_clip], neighbourhood)
    ratio = np.divide(steps, reference, out=np.zeros(len(steps)), where=reference > 0)
    best, at = per_clip_max(ratio, step_clip, n_clips)
    jump = np.where(at >= 0, best, np.nan)
    jump_frame = np.where(at >= 0, local[step_at[np.maximum(at, 0)] + 1] if len(step_at) else -1, -1)

    # frozen: runs of unchanged poses while the clip changes elsewhere
    turn_typical = np.nan_to_num(per_clip_median(turn, step_clip, n_clips))
    still = (steps <= config.frozen_share * typical[step_clip]) & (
        turn <= config.frozen_share * turn_typical[step_clip])
    frozen_frames, first_still = _longest_runs(still, step_at, step_clip, n_clips)
    frozen_frame = np.where(first_still >= 0, local[np.maximum(first_still, 0)], -1)
    changes = np.bincount(step_clip[~still], minlength=n_clips) > 0

    flags = np.stack([np.nan_to_num(jitter) > config.jitter_ratio,
                      np.nan_to_num(jump) > config.jump_ratio,
                      (frozen_frames >= config.frozen_frames) & changes], axis=1)
    return CheckResult(flags, typical, path_step, jitter, jitter_frame, jump, jump_frame, frozen_frames, frozen_frame)


def _longest_runs(on: np.ndarray, step_at: np.ndarray, clip: np.ndarray, n_clips: int):
    """Per clip, the longest run of consecutive `on` steps, in frames (steps + 1; 0 when none), and the flat index
    of its first frame (-1 when none). `step_at`: each step's first frame."""
    frames, first_frame = np.zeros(n_clips, np.int64), np.full(n_clips, -1, np.int64)
    if not on.any():
        return frames, first_frame
    follows = np.concatenate([[False], on[:-1] & (np.diff(step_at) == 1)])  # continues the run of the step before
    idx = np.flatnonzero(on)
    run_starts = idx[~follows[idx]]
    lengths = np.diff(np.append(np.searchsorted(idx, run_starts), len(idx)))
    best, at = per_clip_max(lengths.astype(float), clip[run_starts], n_clips)
    has = at >= 0
    frames[has] = best[has].astype(np.int64) + 1
    first_frame[has] = step_at[run_starts[at[has]]]
    return frames, first_frame


def check_many(poses_list, config: CheckConfig = CheckConfig()) -> CheckResult:
    return check_batch(TrajectoryBatch.from_list(poses_list), config)


def flag_counts(flag_lists) -> dict[str, int]:
    """How many clips carry each flag, and how many carry any (`flagged`) out of those checked (`checked`, rows
    whose list is not null): for the summary and the card. Takes an Arrow list array or Python lists."""
    lists = flag_lists if isinstance(flag_lists, (pa.Array, pa.ChunkedArray)) else pa.array(
        list(flag_lists), pa.list_(pa.string()))
    checked = len(lists) - lists.null_count
    flat = pc.list_flatten(lists)
    counts = {f: int(pc.sum(pc.equal(flat, f)).as_py() or 0) for f in TRAJECTORY_FLAGS}
    flagged = int(pc.sum(pc.greater(pc.fill_null(pc.list_value_length(lists), 0), 0)).as_py() or 0)
    return {**counts, "flagged": flagged, "checked": checked}


def flag_message(flag: str, figures: dict, config: CheckConfig) -> str:
    """The sentence a person acts on for a clip dropped by `flag`, with the figures that decided it."""
    if flag == "jitter":
        return (f"trajectory jitter: around frame {figures['jitter_frame']} the median constant-velocity prediction "
                f"error over {config.jitter_window} frames is {figures['jitter']:.2f} path steps (limit "
                f"{config.jitter_ratio:g}); the pose estimate scatters around the path, so its actions describe the "
                "estimator: re-estimate the poses, or keep the clip by removing jitter from actions.drop_flags")
    if flag == "jump":
        return (f"trajectory jump: the step into frame {figures['jump_frame']} is {figures['jump']:.1f} typical steps "
                f"long (limit {config.jump_ratio:g}); the pose estimate jumps there: re-estimate the poses or cut the "
                "clip at that frame, or keep it by removing jump from actions.drop_flags")
    return (f"trajectory frozen: {figures['frozen_frames']} poses from frame {figures['frozen_frame']} do not change "
            f"(limit {config.frozen_frames}) while the clip moves elsewhere, as when the estimator loses track: "
            "re-estimate the poses or cut the clip there, or keep it by removing frozen from actions.drop_flags")


def drop_flagged(table: pa.Table, config: QuantizeConfig) -> pa.Table:
    """Rows still ok whose `trajectory_flags` hold a flag of `config.drop_flags` become dropped with reason
    `trajectory_<flag>` (the first such flag in TRAJECTORY_FLAGS order) and a message with its figures. Only the
    flagged rows are turned into Python objects: the rest is Arrow compute over the columns."""
    if not config.drop_flags or table.num_rows == 0:
        return table
    lists = table["trajectory_flags"].combine_chunks()
    flat = pc.list_flatten(lists)
    hit = pc.is_in(flat, value_set=pa.array(config.drop_flags, pa.string())).to_numpy(zero_copy_only=False)
    rows = np.unique(pc.list_parent_indices(lists).to_numpy()[hit])
    ok = pc.fill_null(pc.equal(table["status"], OK), False).to_numpy(zero_copy_only=False)
    rows = rows[ok[rows]]
    if not len(rows):
        return table
    reasons, messages = [None] * table.num_rows, [None] * table.num_rows
    picked = table.take(pa.array(rows)).select(["trajectory_flags", "trajectory_figures"]).to_pylist()
    for row, record in zip(rows, picked):
        flag = next(f for f in TRAJECTORY_FLAGS if f in config.drop_flags and f in record["trajectory_flags"])
        reasons[row] = f"trajectory_{flag}"
        messages[row] = flag_message(flag, record["trajectory_figures"], config.checks)
    return mark_each(table, reasons, messages, status=DROPPED)

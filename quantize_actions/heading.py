"""The `heading` labelling mode: keys from the direction of motion, mouse from the turning rate, both over short
windows and relative to the clip's own motion.

Why not the published rule: it thresholds every single step at 1e-4 (translation, in Sekai's per-video units) and
1e-3 rad. A walking step is ~1-3e-3, so the sideways sway of a gait (heading sd 4-19 degrees within one of Yume's
own segments) turns almost every forward step into W+A or W+D, and pose-estimation noise of a fraction of a step
turns standing still into random keys. This mode keeps the vocabulary and the thresholds' meaning, and changes what
they are compared with:

- keys: the camera-frame steps (t_x, t_z) are summed over `window_frames` around each step (each step expressed in
  its own camera, so turning within the window does not skew it). Position noise telescopes out of such a sum, so
  its direction is the walking direction in the camera's horizontal plane (x right, z forward). The heading
  atan2(x, z) falls into one of 8 sectors of 45 degrees: W at 0 +-22.5, W+D at 45, D at 90, S+D at 135, S at 180,
  and on round through S+A, A and W+A. A heading within `sector_margin_deg` of a sector edge keeps the sector it
  came from, so a walk that hovers at 22.5 degrees (the fixtures' median heading is 23) does not flicker.
  Keys are None while the windowed speed is under `still_fraction` of the clip's typical walking speed (with the
  `hysteresis` band), or under what the clip's own position noise alone would give (below).
- mouse: the per-step Euler angles the published rule reads (about x: pitch, about y: yaw) are averaged over
  `mouse_window_frames` and compared with the same `rotation_threshold` per frame; a direction turns on above
  threshold*(1+h) and off below threshold*(1-h), so noise around the threshold does not flicker it.

The clip's typical walking speed is the median windowed speed over the steps that move: steps whose windowed
displacement exceeds the 99th percentile that noise alone would reach (and a clip moves only when at least 5% of
its steps do, since noise alone puts ~1% there). The noise level comes from the clip's
second differences of position (a constant-velocity prediction's error: ~3.77 sigma for isotropic noise of sd sigma
per axis, median of a 3-d chi norm), so a clip that never moves beyond its noise is labelled None throughout instead
of taking its noise for walking.

Everything runs over a whole batch as flat arrays (`perclip.py`: window sums and medians whose result for a clip
does not depend on its batch), and every hysteresis is a forward fill of the last decisive step (each clip's first
step is always decisive, so no state crosses from one clip into the next).
"""

from __future__ import annotations

import numpy as np

from quantize_actions.batch import TrajectoryBatch
from quantize_actions.config import QuantizeConfig
from quantize_actions.labels import KEY_TABLE, MOUSE_TABLE
from quantize_actions.perclip import per_clip_median, window_sums
from quantize_actions.rule import BatchLabels, relative_motion
from yume_core.actions import KEY_LABELS

# Isotropic position noise of sd sigma per axis: a second difference has sd sqrt(6) sigma per axis, so its 3-d norm
# has median 1.538 * sqrt(6) sigma; a window's horizontal displacement is the difference of two noisy positions,
# whose 2-d norm stays under 3.035 * sqrt(2) sigma 99% of the time.
SECOND_DIFFERENCE_MEDIAN = 1.538 * np.sqrt(6.0)
WINDOW_NOISE_P99 = 3.035 * np.sqrt(2.0)
# share of a clip's windows that must move beyond its noise for the clip to count as moving at all: noise alone
# puts ~1% of windows past its 99th percentile, and those must not define a walking speed
MOVING_SHARE = 0.05
# sector k (heading ~ 45k degrees) -> (sign of forward motion t_z, sign of sideways motion t_x)
SECTOR_SIGNS = np.array([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)], np.int8)
SECTOR_KEYS = tuple(KEY_LABELS[KEY_TABLE[z + 1, x + 1]] for z, x in SECTOR_SIGNS)  # W, W+D, D, S+D, S, S+A, A, W+A


def _odd_steps(frames: int, stride: int) -> int:
    """A window of `frames` frames in subsampled steps, made odd so that it is centred on its step."""
    steps = max(1, round(frames / stride))
    return steps if steps % 2 else steps + 1


def hysteresis(x: np.ndarray, on: np.ndarray | float, off: np.ndarray | float, first: np.ndarray) -> np.ndarray:
    """bool per step: on once x > on, off again once x < off, unchanged in between. A clip's first step with x in
    the band decides by the band's middle, so every clip starts from its own values."""
    on, off = np.broadcast_to(on, x.shape), np.broadcast_to(off, x.shape)
    event = np.full(len(x), -1, np.int8)
    event[x < off] = 0
    event[x > on] = 1
    undecided = first & (event < 0)
    event[undecided] = x[undecided] > 0.5 * (on[undecided] + off[undecided])
    return _fill_forward(event >= 0, event) == 1


def _fill_forward(decisive: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values at the last decisive step at or before each step (the first step of every clip must be decisive)."""
    last = np.maximum.accumulate(np.where(decisive, np.arange(len(decisive)), 0))
    return values[last]


def _signed_hysteresis(rate: np.ndarray, cutoff: float, band: float, first: np.ndarray) -> np.ndarray:
    """-1, 0 or +1 per step: each direction is its own on/off hysteresis; both cannot be on at once, since turning
    one on (|rate| > cutoff*(1+band)) is below the other's off level."""
    on, off = cutoff * (1 + band), cutoff * (1 - band)
    return hysteresis(rate, on, off, first).astype(np.int8) - hysteresis(-rate, on, off, first).astype(np.int8)


def _sectors(heading_deg: np.ndarray, decisive_start: np.ndarray, margin: float) -> np.ndarray:
    """Sector 0-7 per step, keeping the previous sector while the heading is within `margin` of its edge."""
    nearest = np.round(heading_deg / 45.0)
    offset = heading_deg - 45.0 * nearest  # in [-22.5, 22.5]
    sector = nearest.astype(np.int64) % 8
    neighbour = (sector + np.where(offset >= 0, 1, -1)) % 8  # the sector across the nearer edge
    decisive = decisive_start | (np.abs(offset) <= 22.5 - margin)
    last = _fill_forward(decisive, sector)
    return np.where((last == sector) | (last == neighbour), last, sector)


def heading_batch(batch: TrajectoryBatch, config: QuantizeConfig = QuantizeConfig()) -> BatchLabels:
    """Per-step key and mouse codes of every clip in the batch under the `heading` mode; same layout as the
    published rule's `quantize_batch` (ceil(N/stride) - 1 steps per clip)."""
    hc = config.heading
    sub = batch.subsample(config.stride)
    inside = sub.pair_inside()
    t_x, t_z, angle_x, angle_y = (v[inside] for v in relative_motion(sub))
    n_clips = len(sub.lengths)
    steps = np.maximum(sub.lengths - 1, 0)
    offsets = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
    if offsets[-1] == 0:
        return BatchLabels(np.zeros(0, np.uint8), np.zeros(0, np.uint8), offsets)
    clip = np.repeat(np.arange(n_clips), steps)
    first = np.zeros(len(clip), bool)
    first[offsets[:-1][steps > 0]] = True

    # keys: windowed displacement in the camera's horizontal plane
    (sx, sz), count = window_sums([t_x, t_z], clip, _odd_steps(hc.window_frames, config.stride))
    speed = np.hypot(sx, sz) / count
    noise = _noise_sigma(sub, clip, n_clips)
    noise_speed = WINDOW_NOISE_P99 * noise[clip] / count
    above_noise = speed > noise_speed
    n_above = np.bincount(clip[above_noise], minlength=n_clips)
    typical = np.where(n_above >= np.maximum(MOVING_SHARE * steps, 1),
                       per_clip_median(speed, clip, n_clips, above_noise), np.nan)
    relative = np.where(above_noise, speed / np.where(np.isnan(typical), np.inf, typical)[clip], 0.0)
    band = hc.still_fraction * hc.hysteresis
    moving = hysteresis(relative, hc.still_fraction + band, hc.still_fraction - band, first)
    started = moving & (first | ~np.concatenate([[False], moving[:-1]]))
    sector = _sectors(np.degrees(np.arctan2(sx, sz)), first | started, hc.sector_margin_deg)
    signs = np.where(moving[:, None], SECTOR_SIGNS[sector], 0)
    keys = KEY_TABLE[signs[:, 0] + 1, signs[:, 1] + 1]

    # mouse: windowed rotation rate per frame against the published threshold, with hysteresis
    (ax, ay), count_m = window_sums([angle_x, angle_y], clip, _odd_steps(hc.mouse_window_frames, config.stride))
    per_frame = count_m * config.stride
    vertical = _signed_hysteresis(ax / per_frame, config.rotation_threshold, hc.hysteresis, first)
    horizontal = _signed_hysteresis(ay / per_frame, config.rotation_threshold, hc.hysteresis, first)
    mouse = MOUSE_TABLE[vertical + 1, horizontal + 1]
    return BatchLabels(keys.astype(np.uint8), mouse.astype(np.uint8), offsets)


def _noise_sigma(sub: TrajectoryBatch, clip: np.ndarray, n_clips: int) -> np.ndarray:
    """Per clip, the position noise sd per axis that its second differences imply (0 for clips under 3 poses).

    Real acceleration (gait, turns) counts as noise here too, which only makes the noise floor conservative:
    walking speed stays far above it (the fixtures' second differences are 0.2-0.8 of a step)."""
    p = [sub.entry(r, 3) for r in range(3)]
    second = np.sqrt(sum((q[2:] - 2 * q[1:-1] + q[:-2]) ** 2 for q in p)) if len(p[0]) > 2 else np.zeros(0)
    inside = sub.pair_inside()
    valid = inside[1:] & inside[:-1] if len(inside) > 1 else np.zeros(0, bool)
    frame_clip = sub.clip_of_frame[1:-1] if len(p[0]) > 2 else np.zeros(0, np.int64)
    sigma = per_clip_median(second[valid], frame_clip[valid], n_clips) / SECOND_DIFFERENCE_MEDIAN
    return np.nan_to_num(sigma, nan=0.0)

"""Camera trajectories whose actions are known: a forward model from actions to poses, and generated walks of known
intent with gait wobble and pose-estimation noise, to measure how well a labelling mode recovers what was meant.

Real trajectories carry no ground truth (Yume's 63 fixtures are labelled by the published rule itself), so the
agreement of a mode with intent can only be measured on walks made from an intent:

- `poses_from_actions`: each key moves a fixed step in the camera's horizontal plane (a diagonal by 1/sqrt(2) on
  each axis) and each mouse direction turns by a fixed rate per frame, as Matrix-Game 3.0's forward model does. On
  these, both modes must give the actions back (the round trip the tests hold them to).
- `intent_walk`: segments of 60-140 frames, each walking in one heading sector, standing still, or turning at
  2.5-4e-3 rad/frame (on the spot or walking forward); plus what a walking camera adds: lateral sway (heading sd ~8
  degrees around the intended sector, at the gait cycle's ~1 Hz), head yaw wobble (~4e-4 rad/frame), bob, speed
  changes eased over a few frames; then optional position noise (in steps) and rotation noise (in radians), as a
  pose estimator adds them. Steps are 1.5-3e-3 per frame, like the fixtures' walks in Sekai's units. A segment's
  intended heading lies up to 15 degrees off its sector's centre (`spread_deg`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantize_actions.heading import SECTOR_KEYS
from quantize_actions.labels import MOUSE_TABLE
from quantize_actions.segments import fixed_chunks
from quantize_actions.config import QuantizeConfig
from quantize_actions.rule import BatchLabels
from yume_core.actions import KEY_LABELS, MOUSE_LABELS

FPS = 30.0
# key label -> direction (x right, z forward) in the camera's horizontal plane, diagonals at 45 degrees
KEY_DIRECTIONS = {
    label: np.array([x, z]) / max(np.hypot(x, z), 1.0)
    for label, (x, z) in {"None": (0, 0), "W": (0, 1), "S": (0, -1), "D": (1, 0), "A": (-1, 0),
                          "W+D": (1, 1), "W+A": (-1, 1), "S+D": (1, -1), "S+A": (-1, -1)}.items()
}
# mouse label -> (pitch sign: up positive, yaw sign: right positive), the published rule's reading of the angles
MOUSE_DIRECTIONS = {
    "·": (0, 0), "→": (0, 1), "←": (0, -1), "↑": (1, 0), "↓": (-1, 0),
    "↑→": (1, 1), "↑←": (1, -1), "↓→": (-1, 1), "↓←": (-1, -1),
}


def _rotations(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """(n, 3, 3) Ry(yaw) @ Rx(pitch): OpenCV camera axes, yaw about the down axis (positive turns right), pitch
    about the right axis (positive tilts up); scipy's extrinsic "xyz" Euler angles of it are (pitch, yaw, 0)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r = np.zeros((len(yaw), 3, 3))
    r[:, 0, 0], r[:, 0, 1], r[:, 0, 2] = cy, sy * sp, sy * cp
    r[:, 1, 1], r[:, 1, 2] = cp, -sp
    r[:, 2, 0], r[:, 2, 1], r[:, 2, 2] = -sy, cy * sp, cy * cp
    return r


def _poses(rotations: np.ndarray, positions: np.ndarray) -> np.ndarray:
    poses = np.zeros((len(positions), 4, 4))
    poses[:, :3, :3] = rotations
    poses[:, :3, 3] = positions
    poses[:, 3, 3] = 1.0
    return poses


def poses_from_actions(keys, mouse, step: float = 2e-3, rate: float = 3e-3) -> np.ndarray:
    """(len(keys) + 1, 4, 4) camera-to-world poses: step i moves by `step` in the direction of keys[i] in the
    camera frame of pose i, then turns by `rate` per mouse direction (the relative rotation is Ry(yaw) Rx(pitch),
    whose Euler angles are exactly what the published rule reads). Labels are strings or codes."""
    keys = [KEY_LABELS[k] if not isinstance(k, str) else k for k in keys]
    mouse = [MOUSE_LABELS[m] if not isinstance(m, str) else m for m in mouse]
    if len(keys) != len(mouse):
        raise ValueError(f"keys and mouse differ in length: {len(keys)} and {len(mouse)}")
    local = np.array([(KEY_DIRECTIONS[k][0], 0.0, KEY_DIRECTIONS[k][1]) for k in keys]).reshape(-1, 3) * step
    turn = np.array([MOUSE_DIRECTIONS[m] for m in mouse], float).reshape(-1, 2) * rate
    relative = _rotations(turn[:, 1], turn[:, 0])
    rotations = [np.eye(3)]
    positions = [np.zeros(3)]
    for d, rel in zip(local, relative):  # composing rotations is a running product: inherently sequential
        positions.append(positions[-1] + rotations[-1] @ d)
        rotations.append(rotations[-1] @ rel)
    return _poses(np.array(rotations), np.array(positions))


@dataclass(frozen=True)
class IntentWalk:
    """A generated walk and what it meant, per frame step; steps of one intended segment share `segment`."""

    poses: np.ndarray  # float64 (N, 4, 4)
    keys: np.ndarray  # uint8 (N-1,): intended key code of each step
    mouse: np.ndarray  # uint8 (N-1,)
    segment: np.ndarray  # int (N,): intended segment of each frame


def _smooth(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Unit-sd low-pass noise (Hann-window moving average of white noise)."""
    kernel = np.hanning(width + 2)[1:-1]
    x = np.convolve(rng.standard_normal(n + width), kernel, "valid")[:n]
    return x / x.std()


def _wobble(rng: np.random.Generator, n: int, cycle_hz: float, sd: float, harmonic: int = 1) -> np.ndarray:
    """A sway at the gait's frequency (two thirds of the variance) plus smooth irregularity, of total sd `sd`."""
    t = np.arange(n) / FPS
    sway = np.sqrt(2.0) * np.sin(2 * np.pi * harmonic * cycle_hz * t + rng.uniform(0, 2 * np.pi))
    return sd * (np.sqrt(2 / 3) * sway + np.sqrt(1 / 3) * _smooth(rng, n, 9))


def _plan(rng: np.random.Generator, n_frames: int) -> list[tuple[int, str, int]]:
    """[(frames, keys, turn sign)] covering n_frames: 60-140 frame segments; a walk in one of the 8 sectors
    (half of them), standing (a sixth) or a turn (a third; on the spot or walking forward, equally often)."""
    plan, total = [], 0
    while total < n_frames:
        length = int(rng.integers(60, 141))
        kind = rng.choice(["walk", "still", "turn"], p=[0.5, 1 / 6, 1 / 3])
        if kind == "walk":
            plan.append((length, SECTOR_KEYS[rng.integers(8)], 0))
        elif kind == "still":
            plan.append((length, "None", 0))
        else:
            plan.append((length, str(rng.choice(["None", "W"])), int(rng.choice([-1, 1]))))
        total += length
    return plan


def intent_walk(rng: np.random.Generator, n_frames: int = 600, wobble: bool = True, position_noise: float = 0.0,
                rotation_noise: float = 0.0, spread_deg: float = 15.0) -> IntentWalk:
    """A walk of `n_frames` poses from a random plan (see the module docstring). `position_noise`: sd per axis in
    walking steps; `rotation_noise`: sd per axis in radians; both independent per frame. `spread_deg`: how far from
    its sector's centre a segment's intended heading may lie (uniform; 22.5 reaches the sector's edges, where the
    intent itself is a coin toss once the walker sways)."""
    plan = _plan(rng, n_frames)
    lengths = np.array([p[0] for p in plan])
    segment = np.repeat(np.arange(len(plan)), lengths)[:n_frames]
    direction = np.array([KEY_DIRECTIONS[k] for _, k, _ in plan])[segment]  # (n, 2): x, z
    turn = np.array([t * rng.uniform(2.5e-3, 4e-3) for _, _, t in plan])[segment]
    ease = np.hanning(11)[1:-1] / np.hanning(11)[1:-1].sum()  # speed and turn changes over ~9 frames
    pad = len(ease) // 2

    def eased(x):
        return np.convolve(np.pad(x, (pad, pad), mode="edge"), ease, "valid")

    step = rng.uniform(1.5e-3, 3e-3)
    cycle = rng.uniform(0.8, 1.1)  # gait cycles per second (two steps each)
    # the intended heading lies off the centre line, as real walks do (the fixtures' W+D segments head 9-52 degrees)
    spread = np.radians(rng.uniform(-spread_deg, spread_deg, len(plan)))
    heading = np.arctan2(direction[:, 0], direction[:, 1]) + spread[segment]
    speed = np.hypot(direction[:, 0], direction[:, 1]) * step
    yaw_rate, pitch_rate = turn, np.zeros(n_frames)
    if wobble:
        heading = heading + _wobble(rng, n_frames, cycle, np.radians(8.0))
        speed = speed * (1 + 0.1 * np.sin(2 * np.pi * 2 * cycle * np.arange(n_frames) / FPS))
        yaw_rate = yaw_rate + _wobble(rng, n_frames, cycle, 4e-4)
        pitch_rate = _wobble(rng, n_frames, cycle, 2e-4, harmonic=2)
    yaw = np.concatenate([[0.0], np.cumsum(eased(yaw_rate))[:-1]])
    pitch = np.concatenate([[0.0], np.cumsum(pitch_rate)[:-1]])
    vx, vz = eased(speed * np.sin(heading)), eased(speed * np.cos(heading))
    world = np.stack([vx * np.cos(yaw) + vz * np.sin(yaw), np.zeros(n_frames), -vx * np.sin(yaw) + vz * np.cos(yaw)], 1)
    positions = np.concatenate([np.zeros((1, 3)), np.cumsum(world, axis=0)[:-1]])
    rotations = _rotations(yaw, pitch)
    if position_noise:
        positions = positions + rng.normal(0.0, position_noise * step, positions.shape)
    if rotation_noise:
        from scipy.spatial.transform import Rotation  # here: keeps `import quantize_actions` light

        rotations = rotations @ Rotation.from_rotvec(rng.normal(0.0, rotation_noise, (n_frames, 3))).as_matrix()
    key_codes = np.array([KEY_LABELS.index(k) for _, k, _ in plan], np.uint8)[segment[:-1]]
    mouse_codes = MOUSE_TABLE[1, np.array([t for _, _, t in plan])[segment[:-1]] + 1]
    return IntentWalk(_poses(rotations, positions), key_codes, mouse_codes.astype(np.uint8), segment)


def chunk_agreement(labels: BatchLabels, walks: list[IntentWalk],
                    config: QuantizeConfig = QuantizeConfig()) -> tuple[int, int]:
    """(agreeing, counted): chunks whose majority (keys, mouse) label equals the intent, counting only chunks whose
    frames all lie in one intended segment (a chunk across a change of intent has no single right answer)."""
    got = fixed_chunks(labels, config)
    intent = BatchLabels(np.concatenate([w.keys for w in walks]), np.concatenate([w.mouse for w in walks]),
                         labels.offsets)
    intended = fixed_chunks(intent, config)
    frame_offsets = np.concatenate([[0], np.cumsum([len(w.segment) for w in walks])])
    segment = np.concatenate([w.segment for w in walks])
    clip = np.repeat(np.arange(len(walks)), np.diff(got.offsets))
    first, last = frame_offsets[clip] + got.start_frame, frame_offsets[clip] + got.end_frame
    inside = segment[first] == segment[last]
    same = (got.keys == intended.keys) & (got.mouse == intended.mouse)
    return int((same & inside).sum()), int(inside.sum())

"""Synthetic camera trajectories that look like Sekai walking clips, for tests, benchmarks and demos.

Real trajectories cannot ship in bulk, and uniform random rotations look nothing like walking: the rule's
thresholds (1e-4 per frame, 1e-3 rad per frame) only get exercised if the motion hovers around them. These walk
forward with smoothly varying speed, sideways drift, yaw and pitch rates that cross the thresholds often, stops,
and small roll, and are scaled like Sekai's so that every position axis stays within +-1.
"""

from __future__ import annotations

import numpy as np


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Unit-variance low-pass noise: a Hann-window moving average of white noise."""
    kernel = np.hanning(width + 2)[1:-1]
    x = np.convolve(rng.standard_normal(n + width), kernel, "valid")[:n]
    return x / x.std()


def random_walk_trajectory(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """float64 (n_frames, 4, 4) camera-to-world poses (OpenCV axes: x right, y down, z forward)."""
    from scipy.spatial.transform import Rotation  # here, not at the top: keeps `import quantize_actions` light

    yaw_rate = 2.5e-3 * _smooth_noise(rng, n_frames, 90)
    pitch_rate = 1.2e-3 * _smooth_noise(rng, n_frames, 60)
    roll = 0.01 * _smooth_noise(rng, n_frames, 120)
    pitch = np.clip(np.cumsum(pitch_rate), -0.5, 0.5)
    rot = Rotation.from_euler("YXZ", np.stack([np.cumsum(yaw_rate), pitch, roll], axis=1)).as_matrix()

    moving = np.clip(1.5 + 1.5 * _smooth_noise(rng, n_frames, 240), 0.0, 1.0)  # stops now and then
    local_velocity = np.stack(
        [
            0.25 * _smooth_noise(rng, n_frames, 60),  # sideways drift (D/A)
            0.03 * _smooth_noise(rng, n_frames, 15),  # head bob
            1.0 + 0.8 * _smooth_noise(rng, n_frames, 150),  # forward, sometimes backward (W/S)
        ],
        axis=1,
    ) * moving[:, None]
    positions = np.cumsum(np.einsum("nij,nj->ni", rot, local_velocity), axis=0)
    positions -= positions.mean(axis=0)
    positions /= np.abs(positions).max() + 1e-12  # Sekai: every axis within +-1

    poses = np.zeros((n_frames, 4, 4))
    poses[:, :3, :3] = rot
    poses[:, :3, 3] = positions
    poses[:, 3, 3] = 1.0
    return poses

"""Motion metrics on trajectories whose speed, turn and view rotation are known in closed form."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from quantize_actions import motion_metrics, motion_metrics_many


def poses_from(positions: np.ndarray, rotations: np.ndarray | None = None) -> np.ndarray:
    poses = np.tile(np.eye(4), (len(positions), 1, 1))
    poses[:, :3, 3] = positions
    if rotations is not None:
        poses[:, :3, :3] = rotations
    return poses


def test_straight_line_at_known_speed():
    direction = np.array([1.0, -2.0, 2.0]) / 3.0
    per_frame = 0.01
    poses = poses_from(np.arange(100)[:, None] * per_frame * direction)
    m = motion_metrics(poses, fps=30.0)
    assert m["speed"] == pytest.approx(0.3)
    assert m["turn_deg"] == pytest.approx(0.0, abs=1e-9)
    assert m["view_rotation_deg"] == pytest.approx(0.0, abs=1e-9)
    assert motion_metrics(poses, fps=10.0)["speed"] == pytest.approx(0.1)


def test_constant_yaw_rate_gives_known_view_rotation_and_turn():
    rate = np.radians(0.5)  # per frame
    yaw = Rotation.from_rotvec(np.outer(np.arange(200) * rate, [0.0, 1.0, 0.0])).as_matrix()
    still = motion_metrics(poses_from(np.zeros((200, 3)), yaw))
    assert still["view_rotation_deg"] == pytest.approx(0.5)
    assert still["speed"] == 0.0 and still["turn_deg"] == 0.0  # no displacement: no heading, turn reported as 0
    # walking along the viewing direction while yawing: the path bends by the same angle per frame
    positions = np.cumsum(0.01 * yaw[:, :, 2], axis=0)
    walking = motion_metrics(poses_from(positions, yaw))
    assert walking["turn_deg"] == pytest.approx(0.5)
    assert walking["view_rotation_deg"] == pytest.approx(0.5)
    assert walking["speed"] == pytest.approx(0.3)


def test_circle_gives_known_turn_and_speed():
    n_per_turn, radius = 72, 2.0
    theta = np.arange(150) * 2 * np.pi / n_per_turn
    positions = radius * np.stack([np.cos(theta), np.zeros_like(theta), np.sin(theta)], axis=1)
    m = motion_metrics(poses_from(positions), fps=30.0)
    assert m["turn_deg"] == pytest.approx(360 / n_per_turn)
    assert m["speed"] == pytest.approx(2 * radius * np.sin(np.pi / n_per_turn) * 30.0)
    assert m["view_rotation_deg"] == pytest.approx(0.0, abs=1e-9)


def test_stops_are_skipped_in_turn():
    positions = np.concatenate([np.zeros((10, 3)), np.arange(1, 11)[:, None] * [0.0, 0.0, 0.01]])
    positions[15:, 0] += np.arange(5) * 0.01  # from frame 15 on, move diagonally: one 45-degree bend
    m = motion_metrics(poses_from(positions))
    d = np.diff(positions, axis=0)  # 9 zero-length, then 10 moving: 9 pairs of moving displacements
    u, v = d[9:-1], d[10:]
    cos = np.einsum("ij,ij->i", u, v) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert m["turn_deg"] == pytest.approx(np.degrees(np.arccos(np.clip(cos, -1, 1))).sum() / 9)
    assert m["turn_deg"] == pytest.approx(45 / 9)  # one 45-degree bend among the 9 pairs


def test_batched_equals_single_and_ignores_clip_boundaries():
    rng = np.random.default_rng(3)
    clips = [poses_from(np.cumsum(rng.normal(size=(n, 3)) * 0.01, axis=0) + 5 * i) for i, n in enumerate((40, 2, 77))]
    many = motion_metrics_many(clips)
    for i, poses in enumerate(clips):
        single = motion_metrics(poses)
        for name, value in single.items():
            assert many[name][i] == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert many["turn_deg"][1] == 0.0  # two poses: one displacement, no pair

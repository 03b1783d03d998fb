"""The action rule: conformance on Yume's real segments and agreement with the plain per-step reference."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from quantize_actions import (
    KEY_LABELS,
    MOUSE_LABELS,
    QuantizeConfig,
    load_trajectory,
    load_vocabulary,
    quantize,
    quantize_files,
    quantize_many,
    random_walk_trajectory,
    reference_motion,
    reference_quantize,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"
FIXTURE_FILES = sorted(FIXTURES.glob("*/*.npy"))
MOUSE_WORDS = {"Left": "←", "Right": "→", "Up": "↑", "Down": "↓", "·": "·"}
NEAR = 1e-6  # the only place the fast rule may disagree with the reference (see quantize_actions/rule.py)


def folder_label(path: Path) -> tuple[str, str]:
    """Keys_W_A_Mouse_Left -> ("W+A", "←")."""
    keys, mouse = path.parent.name.removeprefix("Keys_").split("_Mouse_")
    return keys.replace("_", "+"), MOUSE_WORDS[mouse]


def test_fixtures_are_there():
    assert len(FIXTURE_FILES) == 63


def test_every_fixture_step_gets_its_folder_label_in_one_batch():
    poses = [load_trajectory(p) for p in FIXTURE_FILES]
    results = quantize_many(poses)
    assert len(results) == 63
    for path, p, (keys, mouse) in zip(FIXTURE_FILES, poses, results):
        want_keys, want_mouse = folder_label(path)
        assert len(keys) == len(p) - 1
        assert {KEY_LABELS[k] for k in keys} == {want_keys}, path.name
        assert {MOUSE_LABELS[m] for m in mouse} == {want_mouse}, path.name


def test_every_fixture_step_gets_its_folder_label_through_quantize_files():
    table = quantize_files(FIXTURES)
    assert table.num_rows == 63
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 63
    for row in rows:
        want_keys, want_mouse = folder_label(Path(row["path"]))
        assert len(row["keys"]) == row["num_poses"] - 1
        assert set(row["keys"]) == {want_keys} and set(row["mouse"]) == {want_mouse}
        # every fixture is one constant run of 33-70 frames: one segment covering all of it
        assert row["segments"] == [
            {"start_frame": 0, "end_frame": row["num_poses"] - 1, "keys": want_keys, "mouse": want_mouse,
             "agreement": 1.0, "phrase": load_vocabulary("yume15").phrase(want_keys, want_mouse)}
        ]


def assert_matches_reference(poses: np.ndarray, config: QuantizeConfig) -> int:
    """Labels equal, except for steps whose reference value is within NEAR of a threshold; returns how many steps
    were within 10% of a threshold (how hard the input tested the rule)."""
    keys, mouse = quantize(poses, config)
    ref_keys, ref_mouse = reference_quantize(poses, config)
    motion = reference_motion(poses, config.stride)
    cutoff = np.array([config.translation_cutoff] * 2 + [config.rotation_cutoff] * 2)
    gap = np.abs(np.abs(motion) - cutoff)
    assert len(keys) == len(ref_keys) == len(motion)
    assert np.all((keys == ref_keys) | (gap[:, :2] < NEAR).any(axis=1))
    assert np.all((mouse == ref_mouse) | (gap[:, 2:] < NEAR).any(axis=1))
    return int((gap < 0.1 * cutoff).any(axis=1).sum())


@pytest.mark.parametrize(
    "config",
    [QuantizeConfig(), QuantizeConfig(stride=3), QuantizeConfig(translation_threshold=3e-4, rotation_threshold=5e-4)],
    ids=["default", "stride3", "custom-thresholds"],
)
def test_fixtures_match_reference(config):
    for path in FIXTURE_FILES:
        assert_matches_reference(np.load(path), config)


@pytest.mark.parametrize(
    "config",
    [
        QuantizeConfig(),
        QuantizeConfig(stride=3),
        QuantizeConfig(stride=2, translation_threshold=2e-4, rotation_threshold=2e-3),
    ],
    ids=["default", "stride3", "stride2-custom"],
)
def test_random_walks_match_reference(config):
    rng = np.random.default_rng(7)
    near_threshold, seen_keys, seen_mouse = 0, set(), set()
    for i in range(4):
        poses = random_walk_trajectory(900, rng)
        if i % 2:  # as Sekai stores them: float32, orthonormal only to ~1e-7
            poses = poses.astype(np.float32)
        near_threshold += assert_matches_reference(poses, config)
        keys, mouse = quantize(poses, config)
        seen_keys |= set(keys.tolist())
        seen_mouse |= set(mouse.tolist())
    assert near_threshold > 50  # the walks really do hover around the thresholds
    assert len(seen_keys) >= 6 and len(seen_mouse) == 9


def steps_to_poses(rotvecs, translations) -> np.ndarray:
    """Poses whose relative transforms inv(P_i) @ P_{i+1} have the given rotation vectors and translations."""
    poses = [np.eye(4)]
    poses[0][:3, :3] = Rotation.from_euler("y", 0.3).as_matrix()  # an arbitrary, non-identity start
    for rv, t in zip(rotvecs, translations):
        rel = np.eye(4)
        rel[:3, :3] = Rotation.from_rotvec(rv).as_matrix()
        rel[:3, 3] = t
        poses.append(poses[-1] @ rel)
    return np.array(poses)


def test_sign_conventions_and_combinations():
    th, rth = 1e-4, 1e-3
    cases = [  # (rotation vector, translation in camera frame, keys, mouse)
        ((0, 0, 0), (0, 0, 2 * th), "W", "·"),
        ((0, 0, 0), (0, 0, -2 * th), "S", "·"),
        ((0, 0, 0), (2 * th, 0, 0), "D", "·"),
        ((0, 0, 0), (-2 * th, 0, 0), "A", "·"),
        ((0, 0, 0), (2 * th, 0, 2 * th), "W+D", "·"),
        ((0, 0, 0), (-2 * th, 0, 2 * th), "W+A", "·"),
        ((0, 0, 0), (2 * th, 0, -2 * th), "S+D", "·"),
        ((0, 0, 0), (-2 * th, 0, -2 * th), "S+A", "·"),
        ((0, 0, 0), (0, 5 * th, 0), "None", "·"),  # vertical motion has no key
        ((0, 0, 0), (0.5 * th, 0, 0.99 * th), "None", "·"),  # below threshold
        ((0, 2 * rth, 0), (0, 0, 0), "None", "→"),
        ((0, -2 * rth, 0), (0, 0, 0), "None", "←"),
        ((2 * rth, 0, 0), (0, 0, 0), "None", "↑"),
        ((-2 * rth, 0, 0), (0, 0, 0), "None", "↓"),
        ((2 * rth, 2 * rth, 0), (0, 0, 0), "None", "↑→"),
        ((2 * rth, -2 * rth, 0), (0, 0, 0), "None", "↑←"),
        ((-2 * rth, 2 * rth, 0), (0, 0, 0), "None", "↓→"),
        ((-2 * rth, -2 * rth, 0), (0, 0, 0), "None", "↓←"),
        ((0, 0, 5 * rth), (0, 0, 0), "None", "·"),  # roll has no mouse action
        ((0, 0.999 * rth, 0), (0, 0, 1.001 * th), "W", "·"),
    ]
    poses = steps_to_poses([np.array(c[0], float) for c in cases], [np.array(c[1], float) for c in cases])
    keys, mouse = quantize(poses)
    assert [KEY_LABELS[k] for k in keys] == [c[2] for c in cases]
    assert [MOUSE_LABELS[m] for m in mouse] == [c[3] for c in cases]


def test_stride_subsamples_and_scales_thresholds():
    # 0.8e-4 per frame moves 2.4e-4 per stride-3 step: above 1e-4 but below the scaled threshold 3e-4
    slow = steps_to_poses([np.zeros(3)] * 9, [np.array([0, 0, 0.8e-4])] * 9)
    assert [KEY_LABELS[k] for k in quantize(slow, QuantizeConfig(stride=3))[0]] == ["None"] * 3
    fast = steps_to_poses([np.zeros(3)] * 10, [np.array([0, 0, 1.2e-4])] * 10)  # 11 poses
    keys, _ = quantize(fast, QuantizeConfig(stride=3))
    assert [KEY_LABELS[k] for k in keys] == ["W"] * 3  # poses 0, 3, 6, 9 -> 3 steps; pose 10 unused
    assert len(quantize(fast, QuantizeConfig(stride=4))[0]) == 2  # poses 0, 4, 8


def test_batch_never_pairs_poses_of_two_clips():
    # clip 2 starts far away and rotated: a straddling pair would produce a spurious step
    a = steps_to_poses([np.zeros(3)] * 5, [np.array([0, 0, 1e-3])] * 5)
    b = steps_to_poses([np.array([0, 0.01, 0])] * 7, [np.zeros(3)] * 7)
    b[:, :3, 3] += 5.0
    short = steps_to_poses([], [])  # one pose: no steps
    results = quantize_many([a, short, b, a], QuantizeConfig())
    assert [len(k) for k, _ in results] == [5, 0, 7, 5]
    for poses, (keys, mouse) in zip([a, short, b, a], results):
        assert np.array_equal(keys, quantize(poses)[0]) and np.array_equal(mouse, quantize(poses)[1])
    assert set(results[0][0].tolist()) == {KEY_LABELS.index("W")}
    assert set(results[2][1].tolist()) == {MOUSE_LABELS.index("→")}
    assert results[0][0].dtype == np.uint8

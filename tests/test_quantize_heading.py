"""The heading labelling mode: round trips through a forward model, agreement with intent on held-out generated
walks (through the CLI), the fixtures, still cameras, and independence from batching."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from quantize_actions import (
    KEY_LABELS,
    MOUSE_LABELS,
    BatchLabels,
    HeadingConfig,
    QuantizeConfig,
    chunk_agreement,
    intent_walk,
    label,
    label_many,
    load_trajectory,
    poses_from_actions,
    quantize,
)
from quantize_actions.heading import SECTOR_KEYS

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"
HEADING = QuantizeConfig(mode="heading")


def codes(keys, mouse):
    return np.array([KEY_LABELS.index(k) for k in keys], np.uint8), np.array([MOUSE_LABELS.index(m) for m in mouse],
                                                                             np.uint8)


def action_plan(rng, n_segments=12, length=(45, 90)):
    """Runs of one (keys, mouse) action each, every label of the vocabulary possible."""
    keys, mouse = [], []
    for _ in range(n_segments):
        n = int(rng.integers(*length))
        keys += [KEY_LABELS[rng.integers(9)]] * n
        mouse += [MOUSE_LABELS[rng.integers(9)]] * n
    return keys, mouse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_published_gives_every_step_back(seed):
    keys, mouse = action_plan(np.random.default_rng(seed))
    got = quantize(poses_from_actions(keys, mouse))
    np.testing.assert_array_equal(got[0], codes(keys, mouse)[0])
    np.testing.assert_array_equal(got[1], codes(keys, mouse)[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_heading_gives_the_actions_back_away_from_changes(seed):
    """Windows straddle a change of action for half a window on each side; everywhere else every step comes back."""
    keys, mouse = action_plan(np.random.default_rng(seed))
    want_k, want_m = codes(keys, mouse)
    got_k, got_m = label(poses_from_actions(keys, mouse), HEADING)
    change = np.flatnonzero((np.diff(want_k) != 0) | (np.diff(want_m) != 0)) + 1
    near = np.zeros(len(want_k), bool)
    reach = HEADING.heading.window_frames // 2 + 1
    for c in change:
        near[max(c - reach, 0) : c + reach] = True
    assert (~near).sum() > 0.6 * len(near)
    np.testing.assert_array_equal(got_k[~near], want_k[~near])
    np.testing.assert_array_equal(got_m[~near], want_m[~near])


@pytest.mark.parametrize("stride", [2, 3])
def test_heading_with_a_stride_labels_each_subsampled_step(stride):
    keys, mouse = ["W+D"] * 90 + ["S"] * 90, ["·"] * 90 + ["↓←"] * 90
    poses = poses_from_actions(keys, mouse)
    config = QuantizeConfig(mode="heading", stride=stride)
    got_k, got_m = label(poses, config)
    assert len(got_k) == -(-len(poses) // stride) - 1
    assert KEY_LABELS[got_k[5]] == "W+D" and MOUSE_LABELS[got_m[5]] == "·"
    assert KEY_LABELS[got_k[-5]] == "S" and MOUSE_LABELS[got_m[-5]] == "↓←"


def test_every_sector_is_its_key():
    for k, key in enumerate(SECTOR_KEYS):
        angle = np.radians(45 * k + 10)  # off the centre, inside the sector
        n = 80
        poses = np.tile(np.eye(4), (n, 1, 1))
        poses[:, 0, 3] = np.arange(n) * 2e-3 * np.sin(angle)
        poses[:, 2, 3] = np.arange(n) * 2e-3 * np.cos(angle)
        assert {KEY_LABELS[c] for c in label(poses, HEADING)[0]} == {key}


def test_standing_still_under_noise_is_none_and_still():
    """The published rule turns pose noise into keys (the issue: standing still becomes W+D); heading does not."""
    rng = np.random.default_rng(4)
    poses = np.tile(np.eye(4), (300, 1, 1))
    poses[:, :3, 3] = rng.normal(0, 6e-4, (300, 3))  # ~0.3 of a walking step
    keys, mouse = label(poses, HEADING)
    assert set(keys) == {KEY_LABELS.index("None")} and set(mouse) == {MOUSE_LABELS.index("·")}
    assert len(set(quantize(poses)[0])) > 4


def test_fixtures_keep_their_mouse_and_read_as_w_or_their_diagonal():
    """Yume's segments walk 9-52 degrees off the view: the heading mode calls the straighter ones W."""
    files = sorted(FIXTURES.glob("*/*.npy"))
    assert len(files) == 63
    poses = [load_trajectory(f) for f in files]
    keys_by_file = []
    for f, p, (k, m) in zip(files, poses, label_many(poses, HEADING)):
        pub_k, pub_m = quantize(p)
        np.testing.assert_array_equal(m, pub_m)
        assert {KEY_LABELS[c] for c in k} <= {"W", KEY_LABELS[pub_k[0]]}, f.name
        keys_by_file.append(set(k))
    assert sum(KEY_LABELS.index("W") in k for k in keys_by_file) >= 20


def test_labels_do_not_depend_on_the_batch():
    rng = np.random.default_rng(9)
    walks = [intent_walk(rng, int(n), position_noise=0.3, rotation_noise=4e-4).poses for n in (200, 333, 500)]
    together = label_many(walks, HEADING)
    for poses, (k, m) in zip(walks, together):
        alone_k, alone_m = label(poses, HEADING)
        np.testing.assert_array_equal(k, alone_k)
        np.testing.assert_array_equal(m, alone_m)


def test_the_cli_offers_exactly_the_modes_and_flags():
    from pipelines import cli_actions
    from quantize_actions import MODES, TRAJECTORY_FLAGS

    assert cli_actions.MODES == MODES and cli_actions.FLAGS == TRAJECTORY_FLAGS


def test_mode_is_validated_and_recorded():
    with pytest.raises(ValueError, match="mode"):
        QuantizeConfig(mode="sectors")
    with pytest.raises(ValueError, match="still_fraction"):
        HeadingConfig(still_fraction=1.5)
    assert QuantizeConfig().to_dict()["mode"] == "published"
    assert HEADING.to_dict()["heading"]["window_frames"] == 15


@pytest.mark.parametrize("position_noise, rotation_noise, goal",
                         [(0.0, 0.0, 0.95), (0.15, 2e-4, 0.95), (0.3, 4e-4, 0.90)],
                         ids=["wobble", "noise-low", "noise-high"])
def test_cli_heading_mode_meets_the_agreement_goals_on_held_out_walks(tmp_path, position_noise, rotation_noise, goal):
    """`yume-data actions DIR --mode heading` on generated walks of known intent (seeds never used to tune it)."""
    from pipelines.cli import main

    rng = np.random.default_rng(20260 + int(position_noise * 100))
    walks = [intent_walk(rng, 600, position_noise=position_noise, rotation_noise=rotation_noise) for _ in range(12)]
    for i, w in enumerate(walks):
        np.save(tmp_path / f"walk{i:02d}.npy", w.poses.astype(np.float32))
    out = tmp_path / "labels.parquet"
    result = CliRunner().invoke(main, ["actions", str(tmp_path), "--mode", "heading", "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    keys = [np.array([KEY_LABELS.index(k) for k in row], np.uint8) for row in table["keys"].to_pylist()]
    mouse = [np.array([MOUSE_LABELS.index(m) for m in row], np.uint8) for row in table["mouse"].to_pylist()]
    labels = BatchLabels(np.concatenate(keys), np.concatenate(mouse),
                         np.concatenate([[0], np.cumsum([len(k) for k in keys])]))
    agree, counted = chunk_agreement(labels, walks, QuantizeConfig(mode="heading"))
    assert counted >= 80
    assert agree / counted >= goal
    assert b'"mode": "heading"' in table.schema.metadata[b"yume_data.quantize_actions.config"]

"""Trajectory checks: planted jitter, jumps and frozen stretches are flagged where they are; clean walks (generated,
with pose noise, standing still, Yume's fixtures) are not; flags drop a clip only when asked."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from quantize_actions import (
    CheckConfig,
    QuantizeConfig,
    check_many,
    flag_counts,
    intent_walk,
    load_trajectory,
    quantize_files,
    quantize_table,
    random_walk_trajectory,
)
from yume_core.manifest import CLIP_SCHEMA, TRAJECTORY_FIGURES_TYPE

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"


@pytest.fixture(scope="module")
def walk():
    """A generated walk with gait wobble and low pose noise, and its typical step."""
    poses = intent_walk(np.random.default_rng(11), 600, position_noise=0.15, rotation_noise=2e-4).poses
    return poses, float(check_many([poses]).step[0])


def test_clean_walks_are_not_flagged():
    rng = np.random.default_rng(3)
    walks = [random_walk_trajectory(600, rng) for _ in range(10)]
    walks += [intent_walk(rng, 600).poses for _ in range(10)]
    walks += [intent_walk(rng, 600, position_noise=p, rotation_noise=r).poses for p, r in ((0.15, 2e-4), (0.3, 4e-4))
              for _ in range(10)]
    walks += [load_trajectory(f) for f in sorted(FIXTURES.glob("*/*.npy"))]
    result = check_many(walks)
    assert result.flag_lists() == [[]] * len(walks)
    assert np.nanmax(result.jitter) < 0.8 * CheckConfig().jitter_ratio
    assert np.nanmax(result.jump) < 0.6 * CheckConfig().jump_ratio


def test_standing_still_with_noise_is_not_frozen_or_jitter():
    rng = np.random.default_rng(5)
    poses = np.tile(np.eye(4), (300, 1, 1))
    poses[:, :3, 3] = rng.normal(0, 1e-4, (300, 3))
    result = check_many([poses])
    assert result.flag_lists() == [[]]
    assert np.isnan(result.path_step[0]) and np.isnan(result.jitter[0])  # it never moves: no path to judge
    assert result.frozen_frames[0] == 0


@pytest.mark.parametrize("where", [(200, 260), (0, 600)], ids=["stretch", "whole-clip"])
def test_planted_jitter(walk, where):
    poses, step = walk
    poses = poses.copy()
    a, b = where
    poses[a:b, :3, 3] += np.random.default_rng(1).normal(0, step, (b - a, 3))  # one step of scatter per axis
    result = check_many([poses])
    assert result.flag_lists() == [["jitter"]]
    assert a <= result.jitter_frame[0] < b
    assert result.jitter[0] > CheckConfig().jitter_ratio


@pytest.mark.parametrize("kind", ["offset", "spike"])
def test_planted_jump(walk, kind):
    poses, step = walk
    poses = poses.copy()
    if kind == "offset":  # the estimate jumps and stays
        poses[300:, :3, 3] += np.array([8 * step, 0, 0])
    else:  # one frame out and back
        poses[300, :3, 3] += np.array([0, 0, 8 * step])
    result = check_many([poses])
    assert result.flag_lists() == [["jump"]]
    assert result.jump_frame[0] == 300


def test_planted_frozen_stretch(walk):
    poses, _ = walk
    poses = poses.copy()
    poses[300:312] = poses[300]  # tracking lost for 12 frames...
    poses[312:, :3, 3] += poses[311, :3, 3] - poses[312, :3, 3] + (poses[313, :3, 3] - poses[312, :3, 3])
    # ...and picked up one normal step on from where it stopped (no catch-up jump)
    result = check_many([poses])
    assert result.flag_lists() == [["frozen"]]
    assert (result.frozen_frames[0], result.frozen_frame[0]) == (12, 300)


def test_a_camera_that_never_changes_is_not_frozen():
    """Frozen means stuck while the clip moves elsewhere; a clip with one pose throughout has nothing to compare."""
    assert check_many([np.tile(np.eye(4), (50, 1, 1))]).flag_lists() == [[]]


def test_figures_do_not_depend_on_the_batch(walk):
    poses, step = walk
    jumpy = poses.copy()
    jumpy[100, :3, 3] += 10 * step
    together = check_many([jumpy, random_walk_trajectory(333, np.random.default_rng(2)), poses])
    alone = check_many([jumpy])
    for name in ("step", "path_step", "jitter", "jitter_frame", "jump", "jump_frame", "frozen_frames"):
        assert getattr(together, name)[0] == getattr(alone, name)[0], name


def _trajectories(tmp_path, walk) -> list[Path]:
    poses, step = walk
    jumpy = poses.copy()
    jumpy[300:, :3, 3] += 10 * step
    paths = []
    for name, p in (("clean", poses), ("jumpy", jumpy)):
        paths.append(tmp_path / f"{name}.npy")
        np.save(paths[-1], p)
    return paths


def test_flags_are_columns_and_drop_only_when_asked(tmp_path, walk):
    paths = _trajectories(tmp_path, walk)
    kept = quantize_files(paths)
    assert kept["trajectory_flags"].to_pylist() == [[], ["jump"]]
    assert kept["status"].to_pylist() == ["ok", "ok"]
    assert kept.schema.field("trajectory_figures").type == TRAJECTORY_FIGURES_TYPE
    assert kept["trajectory_figures"][1].as_py()["jump_frame"] == 300

    dropped = quantize_files(paths, QuantizeConfig(drop_flags=("jitter", "jump")))
    row = dropped.to_pylist()[1]
    assert (row["status"], row["reason"]) == ("dropped", "trajectory_jump")
    assert "frame 300" in row["error"] and "drop_flags" in row["error"]
    assert row["keys"] and row["trajectory_flags"] == ["jump"]  # the labels stay for a person to look at
    assert dropped["status"][0].as_py() == "ok"


def test_flags_keep_earlier_verdicts(tmp_path, walk):
    paths = _trajectories(tmp_path, walk)
    table = pa.table({"clip_id": ["a", "b"], "status": ["ok", "failed"], "reason": [None, "video_missing"],
                      "error": [None, "no video"], "camera_path": [str(p) for p in paths]})
    out = quantize_table(table, QuantizeConfig(drop_flags=("jump",)))
    assert out["reason"].to_pylist() == [None, "video_missing"]
    assert out.schema.field("trajectory_flags").type == CLIP_SCHEMA.field("trajectory_flags").type


def test_flag_counts():
    lists = pa.array([[], ["jump"], ["jitter", "jump"], None, ["frozen"]], pa.list_(pa.string()))
    assert flag_counts(lists) == {"jitter": 1, "jump": 2, "frozen": 1, "flagged": 3, "checked": 4}
    assert flag_counts([[], []]) == {"jitter": 0, "jump": 0, "frozen": 0, "flagged": 0, "checked": 2}


def test_check_settings_are_validated():
    with pytest.raises(ValueError, match="jitter_window"):
        CheckConfig(jitter_window=4)
    with pytest.raises(ValueError, match="drop_flags"):
        QuantizeConfig(drop_flags=("wobble",))

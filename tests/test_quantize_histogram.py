"""Action histogram counts and its plot."""

import pyarrow as pa
import pytest

from quantize_actions import action_histogram, plot_action_histogram


def test_counts_on_a_known_input():
    keys = [["W", "W", "None", "W+A"], ["A"], []]
    mouse = [["·", "→", "·", "←"], ["←"], []]
    hist = action_histogram(keys, mouse)
    assert hist["steps"] == 5
    assert hist["keys"] == {"None": 1, "W": 2, "S": 0, "D": 0, "A": 1, "W+D": 0, "W+A": 1, "S+D": 0, "S+A": 0}
    assert hist["mouse"]["·"] == 2 and hist["mouse"]["←"] == 2 and hist["mouse"]["→"] == 1
    assert sum(hist["mouse"].values()) == 5
    assert hist["pairs"]["W"] == {"·": 1, "→": 1, "←": 0, "↑": 0, "↓": 0, "↑→": 0, "↑←": 0, "↓→": 0, "↓←": 0}
    assert hist["pairs"]["A"]["←"] == 1 and hist["pairs"]["W+A"]["←"] == 1 and hist["pairs"]["None"]["·"] == 1
    assert sum(sum(row.values()) for row in hist["pairs"].values()) == 5


def test_arrow_input_with_null_rows_and_chunks():
    lists = pa.list_(pa.string())
    keys = pa.chunked_array([pa.array([["W", "S"], None], lists), pa.array([["S"]], lists)])
    mouse = pa.chunked_array([pa.array([["↑", "↑"], None], lists), pa.array([["·"]], lists)])
    hist = action_histogram(keys, mouse)
    assert hist["steps"] == 3 and hist["keys"]["S"] == 2 and hist["pairs"]["S"]["↑"] == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        action_histogram([["W", "Q"]], [["·", "·"]])
    with pytest.raises(ValueError, match="same number of steps"):
        action_histogram([["W", "W"]], [["·"]])


def test_plot_writes_a_png(tmp_path):
    hist = action_histogram([["W", "W+A", "None"]], [["·", "↑←", "↓"]])
    out = plot_action_histogram(hist, tmp_path / "plots" / "actions.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["actions.png"]  # no temp file left behind


def test_the_same_poses_under_both_modes():
    """A sideways-swaying walk: the published rule calls it W+A/W+D, the heading mode W; both grids count the same
    steps, and the published one equals the histogram of the published labels."""
    import numpy as np

    from quantize_actions import KEY_LABELS, MOUSE_LABELS, mode_histograms, quantize

    n = 120
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = np.arange(n) * 2e-3
    poses[:, 0, 3] = 1e-3 * np.sin(np.arange(n) * 2 * np.pi / 30)  # sway of up to 6 degrees at the gait cycle
    grids = mode_histograms([poses])
    assert grids["published"]["steps"] == grids["heading"]["steps"] == n - 1
    assert grids["heading"]["keys"]["W"] == n - 1
    assert grids["published"]["keys"]["W+A"] > 30 and grids["published"]["keys"]["W+D"] > 30
    keys, mouse = quantize(poses)
    assert grids["published"] == action_histogram([[KEY_LABELS[k] for k in keys]], [[MOUSE_LABELS[m] for m in mouse]])

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

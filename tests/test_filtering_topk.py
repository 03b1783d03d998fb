"""The VBench quality score and the top-N cut: what decides which synthetic videos are kept."""

import numpy as np
import pyarrow as pa
import pytest

from filtering import NORMALIZE, TopK, VideoScores, quality_score, score_table, select_top
from filtering.stage import ScoreConfig
from yume_core.manifest import summarize


def _table(scores, status=None, keys=None):
    n = len(scores)
    return pa.table({
        "prompt_id": keys or [f"p{i:02d}" for i in range(n)],
        "status": status or ["ok"] * n,
        "reason": [None if s in (None, "ok") else "x" for s in (status or ["ok"] * n)],
        "error": pa.nulls(n, pa.string()),
        "quality_score": pa.array(scores, pa.float64()),
    })


def test_quality_score_is_vbench_normalised_weighted_mean():
    raw = {"subject_consistency": np.array([0.95, 1.0]), "dynamic_degree": np.array([1.0, 0.0])}
    lo, hi = NORMALIZE["subject_consistency"]
    expected = ((raw["subject_consistency"] - lo) / (hi - lo) + 0.5 * raw["dynamic_degree"]) / 1.5
    np.testing.assert_allclose(quality_score(raw), expected)
    assert np.isnan(quality_score({"temporal_flickering": np.array([np.nan])}))[0]
    with pytest.raises(ValueError, match="known: subject_consistency"):
        quality_score({"sharpness": np.array([1.0])})


def test_top_k_keeps_the_best_and_says_why_the_rest_went():
    table = _table([0.5, 0.9, None, 0.7, 0.1, 0.8], status=["ok", "ok", "ok", "ok", "failed", "ok"])
    out, cut = select_top(table, TopK(keep=2))
    rows = out.to_pylist()
    assert [r["status"] for r in rows] == ["dropped", "ok", "ok", "dropped", "failed", "ok"]
    assert [r["quality_rank"] for r in rows] == [4, 1, None, 3, None, 2]
    assert rows[0]["reason"] == "below_top_k" and "ranks 4 of 4 scored; the top 2 are kept (cut at 0.8000)" in \
        rows[0]["error"]
    assert rows[4]["reason"] == "x"  # an earlier verdict stands
    assert cut == {"scored": 4, "kept": 2, "cut_score": 0.8, "limit": 2}
    assert summarize(out)["in"] == table.num_rows


def test_ties_break_by_key_so_the_kept_set_is_stable():
    table = _table([0.5, 0.5, 0.5, 0.5], keys=["d", "b", "a", "c"])
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        out, _ = select_top(table.take(perm), TopK(keep=2))
        assert sorted(r["prompt_id"] for r in out.to_pylist() if r["status"] == "ok") == ["a", "b"]


@pytest.mark.parametrize("rule, kept", [
    (TopK(keep_fraction=0.625), 5),  # the paper's 50,000 of 80,000
    (TopK(keep=6, keep_fraction=0.5), 4),
    (TopK(min_score=0.35), 4),
    (TopK(keep=2, min_score=0.95), 0),
    (TopK(), 8),
    (TopK(keep=0), 0),
])
def test_count_fraction_and_floor_combine(rule, kept):
    out, cut = select_top(_table([i / 10 for i in range(8)]), rule)
    assert cut["kept"] == kept == out["status"].to_pylist().count("ok")
    reasons = {r for r in out["reason"].to_pylist() if r}
    assert reasons <= {"below_top_k", "below_min_score"}
    if rule.min_score is not None and kept < cut["limit"]:
        assert "below_min_score" in reasons


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="keep_fraction"):
        TopK(keep_fraction=1.5)
    with pytest.raises(ValueError, match="keep must be"):
        TopK(keep=-1)


class _Scripted:
    """A backend answering from a table of scores; the stage's own bookkeeping is what is under test."""

    dimensions = ("temporal_flickering", "subject_consistency")

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def score(self, items):
        self.calls.append(items)
        return [self.answers[key] for key, _ in items]


def test_score_table_fills_columns_and_fails_rows_it_cannot_score(tmp_path):
    table = pa.table({
        "prompt_id": ["a", "b", "c", "d", "e"],
        "status": ["ok", "ok", "ok", "failed", "ok"],
        "reason": [None, None, None, "empty_prompt", None],
        "error": [None, None, None, "the prompt is empty", None],
        "video_path": ["videos/a.mp4", "videos/b.mp4", None, None, "videos/e.mp4"],
    })
    backend = _Scripted({
        "a": VideoScores("a", {"temporal_flickering": 0.99, "subject_consistency": 0.9}),
        "b": VideoScores("b", reason="video_unreadable", error="b.mp4: moov atom not found"),
        "e": VideoScores("e", {"temporal_flickering": 0.98}),
    })
    config = ScoreConfig(dimensions=("temporal_flickering", "subject_consistency"))
    out = score_table(table, config, videos_root=tmp_path, scorer=backend)
    assert backend.calls == [[("a", str(tmp_path / "videos/a.mp4")), ("b", str(tmp_path / "videos/b.mp4")),
                              ("e", str(tmp_path / "videos/e.mp4"))]]
    rows = {r["prompt_id"]: r for r in out.to_pylist()}
    assert rows["a"]["status"] == "ok" and rows["a"]["vbench_subject_consistency"] == 0.9
    assert rows["a"]["quality_score"] == pytest.approx(quality_score(
        {"temporal_flickering": np.array([0.99]), "subject_consistency": np.array([0.9])})[0])
    assert (rows["b"]["status"], rows["b"]["reason"], rows["b"]["error"]) == \
        ("failed", "video_unreadable", "b.mp4: moov atom not found")
    assert (rows["c"]["reason"], rows["d"]["reason"]) == ("no_video", "empty_prompt")
    assert rows["e"]["reason"] == "score_missing" and "subject_consistency" in rows["e"]["error"]
    assert rows["e"]["quality_score"] is None and rows["e"]["vbench_temporal_flickering"] == 0.98
    assert out.num_rows == table.num_rows


def test_score_config_checks_its_settings():
    with pytest.raises(ValueError, match="scoring backend"):
        ScoreConfig(backend="clip")
    with pytest.raises(ValueError, match="listed twice"):
        ScoreConfig(dimensions=("dynamic_degree", "dynamic_degree"))

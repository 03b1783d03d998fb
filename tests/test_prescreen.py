"""The pre-screen of generated event videos: its scores (tiny random CLIP towers and VBench scorers, the real code
path), the auto-reject cut, and the card's measure of how well it predicted people's decisions."""

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from filtering.prescreen import PrescreenConfig, auto_reject, prescreen_table
from filtering.stage import ScoreConfig
from pipelines.card.collect import prescreen_prediction
from yume_core.media import write_video

TINY = PrescreenConfig(clip_model="tiny-random", max_frames=4,
                       quality=ScoreConfig(dino_model="tiny-random", clip_model="tiny-random"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("prescreen")
    for i in range(3):
        frames = [np.random.default_rng(10 * i + j).integers(0, 255, (48, 64, 3), dtype=np.uint8) for j in range(9)]
        write_video(root / f"v{i}.mp4", iter(frames), fps=8, options={"x264-params": "bframes=0"})
        Image.fromarray(frames[0]).save(root / f"s{i}.jpg")
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


def _table(rows):
    cols = ("prompt_id", "caption", "status", "reason", "error", "video_path", "image_path")
    return pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in cols})


def test_scores_every_ok_video_and_fails_an_unreadable_one(videos):
    table = _table([
        {"prompt_id": "a", "caption": "Heavy rain starts to fall.", "status": "ok", "video_path": "v0.mp4",
         "image_path": "s0.jpg"},
        {"prompt_id": "b", "caption": "A dragon lands.", "status": "ok", "video_path": "v1.mp4"},  # no start image
        {"prompt_id": "c", "caption": "x", "status": "failed", "reason": "gpu_oom", "error": "x",
         "video_path": "v2.mp4"},
        {"prompt_id": "d", "caption": "x", "status": "ok", "video_path": "broken.mp4", "image_path": "s2.jpg"},
    ])
    out = prescreen_table(table, TINY, videos)
    rows = {r["prompt_id"]: r for r in out.to_pylist()}
    a, b = rows["a"], rows["b"]
    for name in ("prescreen_text", "prescreen_start", "quality_score", "prescreen_score"):
        assert 0.0 <= a[name] <= 1.0, name
    assert a["prescreen_score"] == pytest.approx((a["prescreen_text"] + a["prescreen_start"] + a["quality_score"]) / 3)
    assert b["prescreen_start"] is None  # no start image: the mean of the other two
    assert b["prescreen_score"] == pytest.approx((b["prescreen_text"] + b["quality_score"]) / 2)
    assert rows["c"]["status"] == "failed" and rows["c"]["prescreen_score"] is None  # earlier verdicts stay
    assert rows["d"]["status"] == "failed" and rows["d"]["reason"].startswith("video_")
    again = prescreen_table(table, TINY, videos)
    assert again["prescreen_score"].to_pylist() == out["prescreen_score"].to_pylist()  # a video's own score
    alone = prescreen_table(table.slice(1, 1), TINY, videos)  # not a function of the batch
    assert alone["prescreen_score"][0].as_py() == pytest.approx(b["prescreen_score"])


def test_auto_reject_drops_low_scores_with_the_score_in_the_reason():
    table = pa.table({"prompt_id": ["a", "b", "c"], "status": ["ok", "ok", "failed"], "reason": [None, None, "x"],
                      "error": [None, None, "x"], "prescreen_score": pa.array([0.2, 0.7, None], pa.float64())})
    out = auto_reject(table, 0.5)
    assert out["status"].to_pylist() == ["dropped", "ok", "failed"]
    assert out["reason"].to_pylist() == ["prescreen_rejected", None, "x"]
    assert "pre-screen score 0.2 < auto_reject_below 0.5" in out["error"][0].as_py()
    assert auto_reject(table, None).equals(table)


def test_the_card_measures_how_well_the_pre_screen_predicted_the_decisions():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    review = ["reject", "reject", "keep", "keep", "reject", "keep", "keep", "keep", "keep"]
    table = pa.table({"status": ["dropped" if r == "reject" else "ok" for r in review],
                      "reason": ["rejected_in_review" if r == "reject" else None for r in review],
                      "review": review, "prescreen_score": scores})
    got = prescreen_prediction(table)
    assert got["scored"] == 9 and got["kept"]["count"] == 6 and got["rejected"]["count"] == 3
    assert got["prediction"]["rejections_in_bottom_third"] == round(2 / 3, 4)  # 0.1 and 0.2 of 0.1-0.3
    assert got["prediction"]["bottom_third_below"] == 0.4
    assert sum(got["prediction"]["histogram"]["rejected"]) == 3
    unscreened = table.set_column(2, "review", pa.array(["keep"] * 9))
    unscreened = unscreened.set_column(1, "reason", pa.nulls(9, pa.string()))
    assert prescreen_prediction(unscreened)["prediction"] is None  # no rejections: nothing to predict
    assert prescreen_prediction(table.drop_columns(["prescreen_score"])) is None

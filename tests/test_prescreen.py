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


def test_the_command_scores_a_synthesis_folder_for_review_pages_best_first(videos, tmp_path):
    """`yume-data prescreen` on a synthesis manifest, then `review make` on its output: every ok video scored, the
    one under --auto-reject-below dropped with its reason, the pages best first with links that reach the videos;
    a rerun scores nothing again and writes the same manifest."""
    import shutil

    from click.testing import CliRunner

    from pipelines.cli import main
    from yume_core.manifest import read_manifest, write_manifest

    synth = tmp_path / "synth"
    shutil.copytree(videos, synth)
    write_manifest(_table([{"prompt_id": f"e{i}", "caption": "Snow starts to fall.", "status": "ok",
                            "video_path": f"v{i}.mp4", "image_path": f"s{i}.jpg"} for i in range(3)]),
                   synth / "manifest.parquet")
    write_manifest(pa.table({"prompt_id": ["x"]}), tmp_path / "other" / "manifest.parquet")
    wrong = CliRunner().invoke(main, ["prescreen", "--manifest", str(tmp_path / "other" / "manifest.parquet"),
                                      "--output", str(tmp_path / "wrong")])
    assert wrong.exit_code == 2 and "has no column(s) caption, status, video_path" in wrong.output, wrong.output
    first = CliRunner().invoke(main, ["prescreen", "--manifest", str(synth / "manifest.parquet"), "--output",
                                      str(tmp_path / "scored"), "--clip-model", "tiny-random", "--max-frames", "4",
                                      "--no-quality"])
    assert first.exit_code == 0, first.output
    scored = read_manifest(tmp_path / "scored" / "manifest.parquet").to_pylist()
    scores = sorted(r["prescreen_score"] for r in scored)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores) and "quality_score" not in scored[0]
    cut = (scores[0] + scores[1]) / 2
    again = CliRunner().invoke(main, ["prescreen", "--manifest", str(synth / "manifest.parquet"), "--output",
                                      str(tmp_path / "scored"), "--clip-model", "tiny-random", "--max-frames", "4",
                                      "--no-quality", "--auto-reject-below", str(cut)])
    assert again.exit_code == 0, again.output
    rows = {r["prompt_id"]: r for r in read_manifest(tmp_path / "scored" / "manifest.parquet").to_pylist()}
    lowest = min(rows, key=lambda k: rows[k]["prescreen_score"])
    assert rows[lowest]["status"] == "dropped" and rows[lowest]["reason"] == "prescreen_rejected"
    assert [rows[k]["prescreen_score"] for k in sorted(rows)] == [r["prescreen_score"] for r in scored]

    pages = CliRunner().invoke(main, ["review", "make", "--manifest", str(tmp_path / "scored" / "manifest.parquet"),
                                      "--output", str(tmp_path / "review")])
    assert pages.exit_code == 0, pages.output
    html = (tmp_path / "review" / "page-0001.html").read_text()
    kept = sorted((k for k in rows if k != lowest), key=lambda k: -rows[k]["prescreen_score"])
    assert [html.index(f'data-key="{k}"') for k in kept] == sorted(html.index(f'data-key="{k}"') for k in kept)
    assert f'data-key="{lowest}"' not in html
    for k in kept:
        assert f'src="../synth/{rows[k]["video_path"].rsplit("/", 1)[-1]}"' in html

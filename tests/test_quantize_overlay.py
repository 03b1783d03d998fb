"""The action overlay page: which clips it samples, both modes' labels, reproducible bytes, and the page itself in a
headless browser (no console errors; the label line follows the video as it plays)."""

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from browser import Browser, serve
from quantize_actions import QuantizeConfig, quantize_files, quantize_table
from quantize_actions.overlay import dominant_labels, manifest_config, sample_rows, write_overlay
from yume_core.sample_data import make_sekai_sample
from yume_core.sekai import read_sekai_csv

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "yume_test_video"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A small Sekai-format sample labelled in heading mode (a failed row included), and its overlay page."""
    root = tmp_path_factory.mktemp("overlay")
    sample = make_sekai_sample(root / "in", n_clips=3, n_frames=60, size=(64, 36), faults=("camera_missing",))
    table = quantize_table(read_sekai_csv(sample.csv_path, sample.videos_dir, sample.cameras_dir),
                           QuantizeConfig(mode="heading"))
    return table, write_overlay(table, root / "page", per_label=2)


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return json.loads(text[start : text.index("</script>", start)])


def test_dominant_labels_and_sampling_are_deterministic():
    keys = pa.array([["W", "W", "A"], ["S", "S", "S"], [], ["W", "W", "W"], ["W", "A", "W"]], pa.list_(pa.string()))
    mouse = pa.array([["·", "·", "→"], ["←", "←", "←"], [], ["·", "·", "·"], ["·", "·", "·"]], pa.list_(pa.string()))
    dominant = dominant_labels(pa.table({"keys": keys, "mouse": mouse}))
    assert dominant.tolist() == [9, 2 * 9 + 2, -1, 9, 9]  # W·, S←, nothing, W·, W·
    groups = sample_rows(dominant, np.array([True, True, True, True, False]), per_label=1, seed=0)
    assert [(code, len(rows), total) for code, rows, total in groups] == [(9, 1, 2), (20, 1, 1)]
    assert groups == sample_rows(dominant, np.array([True, True, True, True, False]), per_label=1, seed=0)


def test_page_holds_both_modes_and_the_manifests_settings(labelled):
    table, page = labelled
    data = page_data(page)
    assert data["mode"] == "heading" and data["labelled"] == 3
    assert sum(len(s["clips"]) for s in data["sections"]) == len(data["clips"]) == 3
    ok = {r["clip_id"]: r for r in table.to_pylist() if r["status"] == "ok"}
    for clip in data["clips"]:
        assert [m["name"] for m in clip["modes"]] == ["heading", "published"]
        assert len(clip["modes"][0]["keys"]) == len(clip["modes"][1]["mouse"]) == len(ok[clip["id"]]["keys"])
        assert clip["video"] and (page.parent / clip["video"]).is_file() and clip["fps"] == 30
    assert manifest_config(table).mode == "heading"


def test_page_bytes_are_reproducible(labelled, tmp_path):
    table, page = labelled
    again = write_overlay(table, tmp_path / "again", per_label=2)
    assert again.read_bytes() == page.read_bytes()
    for clip in (page.parent / "clips").iterdir():
        assert (tmp_path / "again" / "clips" / clip.name).read_bytes() == clip.read_bytes()


def test_cli_view_of_trajectories_without_videos(tmp_path):
    """`actions` output names no video: the page shows the timelines with a slider and says why."""
    from pipelines.cli import main

    table = quantize_files(sorted(FIXTURES.glob("Keys_W_D_Mouse_*/*.npy")))
    manifest = tmp_path / "fixtures.parquet"
    pq.write_table(table, manifest)
    result = CliRunner().invoke(main, ["actions", "view", str(manifest), "-o", str(tmp_path / "page"),
                                       "--per-label", "1"])
    assert result.exit_code == 0, result.output
    data = page_data(tmp_path / "page" / "index.html")
    assert [(s["keys"], s["mouse"], len(s["clips"])) for s in data["sections"]] == [
        ("W+D", "·", 1), ("W+D", "→", 1), ("W+D", "←", 1)]  # in label order
    assert all(c["video"] is None and "no video" in c["notes"][0] for c in data["clips"])


def test_overlay_page_loads_in_a_browser_without_errors(labelled, tmp_path):
    _, page = labelled
    write_overlay(quantize_files(sorted(FIXTURES.glob("Keys_W_A_Mouse_Left/*.npy"))), page.parent / "still")
    with serve(page.parent) as base, Browser() as browser:
        slider = browser.open(f"{base}/still/index.html")  # no videos: a slider scrubs the timeline
        moved = slider.evaluate("""(() => { const s = document.querySelector('input[type=range]');
            s.value = 20; s.dispatchEvent(new Event('input')); return s.closest('.card').querySelector('.now')
            .textContent; })()""")
        assert moved.startswith("frame    20") and "published: W+A  ←" in moved
        assert slider.errors() == []

        view = browser.open(f"{base}/index.html")
        assert view.evaluate("document.querySelectorAll('.card').length") == 3
        assert view.evaluate("document.querySelectorAll('.card canvas').length") == 3
        first = view.evaluate("document.querySelector('.now').textContent")
        assert first.startswith("frame     0") and "heading:" in first and "published:" in first
        assert view.evaluate("document.querySelector('video').play().then(() => 'playing')") == "playing"
        deadline = time.monotonic() + 20
        while view.evaluate("document.querySelector('.now').textContent") == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert view.evaluate("document.querySelector('.now').textContent") != first  # the label follows playback
        assert view.evaluate("Array.from(document.querySelectorAll('video')).every((v) => v.readyState >= 1)")
        assert view.errors() == []


def test_cli_view_of_a_real_world_output_folder(labelled, tmp_path):
    """The real-world flow's output folder holds manifest.parquet: `actions view OUT` finds it."""
    from pipelines.cli import main
    from yume_core.manifest import write_manifest

    table, _ = labelled
    write_manifest(table, tmp_path / "out" / "manifest.parquet")
    result = CliRunner().invoke(main, ["actions", "view", str(tmp_path / "out"), "-o", str(tmp_path / "page"),
                                       "--per-label", "1"])
    assert result.exit_code == 0, result.output
    data = page_data(tmp_path / "page" / "index.html")
    assert data["mode"] == "heading" and all(len(s["clips"]) == 1 for s in data["sections"])
    empty = CliRunner().invoke(main, ["actions", "view", str(tmp_path), "-o", str(tmp_path / "p2")])
    assert empty.exit_code == 2 and "holds no manifest.parquet" in empty.output

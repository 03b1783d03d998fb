"""Event sets: start images from clips, validation of event files, and the one prompts reader."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import main
from synthesis.dedup import content_id
from synthesis.event_images import EventImageConfig, event_images, frame_indices
from synthesis.events import EventFormatError, normalize_category, read_event_set
from synthesis.inputs import PROMPT_COLUMNS, PromptsFormatError, read_prompts
from synthesis.select_sample import write_openvid_csv
from yume_core.media import write_video
from yume_core.sample_data import CSV_COLUMNS, make_sekai_sample


@pytest.fixture(scope="module")
def sekai(tmp_path_factory):
    return make_sekai_sample(tmp_path_factory.mktemp("sekai"), n_clips=3, n_frames=40, faults=("video_truncated",))


def test_start_frames_cropped_to_size_and_broken_clips_kept_as_failed(sekai, tmp_path):
    cfg = EventImageConfig(per_clip=2, size=(96, 96), workers=2)
    summary = event_images(sekai.csv_path, sekai.videos_dir, tmp_path, cfg)
    manifest = pq.read_table(tmp_path / "manifest.parquet")
    assert summary["in"] == manifest.num_rows == 3 * 2 + 1
    ok = [r for r in manifest.to_pylist() if r["status"] == "ok"]
    assert len(ok) == 6 and {r["frame_index"] for r in ok} == {0, 20}
    for r in ok:
        with Image.open(tmp_path / r["image_path"]) as img:
            assert img.size == (96, 96) and img.format == "JPEG"
    failed = [r for r in manifest.to_pylist() if r["status"] == "failed"]
    assert [r["reason"] for r in failed] == ["video_truncated"] and failed[0]["clip_id"] == sekai.clip_ids[-1]
    # the template is an event set that points at the images and waits for a person's words
    lines = (tmp_path / "events_template.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[0])["image"] == ok[0]["image_path"]
    events = read_event_set(tmp_path / "events_template.jsonl", min_side=64)
    assert set(events["reason"].to_pylist()) == {"unknown_category"}


def test_centre_crop_keeps_the_middle():
    from synthesis.event_images import fit

    frame = np.zeros((90, 160, 3), np.uint8)
    frame[:, :20] = 255  # a white band at the left edge is cropped away by a square centre crop
    img = np.asarray(fit(frame, (90, 90)))
    assert img.shape == (90, 90, 3) and img.max() < 10


def _clip_csv(tmp_path, clips):
    """A Sekai-format CSV naming clips written by the test."""
    videos = tmp_path / "videos"
    videos.mkdir()
    lines = [",".join(CSV_COLUMNS)]
    for stem, frames in clips.items():
        write_video(videos / f"{stem}.mp4", frames, 30)
        lines.append(f"{stem}.mp4,{stem}.npz,a walk,city,street,low,clear,day")
    (tmp_path / "clips.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "clips.csv", videos


def test_fades_and_flat_frames_are_dropped_and_skip_moves_past_them(tmp_path):
    rng = np.random.default_rng(0)
    black = np.zeros((12, 64, 96, 3), np.uint8)
    grey = np.full((12, 64, 96, 3), 128, np.uint8)
    fade_in = np.concatenate([black[:6], rng.integers(0, 255, (6, 64, 96, 3), dtype=np.uint8)])
    csv_path, videos = _clip_csv(tmp_path, {
        "blackvideo1_0000000_0000012": black, "greyvideo01_0000000_0000012": grey,
        "fadevideo01_0000000_0000012": fade_in,
    })
    summary = event_images(csv_path, videos, tmp_path / "a", EventImageConfig(size=(48, 32), workers=1))
    reasons = {r["clip_id"][:4]: r["reason"] for r in pq.read_table(tmp_path / "a" / "manifest.parquet").to_pylist()}
    assert reasons == {"blac": "frame_dark", "grey": "frame_uniform", "fade": "frame_dark"}
    assert summary["dropped"] == 3 and not (tmp_path / "a" / "images").exists()
    # skipping the fade (0.2 s = 6 frames at 30 fps) finds a usable frame; a skip past the end drops the clip
    event_images(csv_path, videos, tmp_path / "b", EventImageConfig(size=(48, 32), skip_seconds=0.2, workers=1))
    rows = {r["clip_id"][:4]: r for r in pq.read_table(tmp_path / "b" / "manifest.parquet").to_pylist()}
    assert rows["fade"]["status"] == "ok" and rows["fade"]["frame_index"] == 6
    event_images(csv_path, videos, tmp_path / "c", EventImageConfig(size=(48, 32), skip_seconds=5, workers=1))
    assert set(pq.read_table(tmp_path / "c" / "manifest.parquet")["reason"].to_pylist()) == {"clip_too_short"}


def test_frame_indices():
    assert frame_indices(100, 30, 1, 0).tolist() == [0]
    assert frame_indices(100, 30, 4, 1.0).tolist() == [30, 47, 65, 82]
    assert frame_indices(3, 30, 5, 0).tolist() == [0, 1, 2]
    assert frame_indices(10, 30, 1, 1.0).tolist() == []


def _image(path, size=(320, 256), fmt="JPEG"):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt)
    return path


@pytest.fixture
def event_dir(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    _image(img / "a.jpg")
    _image(img / "b.png", fmt="PNG")
    _image(img / "small.jpg", size=(200, 100))
    (img / "garbage.jpg").write_bytes(b"<html>not found</html>")
    data = (img / "a.jpg").read_bytes()
    (img / "cut.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path


def test_event_set_validation_every_bad_row_kind(event_dir):
    abs_png = str(event_dir / "img" / "b.png")
    records = [
        {"event_id": "rain-1", "category": "Weather", "description": "Heavy rain starts.", "image": "img/a.jpg"},
        {"event_id": "ship-1", "category": "sci-fi", "description": "A starship lands.", "image": abs_png, "seed": 7},
        {"category": "Urban daily life", "description": "A vendor opens a stall.", "image": "img/a.jpg",
         "negative_prompt": "blurry"},
        "not json at all {",
        ["a", "list"],
        {"event_id": "x", "category": "horror", "description": "A ghost.", "image": "img/a.jpg"},
        {"event_id": "y", "category": "fantasy", "description": "  ", "image": "img/a.jpg"},
        {"event_id": "z", "category": "fantasy", "description": "A dragon.", "image": "img/none.jpg"},
        {"event_id": "g", "category": "fantasy", "description": "A dragon.", "image": "img/garbage.jpg"},
        {"event_id": "c", "category": "fantasy", "description": "A dragon.", "image": "img/cut.jpg"},
        {"event_id": "s", "category": "fantasy", "description": "A dragon.", "image": "img/small.jpg"},
        {"event_id": "rain-1", "category": "weather", "description": "Snow.", "image": "img/a.jpg"},
        {"event_id": "bad.id/1", "category": "weather", "description": "Fog.", "image": "img/a.jpg"},
        {"event_id": "n", "category": "weather", "description": "Fog.", "image": "img/a.jpg", "seed": "soon"},
        {"event_id": "m", "category": "weather", "description": "Fog."},
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path = event_dir / "events.jsonl"
    path.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")
    table = read_event_set(path)
    assert table.num_rows == len(records)
    got = [(r["status"], r["reason"]) for r in table.to_pylist()]
    want = [None, None, None, "json_malformed", "json_malformed", "unknown_category", "empty_prompt",
            "image_missing", "image_unreadable", "image_unreadable", "image_too_small", "duplicate_event_id",
            "bad_event_id", "bad_seed", "image_missing"]
    assert [r for _, r in got] == want
    assert [s for s, _ in got] == ["ok"] * 3 + ["failed"] * 12
    ok = table.slice(0, 3).to_pylist()
    assert [r["category"] for r in ok] == ["weather", "sci_fi", "urban_daily_life"]
    assert ok[0]["image_path"] == str(event_dir / "img" / "a.jpg") and ok[1]["image_path"] == abs_png
    assert ok[1]["seed"] == 7 and ok[2]["negative_prompt"] == "blurry" and ok[0]["image_width"] == 320
    assert ok[2]["prompt_id"].startswith("e") and len(ok[2]["prompt_id"]) == 17  # derived id
    assert table["line"].to_pylist()[3] == 5  # the blank line is counted in line numbers, not as a record
    assert all(e and "line" in e for e in table["error"].to_pylist()[3:])


def test_event_set_csv_and_format_errors(event_dir):
    path = event_dir / "events.csv"
    path.write_text(
        "event_id,category,description,image\n"
        'e1,fantasy,"A castle appears, glowing",img/a.jpg\n'
        "e2,fantasy,too,many,fields,img/a.jpg\n"
    )
    table = read_event_set(path)
    assert table["reason"].to_pylist() == [None, "csv_malformed"]
    assert table["caption"][0].as_py() == "A castle appears, glowing"
    (event_dir / "bad.csv").write_text("id,text\n1,hello\n")
    with pytest.raises(EventFormatError, match="lacks"):
        read_event_set(event_dir / "bad.csv")
    assert normalize_category("Sci Fi") == "sci_fi" and normalize_category("SCIENCE-FICTION") == "sci_fi"
    assert normalize_category("urban") == "urban_daily_life" and normalize_category("ocean") is None


def test_read_prompts_every_format(event_dir, tmp_path):
    # plain text: one prompt per line, blank line -> empty_prompt, a repeat -> duplicate_prompt
    txt = tmp_path / "p.txt"
    txt.write_text("A cat jumps.\n\nA dog runs.\nA cat jumps.\n")
    t = read_prompts(txt)
    assert t.column_names[:6] == list(PROMPT_COLUMNS)
    assert t["reason"].to_pylist() == [None, "empty_prompt", None, "duplicate_prompt"]
    assert t["prompt_id"][0].as_py() == content_id("A cat jumps.") and t["image_path"].null_count == 4

    # parquet: select-prompts output keeps ids and status; a bare caption table gets derived ids
    pq.write_table(pa.table({"prompt_id": ["p1", "p2", None], "caption": ["x", "", "z"],
                             "status": ["ok", "ok", "dropped"], "reason": [None, None, "not_sampled"]}),
                   tmp_path / "sel.parquet")
    t = read_prompts(tmp_path / "sel.parquet")
    assert t["prompt_id"].to_pylist() == ["p1", "p2", content_id("z")]
    assert t["status"].to_pylist() == ["ok", "failed", "dropped"]
    assert t["reason"].to_pylist() == [None, "empty_prompt", "not_sampled"]
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "nocap.parquet")
    with pytest.raises(PromptsFormatError, match="caption"):
        read_prompts(tmp_path / "nocap.parquet")

    # event sets, JSONL and CSV
    (event_dir / "ev.jsonl").write_text(json.dumps(
        {"event_id": "e1", "category": "weather", "description": "Snow falls.", "image": "img/a.jpg"}) + "\n")
    t = read_prompts(event_dir / "ev.jsonl")
    assert t.to_pylist()[0]["image_path"] == str(event_dir / "img" / "a.jpg") and t["category"][0].as_py() == "weather"
    (event_dir / "ev.csv").write_text("event_id,category,description,image\ne1,weather,Snow falls.,img/a.jpg\n")
    assert read_prompts(event_dir / "ev.csv")["status"].to_pylist() == ["ok"]

    # an OpenVid-style caption CSV, every row
    write_openvid_csv(tmp_path / "ov.csv", ["A boat.", "", "A bird."], malformed=1)
    t = read_prompts(tmp_path / "ov.csv")
    assert t["reason"].to_pylist() == [None, "empty_prompt", None, "csv_malformed"]

    (tmp_path / "p.md").write_text("x")
    with pytest.raises(PromptsFormatError, match="not .md"):
        read_prompts(tmp_path / "p.md")


def test_cli_event_images(sekai, tmp_path):
    result = CliRunner().invoke(main, [
        "event-images", "--csv", str(sekai.csv_path), "--videos", str(sekai.videos_dir), "--output", str(tmp_path),
        "--size", "64", "48", "--format", "png",
    ])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout)
    assert outputs["template"].endswith("events_template.jsonl")
    manifest = pq.read_table(tmp_path / "manifest.parquet")
    assert manifest.num_rows == 4 and manifest["status"].to_pylist().count("ok") == 3
    assert all(p.endswith(".png") for p in manifest["image_path"].drop_null().to_pylist())

"""Text review of an event set before synthesis (pages, edited texts, the reviewed set) and review pages sorted by
the pre-screen, in a headless browser."""

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from filtering.review import make_review, read_decisions, read_text_edits
from pipelines.event_review import apply_event_review, make_event_review
from synthesis.events import read_event_set

TEXTS = {
    "e0": ("weather", "Heavy rain starts to fall and people open umbrellas on the crossing."),
    "e1": ("sci_fi", "A silver drone lands on the kiosk roof and projects a glowing map."),
    "e2": ("fantasy", "A small dragon lands on the fountain and blue vines climb the lamp posts."),
    "e3": ("urban_daily_life", "A delivery cyclist stops at the bakery and a dog chases pigeons."),
}


def event_set(folder, texts=TEXTS):
    """A drafted-looking event set with real start images."""
    (folder / "images").mkdir(parents=True)
    lines = []
    for i, (key, (cat, text)) in enumerate(texts.items()):
        pixels = np.random.default_rng(i).integers(0, 255, (270, 480, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{key}.jpg")
        lines.append(json.dumps({"event_id": key, "category": cat, "description": text, "image": f"images/{key}.jpg",
                                 "source": "drafted", "model": "fake-vlm", "prompt_version": "draft-v1+categories-v1",
                                 "draft_seed": i}))
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "events.jsonl"


def test_reviewed_set_keeps_kept_events_with_their_edited_texts(tmp_path):
    events = event_set(tmp_path / "drafted")
    decisions = tmp_path / "d.csv"
    decisions.write_text('key,decision,note,text\ne0,keep,,\ne1,keep,sharper,"A silver drone lands on the kiosk '
                         'roof,  and projects a map."\ne2,reject,too silly,"A changed text nobody renders."\n')
    summary = apply_event_review(events, read_decisions(decisions), read_text_edits(decisions), tmp_path / "rev",
                                 source=str(decisions))
    reviewed = [json.loads(x) for x in (tmp_path / "rev" / "events.jsonl").read_text().splitlines()]
    assert [r["event_id"] for r in reviewed] == ["e0", "e1"]
    assert reviewed[0]["description"] == TEXTS["e0"][1] and "original_description" not in reviewed[0]
    assert reviewed[1]["description"] == "A silver drone lands on the kiosk roof, and projects a map."
    assert reviewed[1]["original_description"] == TEXTS["e1"][1] and reviewed[1]["review_note"] == "sharper"
    assert reviewed[1]["model"] == "fake-vlm" and reviewed[1]["source"] == "drafted"  # unknown fields carried
    table = read_event_set(tmp_path / "rev" / "events.jsonl")  # the reviewed set reads as any event set
    assert table["status"].to_pylist() == ["ok", "ok"] and table["caption"][1].as_py() == reviewed[1]["description"]
    assert summary["in"] == 4 and summary["ok"] == 2
    assert {r["reason"]: r["count"] for r in summary["by_reason"]} == {"rejected_in_review": 1, "not_reviewed": 1}
    assert summary["text-review"]["edited"] == 1 and summary["text-review"]["edits_on_rejected"] == 1


def test_decisions_with_edits_for_another_set_are_refused(tmp_path):
    events = event_set(tmp_path / "drafted")
    from yume_core.errors import InputError

    with pytest.raises(InputError, match="another event set"):
        apply_event_review(events, {"e0": ("keep", None)}, {"zz": "text"}, tmp_path / "rev")


def test_text_pages_show_image_category_and_an_editable_text(tmp_path):
    index = make_event_review(event_set(tmp_path / "drafted"), tmp_path / "pages")
    page = (index.parent / "page-0001.html").read_text()
    assert 'data-mode="text"' in page and page.count('<textarea class="text"') == 4
    assert 'src="../drafted/images/e0.jpg"' in page and "e edit the text" in page
    assert "4 events to screen" in index.read_text()


def test_video_pages_are_sorted_by_the_pre_screen_with_scores_shown(tmp_path):
    rows = [("a", 0.2), ("b", None), ("c", 0.9), ("d", 0.5)]
    table = pa.table({"prompt_id": [k for k, _ in rows], "caption": ["x"] * 4, "status": ["ok"] * 4,
                      "video_path": [f"{k}.mp4" for k, _ in rows],
                      "prescreen_score": pa.array([s for _, s in rows], pa.float64())})
    index = make_review(table, tmp_path, tmp_path / "pages")
    page = (index.parent / "page-0001.html").read_text()
    assert [page.index(f'data-key="{k}"') for k in "cdab"] == sorted(page.index(f'data-key="{k}"') for k in "cdab")
    assert "pre-screen 0.900" in page


# ------------------------------------------------------------------------------------------------- in a browser


def _download(page) -> str:
    """Press the page's download button and return the CSV it would save."""
    return page.evaluate("""(async () => {
        let blob = null;
        const make = URL.createObjectURL;
        URL.createObjectURL = (b) => { blob = b; return make(b); };
        HTMLAnchorElement.prototype.click = function () {};  // no file dialog in a headless tab
        document.getElementById("download").click();
        return await blob.text();
    })()""")


@pytest.mark.slow
def test_text_and_video_review_pages_in_a_browser(tmp_path):
    from browser import Browser, serve
    from yume_core.media import write_video

    events = event_set(tmp_path / "drafted")
    make_event_review(events, tmp_path / "text")
    videos = tmp_path / "videos"
    for i, key in enumerate("abc"):
        frames = (np.full((64, 96, 3), 40 * i + 20, np.uint8) for _ in range(8))
        write_video(videos / f"{key}.mp4", frames, fps=8, options={"x264-params": "bframes=0"})
    table = pa.table({"prompt_id": list("abc"), "caption": ["x", "y", "z"], "category": ["weather"] * 3,
                      "status": ["ok"] * 3, "video_path": ["a.mp4", "b.mp4", "c.mp4"],
                      "image_path": ["../drafted/images/e0.jpg"] * 3,
                      "prescreen_score": [0.1, 0.8, 0.5], "prescreen_text": [0.2, 0.9, 0.4]})
    make_review(table, videos, tmp_path / "video")
    with serve(tmp_path) as base, Browser() as browser:
        page = browser.open(f"{base}/text/page-0001.html")
        assert page.broken_images() == [] and page.image_count() == 4
        page.press("j")
        page.press("y")  # e0 kept as drafted
        page.press("e")  # e1: edit its text, then keep it
        page.evaluate("""(() => { const t = document.activeElement; t.value = "A drone lands, and maps glow.";
                          t.dispatchEvent(new Event("input")); })()""")
        page.press("Enter")
        page.press("y")
        page.press("n")  # e2 rejected
        csv = _download(page)
        assert page.errors() == []
        decisions = tmp_path / "d.csv"
        decisions.write_text(csv, newline="")
        assert read_decisions(decisions) == {"e0": ("keep", None), "e1": ("keep", None), "e2": ("reject", None)}
        assert read_text_edits(decisions) == {"e1": "A drone lands, and maps glow."}

        videos_page = browser.open(f"{base}/video/page-0001.html")
        order = videos_page.evaluate("Array.from(document.querySelectorAll('.card')).map((c) => c.dataset.key)")
        assert order == ["b", "c", "a"]  # best first
        assert "text 0.900" in videos_page.evaluate("document.querySelector('.card .scores').textContent")
        videos_page.press("j")
        videos_page.press("y")
        assert "b,keep" in _download(videos_page)
        assert videos_page.errors() == [] and videos_page.broken_images() == []
    out = CliRunner().invoke(__import__("pipelines.cli", fromlist=["main"]).main,
                             ["review", "apply", "--events", str(events), "--decisions", str(decisions), "--output",
                              str(tmp_path / "reviewed")], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    reviewed = [json.loads(x) for x in (tmp_path / "reviewed" / "events.jsonl").read_text().splitlines()]
    assert [(r["event_id"], r["description"]) for r in reviewed] == [
        ("e0", TEXTS["e0"][1]), ("e1", "A drone lands, and maps glow.")]

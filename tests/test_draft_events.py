"""Drafting events: prompts and categories as data, the answer checks, the stage against a loopback server, the
set-wide dedup and balance, and the draft-events command end to end (loopback server; tiny-random offline)."""

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from captioning import make_backend
from captioning.backends import fake_server
from captioning.draft_prompts import load_categories, load_draft_prompt
from captioning.drafting import DraftConfig, check_event, draft_seed, draft_table
from captioning.prompts import PromptError
from pipelines.drafting import (
    DraftFlowConfig,
    balance,
    pair_rows,
    quotas,
    read_start_images,
    remove_duplicates,
)
from yume_core.config import from_dict
from yume_core.manifest import read_manifest

CATS = ("urban_daily_life", "sci_fi", "fantasy", "weather")
# one good event per (image, category): distinct scenes, so none is a near-duplicate of another
GOOD = {
    ("img0", "urban_daily_life"): "A street vendor pushes a fruit cart across the square while pigeons scatter.",
    ("img0", "sci_fi"): "A silver robot courier hovers down the street and hands a glowing parcel to a woman.",
    ("img0", "fantasy"): "A small dragon lands on the church roof and blue flowers open along every wall.",
    ("img0", "weather"): "Heavy rain starts to fall, puddles spread over the street and people open umbrellas.",
    ("img1", "urban_daily_life"): "Two delivery workers unload crates of oranges from a van parked at the curb.",
    ("img1", "fantasy"): "Glowing runes rise from the cobblestones and a herd of white deer crosses the plaza.",
    ("img2", "sci_fi"): "A fleet of drones descends between the towers and paints holographic signs on the walls.",
    ("img2", "weather"): "Thick fog rolls in from the harbour and the lamps along the quay blur into halos.",
    ("img3", "urban_daily_life"): "A busker tunes his guitar by the fountain while tourists gather with coffee cups.",
    ("img3", "sci_fi"): "A spaceship lowers a shining ramp onto the car park and a tall android steps out.",
    ("img3", "fantasy"): "A wizard in a green cloak waves his staff and the bare trees burst into golden leaves.",
    ("img3", "weather"): "Snowfall thickens over the market and children catch flakes as the stalls close.",
}
NEAR_DUP = "A street vendor pushes a fruit cart across the square while the pigeons scatter."  # img0's urban event
CAMERA = "The camera pans left as a robot drone hovers above the busy street corner at night."
OFF = "Heavy rain and thunder roll over the street as a storm with strong wind arrives."  # weather, asked fantasy


def plan(key, attempt):
    """The planted answers, per event key (`<image>-<category>`) and attempt."""
    image, cat = key.rsplit("-", 1)
    if (image, cat) == ("img1", "weather"):
        return fake_server.refusal()
    if (image, cat) == ("img1", "sci_fi"):
        return fake_server.ok(CAMERA)
    if (image, cat) == ("img2", "urban_daily_life"):
        return fake_server.ok(NEAR_DUP)
    if (image, cat) == ("img2", "fantasy"):
        return fake_server.ok(OFF)  # every time: fails as event_off_category
    if (image, cat) == ("img3", "sci_fi") and attempt == 1:
        return fake_server.ok(OFF)  # off-category once, then a good answer on the re-ask
    return fake_server.ok(GOOD[(image, cat)])


def make_images(folder, sizes=((480, 270),) * 4 + ((200, 120),)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        pixels = np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.jpg", quality=90)
    return folder


# ------------------------------------------------------------------------------------------------ data and checks


def test_packaged_prompt_and_categories_load_and_render():
    prompt, cats = load_draft_prompt(), load_categories()
    assert cats.keys == CATS and prompt.version_with(cats) == "draft-v1+categories-v1"
    messages = prompt.messages(b"\xff\xd8jpeg", cats.get("weather"))
    system, user = messages[0]["content"], messages[1]["content"]
    assert "Heavy rain starts to fall" in system  # the category's examples
    assert [p["type"] for p in user] == ["text", "image_url", "text"] and user[0]["text"] == "Image: <image>"
    assert "Category: weather." in user[2]["text"] and "{" not in user[2]["text"]


def test_a_users_categories_file_is_checked_when_it_loads(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("version: mine-v2\ncategories:\n  night_market:\n    name: night market\n    guidance: Stalls "
                    "open at dusk.\n    examples: [Lanterns light up over the noodle stalls.]\n    keywords: [lantern, "
                    "stall]\n    share: 3\n  festival:\n    name: festival\n    guidance: A parade.\n    examples: "
                    "[A dragon dance winds through the crowd.]\n    keywords: [parade, drum]\n    share: 1\n")
    cats = load_categories(good)
    assert cats.keys == ("night_market", "festival") and cats.shares() == {"night_market": 0.75, "festival": 0.25}
    for text, words in [("categories: {Bad Key: {}}", "snake_case"),
                        ("categories: {a: {name: x, guidance: y, examples: [], keywords: [k]}}", "examples"),
                        ("categories: {a: {name: x, guidance: y, examples: [e], keywords: [k], colour: red}}",
                         "unknown keys"),
                        ("categories: {a: {name: x, guidance: y, examples: [e], keywords: [k], share: -1}}", "share")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text("version: bad-v1\n" + text + "\n")
        with pytest.raises(PromptError, match=words):
            load_categories(bad)
    with pytest.raises(PromptError, match="no category 'nope'"):
        load_categories().subset(["weather", "nope"])
    prompt = tmp_path / "p.yaml"
    prompt.write_text("version: p-v1\nsystem: 'no examples here'\nuser: '{category_name} {category_guidance}'\n")
    with pytest.raises(PromptError, match="examples"):
        load_draft_prompt(prompt)


@pytest.mark.parametrize("text, category, reason", [
    (GOOD[("img0", "weather")], "weather", None),
    ("A drone flies low over the market as rain starts to fall on the stalls.", "weather", None),  # one of its own
    ("Market stalls open and the lantern light spreads.", "urban_daily_life", None),  # no keyword: passes
    (OFF, "fantasy", "event_off_category"),
    (CAMERA, "sci_fi", "event_camera_motion"),
    ("I'm sorry, I cannot describe this image.", "weather", "event_refusal"),
    ("Rain.", "weather", "event_too_short"),
    ("", "weather", "event_empty"),
    ("Une pluie forte tombe sur la place et les gens ouvrent leurs parapluies dans la rue.", "weather",
     "event_wrong_language"),
])
def test_event_checks(text, category, reason):
    cleaned, problem = check_event(text, "stop", category, load_categories())
    assert (problem.reason if problem else None) == reason


def test_keywords_match_whole_words_and_common_endings():
    weather = load_categories().get("weather").pattern
    assert weather.findall("windy rains, a window, a raincoat and a misty mistake") == ["windy", "rains", "misty"]


# ------------------------------------------------------------------------------------------------------- the stage


def test_stage_keeps_good_events_and_fails_bad_ones_with_reasons(tmp_path):
    images = read_start_images(make_images(tmp_path / "img", sizes=((480, 270),) * 4))
    pairs = pair_rows(images, CATS)
    with fake_server.FakeServer(plan=plan) as server:
        cfg = DraftConfig(backend="openai", endpoints=(server.url,), model="fake-vlm", timeout=5.0)
        out = draft_table(pairs, make_backend(cfg.caption_config()), cfg)
        received = server.received
    rows = {r["draft_id"]: r for r in out.to_pylist()}
    assert rows["img1-weather"]["reason"] == "event_refusal"
    camera, off = rows["img1-sci_fi"], rows["img2-fantasy"]
    assert camera["reason"] == "event_camera_motion" and "camera as subject" in camera["error"]
    assert off["reason"] == "event_off_category" and "reads as weather" in off["error"]
    assert rows["img3-sci_fi"]["status"] == "ok" and rows["img3-sci_fi"]["draft_attempts"] == 2
    assert rows["img3-sci_fi"]["description"] == GOOD[("img3", "sci_fi")]
    for (image, cat), text in GOOD.items():  # every event stays with its own image and category
        assert rows[f"{image}-{cat}"]["description"] == text
    assert len([r for r in received if r.key == "img2-fantasy"]) == 3  # the ask and two re-asks
    version = "draft-v1+categories-v1"
    first = {r.key: r.seed for r in received if r.attempt == 1}
    assert first["img0-weather"] == draft_seed(0, "img0", "weather", version)
    assert len(set(first.values())) == len(first)  # a seed per (image, category)
    again = draft_table(out, make_backend(cfg.caption_config()), cfg)  # finished rows: no request (server is down)
    assert again.equals(out)


def test_set_wide_dedup_and_seeded_balance(tmp_path):
    images = read_start_images(make_images(tmp_path / "img", sizes=((480, 270),) * 3))
    pairs = pair_rows(images, CATS)
    texts = [GOOD.get((i, c)) or f"A {c} event number {n} with its own words about image {i} and more." for n, (i, c)
             in enumerate(zip(pairs["image_id"].to_pylist(), pairs["category"].to_pylist()))]
    texts[4] = NEAR_DUP  # img1-urban_daily_life repeats img0's
    table = pairs.append_column("description", pa.array(texts))
    deduped = remove_duplicates(table, DraftFlowConfig().dedup)
    row = deduped.to_pylist()[4]
    assert (row["status"], row["reason"]) == ("dropped", "near_duplicate")
    assert "repeats event img0-urban_daily_life" in row["error"]
    assert deduped["status"].to_pylist().count("ok") == 11
    cfg = DraftFlowConfig(per_category=2)
    limits = quotas(cfg, load_categories())
    balanced = balance(deduped, limits, seed=0)
    kept = [r for r in balanced.to_pylist() if r["status"] == "ok"]
    assert {c: sum(r["category"] == c for r in kept) for c in CATS} == {c: 2 for c in CATS}
    assert balanced["reason"].to_pylist().count("over_quota") == 3
    assert balance(deduped, limits, seed=0).equals(balanced)  # seeded: the same draw
    assert quotas(DraftFlowConfig(count=10), load_categories()) == {
        "urban_daily_life": 3, "sci_fi": 3, "fantasy": 2, "weather": 2}


def test_start_images_from_a_folder_and_from_an_event_images_manifest(tmp_path):
    folder = make_images(tmp_path / "img")
    table = read_start_images(folder)
    assert table["status"].to_pylist() == ["ok"] * 4 + ["failed"]
    assert table["reason"].to_pylist()[4] == "image_too_small"
    manifest = tmp_path / "manifest.parquet"
    from yume_core.manifest import write_manifest

    write_manifest(pa.table({"image_id": ["a", "b"], "image_path": ["img/img0.jpg", None],
                             "status": ["ok", "dropped"], "reason": [None, "frame_dark"],
                             "error": [None, "dark"]}), manifest)
    rows = read_start_images(manifest).to_pylist()
    assert rows[0]["status"] == "ok" and rows[0]["image_path"] == str((folder / "img0.jpg").resolve())
    assert (rows[1]["status"], rows[1]["reason"]) == ("dropped", "frame_dark")


# ----------------------------------------------------------------------------------------------------- the command


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_draft_events_against_a_loopback_server_then_a_rerun_sends_nothing(tmp_path, monkeypatch):
    from pipelines.cli import main
    from synthesis.events import read_event_set

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    images = make_images(tmp_path / "images")  # 4 usable images and one too small
    out = tmp_path / "drafted"
    with fake_server.FakeServer(plan=plan) as server:
        args = ["draft-events", "--images", str(images), "--output", str(out), "--backend", "openai", "--endpoint",
                server.url, "--model", "fake-vlm", "--batch-size", "6"]
        done = CliRunner().invoke(main, args, catch_exceptions=False)
        first = len(server.received)
    assert done.exit_code == 0, done.output
    manifest = read_manifest(out / "manifest.parquet")
    rows = {r["draft_id"]: r for r in manifest.to_pylist()}
    assert manifest.num_rows == 5 * 4  # counts in (images x categories) = counts out
    verdicts = {k: (r["status"], r["reason"]) for k, r in rows.items() if r["status"] != "ok"}
    assert verdicts == {"img1-weather": ("failed", "event_refusal"), "img1-sci_fi": ("failed", "event_camera_motion"),
                        "img2-fantasy": ("failed", "event_off_category"),
                        "img2-urban_daily_life": ("dropped", "near_duplicate"),
                        **{f"img4-{c}": ("failed", "image_too_small") for c in CATS}}
    events = _events(out / "events.jsonl")
    assert {e["event_id"]: e["description"] for e in events} == {f"{i}-{c}": t for (i, c), t in GOOD.items()}
    assert all(e["source"] == "drafted" and e["model"] == "fake-vlm" and e["prompt_version"] ==
               "draft-v1+categories-v1" and isinstance(e["draft_seed"], int) for e in events)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["in"] == 20 and summary["ok"] + summary["dropped"] + summary["failed"] == 20
    by = summary["draft-events"]["by_category"]
    assert {c: (by[c]["asked"], by[c]["written"]) for c in CATS} == {
        "urban_daily_life": (4, 3), "sci_fi": (4, 3), "fantasy": (4, 3), "weather": (4, 3)}
    assert sum(sum(b["failed"].values()) + b["duplicates"] + b["written"] for b in by.values()) == 20
    # synthesize and the build read the drafted set as it is
    table = read_event_set(out / "events.jsonl")
    assert table["status"].to_pylist() == ["ok"] * len(events)
    assert first == 4 * 4 + 3 * 2 + 1  # every usable pair once; 2 re-asks x 3 rejected; 1 re-ask for img3-sci_fi
    before = {name: (out / name).read_bytes() for name in ("events.jsonl", "manifest.parquet")}
    with fake_server.FakeServer(plan=plan) as server:
        args[args.index("--endpoint") + 1] = server.url
        again = CliRunner().invoke(main, args, catch_exceptions=False)
        assert again.exit_code == 0, again.output
        assert server.received == []  # resumed from the parts: no request at all
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_draft_events_with_tiny_random_offline(tmp_path, monkeypatch):
    from pipelines.drafting import run_draft_events_flow

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    images = make_images(tmp_path / "images", sizes=((320, 256),) * 3)
    cfg = from_dict(DraftFlowConfig, {"vlm": {"backend": "transformers", "model": "tiny-random", "fail_fast": 0}})
    summary = run_draft_events_flow(str(images), str(tmp_path / "a"), cfg)
    assert summary["in"] == 12 and summary["ok"] + summary["dropped"] + summary["failed"] == 12
    rows = read_manifest(tmp_path / "a" / "manifest.parquet").to_pylist()
    assert all(r["reason"] and r["error"] for r in rows if r["status"] != "ok")
    assert summary["ok"] == len(_events(tmp_path / "a" / "events.jsonl")) > 0
    summary_b = run_draft_events_flow(str(images), str(tmp_path / "b"), cfg)  # another folder: same events
    lines = lambda d: [{k: v for k, v in e.items() if k != "image"} for e in _events(tmp_path / d / "events.jsonl")]
    assert lines("a") == lines("b") and summary_b["ok"] == summary["ok"]

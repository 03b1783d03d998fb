"""The data card of a finished build: README.md for the Hub, card.json for programs, card.html for people.

The figures are checked against what the build left on disk (set_stats, the manifests, the step summaries), the
README against the `datasets` library itself, the page in a real headless browser.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

import quantize_actions
import shards
from filtering import review_counts
from pipelines.card import describe, merge_stats, write_card
from pipelines.card.collect import collect
from pipelines.card.render_html import render_html
from pipelines.card.render_markdown import render_readme
from browser import Browser, serve

pytestmark = pytest.mark.slow


def _record(out: Path) -> dict:
    return json.loads((out / "build.json").read_text())


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme[4:readme.index("\n---\n")])


def _output(out: Path, record: dict, step: str, name: str = "manifest") -> Path:
    """What a declared step of the build wrote, as the record names it."""
    return out / next(s for s in record["steps"] if s["name"] == step)["outputs"][name]


def _ok(path: Path):
    table = pq.read_table(path)
    return table.filter(pc.equal(table["status"], "ok"))


def _words(texts) -> list[int]:
    return [len(t.split()) for t in texts]


@pytest.fixture(scope="module")
def card(demo_build) -> dict:
    return json.loads((demo_build / "card.json").read_text())


@pytest.fixture(scope="module")
def partial(demo_build, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the build whose record lacks the event set and the mixture, whose synthetic set points at an empty
    folder and whose filter manifest has no scores: what an interrupted or cut-down build leaves."""
    out = tmp_path_factory.mktemp("partial") / "out"
    shutil.copytree(demo_build, out, ignore=shutil.ignore_patterns("input"))
    record = copy.deepcopy(_record(out))
    del record["sets"]["event"]
    record["steps"] = [s for s in record["steps"] if s["set"] != "event"]
    record["mixture"] = None
    record["sets"]["synthetic"]["path"] = "synthetic_empty"
    (out / "synthetic_empty").mkdir()
    filtered = out / record["sets"]["synthetic"]["quality"]["manifest"]
    table = pq.read_table(filtered)
    pq.write_table(table.drop_columns([c for c in table.column_names if c.startswith(("quality_", "vbench_"))]),
                   filtered)
    return out, record


# ------------------------------------------------------------------------------------------------ README.md


def test_readme_front_matter_has_a_config_per_set_whose_glob_matches_its_tars(demo_build, card):
    meta = _front_matter((demo_build / "README.md").read_text())
    record = _record(demo_build)
    assert [c["config_name"] for c in meta["configs"]] == list(record["sets"])
    assert meta["configs"][0].get("default") is True
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    for config in meta["configs"]:
        name = config["config_name"]
        (files,) = config["data_files"]
        assert files["split"] == "train"
        tars = sorted(p.name for p in (demo_build / name).glob("*.tar"))
        assert tars and sorted(p.name for p in demo_build.glob(files["path"])) == tars
        stats = shards.set_stats(demo_build / name)
        assert infos[name]["splits"] == [{"name": "train", "num_bytes": stats["bytes"],
                                          "num_examples": stats["samples"]}]
        assert infos[name]["download_size"] == stats["bytes"]
        assert [f["name"] for f in infos[name]["features"]][-2:] == ["__key__", "__url__"]
    assert meta["license"] == "other" and meta["size_categories"] == ["n<1K"]
    readme = (demo_build / "README.md").read_text()
    for source in ("Sekai", "OpenVid-1M", "Wan 2.1", "Wan 2.2", "CC-BY-4.0"):
        assert source in readme


def test_datasets_loads_every_config_with_the_features_it_would_infer_itself(demo_build, tmp_path):
    datasets = pytest.importorskip("datasets")
    meta = _front_matter((demo_build / "README.md").read_text())
    for info in meta["dataset_info"]:
        name = info["config_name"]
        declared = datasets.Features._from_yaml_list(info["features"])
        ds = datasets.load_dataset(str(demo_build), name, split="train", cache_dir=str(tmp_path / "a"))
        tars = sorted(str(p) for p in (demo_build / name).glob("*.tar"))
        inferred = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                                         cache_dir=str(tmp_path / "b"))
        assert len(ds) == info["splits"][0]["num_examples"]
        assert ds.features == declared == inferred.features, name


# ------------------------------------------------------------------------------------------------ card.json


def test_set_figures_equal_set_stats_and_the_manifests(demo_build, card):
    record = _record(demo_build)
    for name, s in card["sets"].items():
        stats = shards.set_stats(demo_build / name)
        assert {k: s[k] for k in ("samples", "failed", "shards", "bytes")} == \
            {k: stats[k] for k in ("samples", "failed", "shards", "bytes")}, name
        assert s["hours"] == pytest.approx(stats["hours"]) and s["samples_per_task"] == stats["tasks"]
        assert s["clip_seconds"]["count"] == s["samples"]
        assert s["clip_seconds"]["sum"] == pytest.approx(stats["hours"] * 3600)
        assert sum(s["clip_seconds"]["histogram"]["counts"]) == s["samples"]
        assert len(s["frames_shown"]) == min(8, s["samples"])

    rw = _ok(_output(demo_build, record, "real_world/real_world"))
    s = card["sets"]["real_world"]
    assert s["frames"]["sum"] == sum(rw["video_frames"].to_pylist())
    sizes = [f"{w}x{h}" for w, h in zip(rw["width"].to_pylist(), rw["height"].to_pylist())]
    assert s["resolution"] == {r: sizes.count(r) for r in set(sizes)}
    hist = quantize_actions.action_histogram(rw["keys"], rw["mouse"])
    assert s["actions"]["steps"] == hist["steps"]
    assert s["actions"]["pairs"] == [[hist["pairs"][k][m] for m in s["actions"]["mouse"]] for k in s["actions"]["keys"]]
    assert s["caption_words"]["t2v"]["sum"] == sum(_words(rw["caption"].to_pylist()))
    assert s["caption_words"]["i2v"]["sum"] == sum(_words(rw["caption_event"].to_pylist()))

    syn = _ok(_output(demo_build, record, "synthetic/filter"))
    s = card["sets"]["synthetic"]
    assert s["actions"] is None and list(s["caption_words"]) == ["t2v"]
    assert s["caption_words"]["t2v"]["sum"] == sum(_words(syn["caption"].to_pylist()))
    assert s["resolution"] == {f"{syn['synth_width'][0]}x{syn['synth_height'][0]}": syn.num_rows}

    ev = _ok(_output(demo_build, record, "event/screening"))
    s = card["sets"]["event"]
    assert s["tasks"] == record["sets"]["event"]["tasks"] == ["t2v", "i2v"] and "exclusively" in s["tasks_note"]
    labels = card["sets"]["real_world"]["labels"]
    summary = json.loads(_output(demo_build, record, "real_world/real_world", "summary").read_text())
    assert labels == {"mode": "published", "trajectory_flags": summary["trajectory_flags"]}
    assert labels["trajectory_flags"]["checked"] > 0 and "labels" not in card["sets"]["synthetic"]
    assert [(n, c["recipe"]) for n, c in card["sets"].items()] == \
        [("real_world", "sekai"), ("synthetic", "t2v_synthetic"), ("event", "i2v_event")]
    assert card["sets"]["synthetic"]["source"]["url"] == "https://huggingface.co/datasets/nkp37/OpenVid-1M"
    for task in s["tasks"]:
        assert s["caption_words"][task]["sum"] == sum(_words(ev["caption"].to_pylist()))


def test_every_stage_of_the_funnel_adds_up_and_matches_its_summary(demo_build, card):
    record = _record(demo_build)
    stages = {f["step"]: f for f in card["funnel"]}
    assert list(stages) == [s["name"] for s in record["steps"] if s["funnel"]]
    assert list(stages) == ["real_world/real_world", "synthetic/prompts", "synthetic/synthesis", "synthetic/filter",
                            "synthetic/shards", "event/draft", "event/text_review", "event/synthesis",
                            "event/prescreen", "event/screening", "event/shards"]
    assert [f["set"] for f in card["funnel"]] == [n.split("/")[0] for n in stages]
    for f in card["funnel"]:
        assert f["in"] == f["ok"] + f["dropped"] + f["failed"], f
        assert f["dropped"] + f["failed"] == sum(r["count"] for r in f["by_reason"])
    steps = {s["name"]: s for s in record["steps"]}
    for name in ("real_world/real_world", "synthetic/synthesis", "event/synthesis"):  # manifests of their own rows
        summary = json.loads((demo_build / steps[name]["outputs"]["summary"]).read_text())
        assert {k: stages[name][k] for k in ("in", "ok", "dropped", "failed")} == \
            {k: summary[k] for k in ("in", "ok", "dropped", "failed")}, name
        assert sorted(map(json.dumps, stages[name]["by_reason"])) == sorted(map(json.dumps, summary["by_reason"]))
    prompts = json.loads((demo_build / "work/synthetic/prompts.report.json").read_text())
    assert (stages["synthetic/prompts"]["in"], stages["synthetic/prompts"]["ok"]) == \
        (prompts["rows_in"], prompts["selected"])
    assert stages["synthetic/filter"]["in"] == stages["synthetic/synthesis"]["ok"]
    assert stages["synthetic/shards"]["in"] == stages["synthetic/filter"]["ok"]
    assert stages["synthetic/shards"]["ok"] == card["sets"]["synthetic"]["samples"]
    assert stages["event/shards"]["ok"] == card["sets"]["event"]["samples"]
    assert stages["real_world/real_world"]["ok"] == card["sets"]["real_world"]["samples"]


def test_quality_screening_mixture_and_stage_times(demo_build, card):
    record = _record(demo_build)
    filtering = json.loads(_output(demo_build, record, "synthetic/filter", "summary").read_text())["filtering"]
    q = card["sets"]["synthetic"]["quality"]
    assert (q["scored"], q["kept"], q["limit"]) == (filtering["scored"], filtering["kept"], filtering["limit"])
    assert q["cut_score"] == pytest.approx(filtering["cut_score"], abs=1e-4)
    assert sum(q["histogram"]["scored"]) == q["scored"] and sum(q["histogram"]["kept"]) == q["kept"]
    assert q["kept_scores"]["min"] == q["cut_score"]

    screened = pq.read_table(_output(demo_build, record, "event/screening"))
    s = card["sets"]["event"]["screening"]
    assert {k: s[k] for k in review_counts(screened)} == review_counts(screened)
    assert s["policy"] == "accept_all" and s["screened_by_a_person"] is False and s["accept_rate"] is None
    assert any("NOT screened by a person" in w for w in card["warnings"])
    for page in ("README.md", "card.html"):
        assert "NOT screened by a person" in (demo_build / page).read_text()

    mix = card["mixture"]
    weights = {n: record["sets"][n]["weight"] for n in record["sets"]}
    assert mix["requested"] == pytest.approx({n: w / sum(weights.values()) for n, w in weights.items()})
    assert sum(mix["realized"].values()) == pytest.approx(1.0)
    # weights are shares: the synthetic set (T2V only) gets its share too, from T2V steps alone
    assert mix["realized"] == pytest.approx(mix["requested"], abs=0.02)
    assert "synthetic" not in mix["task_weights"]["i2v"]
    assert mix["task_weights"]["t2v"]["synthetic"] == pytest.approx(2 * mix["requested"]["synthetic"])

    assert [s["name"] for s in card["stages"]["steps"]] == [s["name"] for s in record["steps"]]
    assert card["stages"]["seconds"] == pytest.approx(sum(s["seconds"] for s in record["steps"]), abs=0.01)


def test_distribution_stats_merge_exactly():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, 50), rng.normal(-1, 5, 70)
    merged, whole = merge_stats(describe(a), describe(b)), describe(np.concatenate([a, b]))
    assert merged == pytest.approx(whole)
    assert merge_stats(describe([]), describe(a)) == describe(a)
    assert describe([])["count"] == 0 and describe([])["mean"] is None


# ---------------------------------------------------------------------------------------------- reproducible


def test_the_same_build_renders_the_same_bytes(demo_build):
    record = _record(demo_build)
    started = time.perf_counter()
    first = collect(demo_build, record)
    page = render_html(*first)
    # about 1 s on two shared cores with the modules loaded (as in a build); the bound catches a card that decodes
    # every video or rereads every manifest, not a busy machine
    assert time.perf_counter() - started < 10.0
    second = collect(demo_build, record)
    assert json.dumps(first[0]) == json.dumps(second[0])
    assert page == render_html(*second) == (demo_build / "card.html").read_text()
    assert render_readme(*first) == render_readme(*second) == (demo_build / "README.md").read_text()
    assert json.loads((demo_build / "card.json").read_text()) == json.loads(json.dumps(first[0]))


def test_another_process_writes_the_same_bytes(demo_build, tmp_path):
    """Another interpreter (another hash seed, a fresh font cache) renders the same files, PNGs included."""
    out = tmp_path / "out"
    shutil.copytree(demo_build, out, ignore=shutil.ignore_patterns("input"))
    script = "import json, sys; from pipelines.card import write_card; " \
             "write_card(sys.argv[1], json.load(open(sys.argv[1] + '/build.json')))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, timeout=300)
    for name in ("README.md", "card.html", "card.json"):
        assert (out / name).read_bytes() == (demo_build / name).read_bytes(), name


def test_card_html_is_self_contained_and_small(demo_build, card):
    page = (demo_build / "card.html").read_text()
    assert "://" not in page and "<script" not in page
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources)
    frames = sum(len(s["frames_shown"]) for s in card["sets"].values())
    assert sum(s.startswith("data:image/jpeg") for s in sources) == frames
    assert len(page.encode()) < 3_000_000


def test_a_partial_build_gets_a_card_that_says_what_is_missing(partial):
    out, record = partial
    paths = write_card(out, record)
    card = json.loads(paths["json"].read_text())
    assert list(card["sets"]) == ["real_world", "synthetic"] and card["mixture"] is None
    assert card["sets"]["synthetic"]["samples"] == 0 and card["sets"]["synthetic"]["frames_shown"] == []
    quality = card["sets"]["synthetic"]["quality"]
    assert quality["scored"] == 0 and quality["cut_score"] is None
    assert {"The synthetic set has no samples.",
            "The synthetic set has no VBench quality scores: nothing was ranked."} <= set(card["warnings"])
    meta = _front_matter(paths["readme"].read_text())
    assert [c["config_name"] for c in meta["configs"]] == ["real_world"]
    page = paths["html"].read_text()
    assert all(html.escape(w) in page for w in card["warnings"])


def test_a_screened_event_set_reports_its_accept_rate(demo_build, tmp_path):
    from filtering import apply_review

    out = tmp_path / "out"
    shutil.copytree(demo_build, out, ignore=shutil.ignore_patterns("input"))
    record = _record(out)
    record["sets"]["event"]["screening"].update({"policy": "decisions", "decisions": "decisions.csv"})
    videos = pq.read_table(out / "work/event/videos/manifest.parquet")
    keys = sorted(k for k, s in zip(videos["prompt_id"].to_pylist(), videos["status"].to_pylist()) if s == "ok")
    decisions = {k: ("keep", None) for k in keys[1:]} | {keys[0]: ("reject", "blurry")}
    pq.write_table(apply_review(videos, decisions, source="decisions.csv"),
                   out / record["sets"]["event"]["screening"]["manifest"])
    card = json.loads(write_card(out, record)["json"].read_text())
    s = card["sets"]["event"]["screening"]
    assert s["screened_by_a_person"] is True and (s["kept"], s["rejected"]) == (len(keys) - 1, 1)
    assert s["accept_rate"] == pytest.approx((len(keys) - 1) / len(keys), abs=1e-4)
    assert not any("screened" in w for w in card["warnings"])
    stage = next(f for f in card["funnel"] if f["step"] == "event/screening")
    assert stage["by_reason"] == [{"status": "dropped", "reason": "rejected_in_review", "count": 1}]
    assert "Screened by a person" in (out / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- in a browser


def test_the_browser_check_catches_broken_images_and_script_errors(tmp_path):
    (tmp_path / "bad.html").write_text('<!DOCTYPE html><link rel="icon" href="data:,"><img src="missing.png">'
                                       '<img src="data:image/png;base64,AAAA"><script>throw new Error("boom")</script>')
    with serve(tmp_path) as base, Browser() as browser:
        page = browser.open(f"{base}/bad.html")
        assert page.broken_images() == ["missing.png", "data:image/png;base64,AAAA"]
        errors = page.errors()
        assert any("boom" in e for e in errors) and any("404" in e for e in errors)


def test_card_and_review_pages_load_in_a_browser_without_errors(demo_build, partial, card):
    record = _record(demo_build)
    review = Path(next(s["outputs"]["pages"] for s in record["steps"] if s["name"] == "event/review_pages"))
    with Browser() as browser:
        for root in (demo_build, partial[0]):
            with serve(root) as base:
                page = browser.open(f"{base}/card.html")
                assert page.broken_images() == []
                assert page.image_count() >= 6
                assert page.errors() == []
        with serve(demo_build) as base:
            for name in ("index.html", "page-0001.html"):
                page = browser.open(f"{base}/{review.parent.as_posix()}/{name}")
                assert page.errors() == [], name
            before = page.evaluate("document.getElementById('progress').textContent")
            page.press("j")
            page.press("y")
            after = page.evaluate("document.getElementById('progress').textContent")
            assert before.startswith("0 / ") and after.startswith("1 / "), (before, after)
            assert page.broken_images() == [] and page.errors() == []

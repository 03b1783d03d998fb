"""A mixture of any sets: the demo's three plus a second Sekai split and a set reused from an earlier build; sets
added to a finished build run only their own steps; a recipe from outside the package builds."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import shards
from pipelines.cli import main
from pipelines.recipes import RECIPES, register
from yume_core.mixture import read_mixture
from yume_core.sample_data import make_sekai_sample
from yume_core.samples import check_sample

from conftest import BUILD_TIME, SMALL_BUILD

pytestmark = pytest.mark.slow
FIVE = {"real_world": 0.3, "synthetic": 0.2, "event": 0.2, "drone": 0.15, "previous": 0.15}


def _build(out: Path, tmp: Path, sets: dict, preset: str | None = "demo") -> dict:
    cfg = tmp / f"cfg-{len(list(tmp.glob('cfg-*')))}.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL_BUILD, "sets": sets}))
    args = ["build", "-o", str(out), "--config", str(cfg), "--build-time", BUILD_TIME]
    result = CliRunner().invoke(main, [*args, "--preset", preset] if preset else args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "build.json").read_text())


@pytest.fixture(scope="module")
def five(demo_build, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The suite's demo build, then a second Sekai split added, then an earlier build's real_world folder as a
    fifth set: the records of both runs."""
    tmp = tmp_path_factory.mktemp("five")
    earlier = tmp / "earlier-real_world"
    shutil.copytree(demo_build / "real_world", earlier)
    drone = make_sekai_sample(tmp / "drone", n_clips=3, n_frames=60, size=(96, 54), seed=7)
    out = tmp / "out"
    shutil.copytree(demo_build, out)
    sets = {name: {"weight": w} for name, w in FIVE.items() if name not in ("drone", "previous")}
    sets["drone"] = {"recipe": "sekai", "weight": FIVE["drone"],
                     "inputs": {"csv": str(drone.csv_path), "videos": str(drone.videos_dir),
                                "trajectories": str(drone.cameras_dir)},
                     "real_world": {"preset": "demo"}}
    records = [_build(out, tmp, sets)]
    sets["previous"] = {"recipe": "shards", "inputs": {"path": str(earlier)}, "weight": FIVE["previous"]}
    records.append(_build(out, tmp, sets))
    return out, records


def test_adding_sets_runs_only_their_steps_the_mixture_and_the_card(five):
    out, (fourth, fifth) = five
    done = [[s["name"] for s in r["steps"] if s["status"] == "done"] for r in (fourth, fifth)]
    assert done == [["drone/real_world", "mixture"], ["previous/shards", "mixture"]]
    assert all(s["status"] == "skipped" for r in (fourth, fifth) for s in r["steps"] if s["name"] not in done[0] +
               done[1])


def test_five_sets_verify_mix_and_show_in_the_card(five):
    out, (_, record) = five
    assert list(record["sets"]) == list(FIVE)
    for name in FIVE:
        report = shards.verify_shards(out / name)
        assert report.ok and report.samples, (name, report.errors)
    previous = [json.loads(s) for s in _jsons(out / "previous")]
    assert previous and all(check_sample(m) == [] and m["set"] == "real_world" for m in previous)  # kept as it was
    assert (out / "previous" / ".nv-meta" / "dataset.yaml").read_text().count("previous") >= 0
    sources = {s.name: s for s in read_mixture(out / "mixture.yaml")}
    assert {n: s.weight for n, s in sources.items()} == FIVE
    card = json.loads((out / "card.json").read_text())
    assert list(card["sets"]) == list(FIVE)
    assert card["sets"]["previous"]["recipe"] == "shards" and card["sets"]["drone"]["recipe"] == "sekai"
    page = (out / "card.html").read_text()
    assert all(f'id="set-{name}"' in page for name in FIVE)


def test_energon_iterates_the_five_set_mixture(five):
    pytest.importorskip("megatron.energon")
    from test_sets_readers import _energon_samples

    out, _ = five
    by_set = Counter(s["subflavors"]["set"] for s in _energon_samples(out / "mixture.yaml", 200))
    assert set(by_set) == set(FIVE), by_set


def test_mix_info_realises_the_requested_shares(five):
    out, _ = five
    result = CliRunner().invoke(main, ["mix", "info", str(out / "mixture.yaml"), "--simulate", "20000", "--json"])
    assert result.exit_code == 0, result.output
    sim = json.loads(result.output)["simulation"]
    for name, weight in FIVE.items():
        assert abs(sim["realized"][name] - weight) < 0.02, (name, sim["realized"])


def test_the_trainer_draws_from_all_five_sets(five, tmp_path, one_torch_thread):
    out, _ = five
    result = CliRunner().invoke(main, ["train", "--mixture", str(out / "mixture.yaml"), "-o", str(tmp_path / "run"),
                                       "--steps", "24", "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    assert set().union(*(r["sets"] for r in rows)) == set(FIVE)


def test_removing_a_set_removes_it_from_the_mixture_and_the_card(five, tmp_path):
    out, (_, record) = five
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    sets = {name: {"weight": w} for name, w in FIVE.items() if name != "drone"}
    sets["previous"] = {"recipe": "shards", "inputs": record["settings"]["sets"]["previous"]["inputs"],
                        "weight": FIVE["previous"]}
    sets["drone"] = None
    again = _build(copy, tmp_path, sets)
    assert [s["name"] for s in again["steps"] if s["status"] == "done"] == ["mixture"]
    assert {s.name for s in read_mixture(copy / "mixture.yaml")} == set(FIVE) - {"drone"}
    assert "drone" not in json.loads((copy / "card.json").read_text())["sets"]


def test_a_recipe_from_the_test_folder_builds(tmp_path):
    from texture_recipe import Textures

    register(Textures())
    try:
        record = _build(tmp_path / "out", tmp_path, {"mine": {"recipe": "textures", "inputs": {"clips": 3},
                                                              "weight": 1.0}}, preset=None)
    finally:
        RECIPES.pop("textures")
    assert [s["name"] for s in record["steps"]] == ["mine/textures", "mixture"]
    assert shards.verify_shards(tmp_path / "out" / "mine").samples == 3
    assert [s.name for s in read_mixture(tmp_path / "out" / "mixture.yaml")] == ["mine"]


def _jsons(set_dir: Path) -> list[bytes]:
    import tarfile

    out = []
    for tar in sorted(set_dir.glob("*.tar")):
        with tarfile.open(tar) as tf:
            out += [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".json")]
    return out


def test_a_labs_own_footage_becomes_a_t2v_set_and_bad_rows_say_why(tmp_path):
    from pipelines.sample_mixture import texture_clip

    clips = tmp_path / "footage"
    clips.mkdir()
    for i in range(3):
        texture_clip(clips / f"walk-{i}.mp4", seed=i, frames=17, size=(32, 32))
    (clips / "footage.csv").write_text("video,caption\nwalk-0.mp4,A walk along the harbour.\n"
                                       "walk-1.mp4,A market street at noon.\nwalk-2.mp4,\nmissing.mp4,Rain.\n")
    own = {"recipe": "videos", "inputs": {"csv": str(clips / "footage.csv")}, "weight": 1.0}
    record = _build(tmp_path / "out", tmp_path, {"own": own}, preset=None)
    assert [s["name"] for s in record["steps"]] == ["own/probe", "own/shards", "mixture"]
    out = tmp_path / "out"
    report = shards.verify_shards(out / "own")
    assert report.ok and report.samples == 2
    metas = [json.loads(m) for m in _jsons(out / "own")]
    assert all(check_sample(m) == [] and m["set"] == "own" and m["tasks"] == ["t2v"] for m in metas)
    assert sorted(m["footage"]["caption"] for m in metas) == ["A market street at noon.", "A walk along the harbour."]
    # recorded relative to the config file's folder (`tmp_path`), which holds them
    assert {m["footage"]["video"] for m in metas} == {"footage/walk-0.mp4", "footage/walk-1.mp4"}
    funnel = {f["step"]: f for f in json.loads((out / "card.json").read_text())["funnel"]}
    probe = funnel["own/probe"]
    assert (probe["in"], probe["ok"], probe["failed"]) == (4, 2, 2)
    assert {r["reason"] for r in probe["by_reason"]} == {"caption_missing", "video_missing"}

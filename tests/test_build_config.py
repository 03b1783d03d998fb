"""The build config: sets by recipe, merged over presets, typed and checked before any work; the declared graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.build import plan
from pipelines.build_config import build_config, cli_overrides, merge_settings
from yume_core.config import ConfigError, to_dict

GOLDEN = Path(__file__).parent / "golden"
# what each preset's stage configs were called before sets (the golden file's keys) -> (set, section)
EARLIER = {"real_world": ("real_world", "real_world"), "prompts": ("synthetic", "prompts"),
           "synthetic": ("synthetic", "synthesis"), "filter": ("synthetic", "filter"),
           "event_images": ("event", "event_images"), "event": ("event", "synthesis"),
           "shards": ("synthetic", "shards"), "screening": ("event", "screening")}


def _without_later_settings(got, golden):
    """`got` less the settings added since the golden file was recorded (they keep the earlier behaviour by
    default: the actions' `mode` is `published`, no trajectory flag drops a clip, ...)."""
    if isinstance(got, dict) and isinstance(golden, dict):
        return {k: _without_later_settings(v, golden[k]) for k, v in got.items() if k in golden}
    return got


@pytest.mark.parametrize("preset", ["demo", "yume15"])
def test_the_presets_configure_every_stage_as_before_sets(preset):
    """Recorded from the build before recipes: every stage config of both presets, to the last setting."""
    golden = json.loads((GOLDEN / "preset_stages.json").read_text())[preset]
    cfg = build_config(preset)
    assert [s.name for s in cfg.sets] == ["real_world", "synthetic", "event"]
    for old, (name, section) in EARLIER.items():
        got = json.loads(json.dumps(to_dict(cfg.set(name).sections[section]), default=str))
        assert _without_later_settings(got, golden[old]) == golden[old], (preset, old)
    assert to_dict(cfg.set("event").sections["shards"]) == golden["shards"]
    assert cfg.set("event").sections["review"].page_size == golden["review"]["page_size"]
    assert {s.name: s.weight for s in cfg.sets} == golden["mixture"]["weights"]
    assert list(cfg.set("event").tasks) == golden["mixture"]["event_tasks"]


def test_a_user_config_adds_changes_and_removes_sets():
    cfg = build_config("demo", {"sets": {
        "drone": {"recipe": "sekai", "inputs": {"csv": "d.csv", "videos": "v", "trajectories": "t"},
                  "real_world": {"preset": "demo", "batch_size": 3}, "weight": 0.15},
        "synthetic": {"weight": 0.1, "filter": {"top": {"keep": 2}}},
        "event": None}})
    assert [s.name for s in cfg.sets] == ["real_world", "synthetic", "drone"]
    drone = cfg.set("drone")
    assert drone.recipe.name == "sekai" and drone.tasks == ("t2v", "i2v") and drone.weight == 0.15
    assert drone.sections["real_world"].batch_size == 3
    assert drone.sections["real_world"].caption is not None  # the rest from the demo preset
    synthetic = cfg.set("synthetic")
    assert synthetic.weight == 0.1 and synthetic.sections["filter"].top.keep == 2
    assert synthetic.sections["filter"].score.backend == build_config("demo").set("synthetic").sections[
        "filter"].score.backend  # deep merge: the preset's other filter settings stay


@pytest.mark.parametrize("settings, message", [
    ({"sets": {"drone": {"recipe": "sekai", "inputs": {"csvv": "x"}}}}, "sets.drone.inputs.csvv"),
    ({"sets": {"drone": {"recipe": "sekai", "real_world": {"batch_sise": 3}}}}, "sets.drone.real_world.batch_sise"),
    ({"sets": {"drone": {"recipe": "sekai", "filter": {"preset": "tiny"}}}}, "sets.drone.filter"),
    ({"sets": {"drone": {"recipe": "sekia"}}}, "unknown recipe 'sekia'"),
    ({"sets": {"Drone-1": {"recipe": "sekai"}}}, "[a-z0-9_]+"),
    ({"sets": {"drone": {"inputs": {}}}}, "names its recipe"),
    ({"sets": {"drone": {"recipe": "sekai", "tasks": ["t2i"]}}}, "t2i"),
    ({"sets": {"drone": {"recipe": "sekai", "weight": -1}}}, "sets.drone.weight"),
    ({"mixture": {"weights": {"real_world": 1}}}, "mixture"),
    ({"sets": {"synthetic": {"synthesis": {"synth": {"stpes": 3}}}}}, "sets.synthetic.synthesis.synth.stpes"),
    ({"sets": {"event": {"screening": {"policy": "maybe"}}}}, "screening.policy"),
])
def test_a_wrong_setting_fails_before_any_work_naming_its_path(settings, message):
    with pytest.raises((ConfigError, ValueError), match=message.replace("[", r"\[").replace("+", r"\+")):
        build_config("demo", settings)


def test_the_command_line_reaches_every_set_it_concerns():
    data = {"sets": {"drone": {"recipe": "sekai", "inputs": {"csv": "d.csv", "videos": "v", "trajectories": "t"}}}}
    flags = cli_overrides(data, "demo", runner={"kind": "threads", "workers": 3}, screening={"policy": "accept_all"},
                          event_tasks=["t2v"], text_review={"policy": "decisions", "decisions": "t.csv"})
    cfg = build_config("demo", merge_settings(data, flags))
    runners = {(s.name, k): v.runner.workers for s in cfg.sets for k, v in s.sections.items() if hasattr(v, "runner")}
    assert runners == {("real_world", "real_world"): 3, ("synthetic", "synthesis"): 3, ("synthetic", "filter"): 3,
                       ("event", "draft"): 3, ("event", "synthesis"): 3, ("drone", "real_world"): 3}
    assert cfg.set("event").tasks == ("t2v",) and cfg.set("drone").tasks == ("t2v", "i2v")
    assert cfg.set("event").sections["text_review"].decisions == "t.csv"


def test_the_demo_graph_declares_each_steps_set_reads_and_outputs(tmp_path):
    ctx, steps = plan(tmp_path / "out", build_config("demo", {"generate": {"clips": 2, "frames": 40,
                                                                            "openvid_captions": 4}}))
    by_name = {s.name: s for s in steps}
    assert list(by_name) == ["real_world/real_world", "synthetic/prompts", "synthetic/synthesis", "synthetic/filter",
                             "synthetic/shards", "event/event_images", "event/draft", "event/text_review_pages",
                             "event/text_review", "event/synthesis", "event/prescreen", "event/review_pages",
                             "event/screening", "event/shards"]
    assert all(s.set == s.name.split("/")[0] for s in steps)
    assert by_name["synthetic/filter"].reads == ("synthetic/synthesis",)
    assert by_name["synthetic/filter"].extends and by_name["synthetic/filter"].counts_from == "synthetic/synthesis"
    assert by_name["event/shards"].manifest == ctx.layout.set_dir("event") / "index.parquet"
    assert by_name["event/synthesis"].reads == ("event/text_review",)  # the demo renders its reviewed drafts
    assert by_name["event/text_review"].waits() is None  # accept_all: no person to wait for
    assert by_name["event/synthesis"].counts_from == "event/text_review"
    assert by_name["event/review_pages"].reads == ("event/prescreen",)  # pages sorted by the pre-screen
    outputs = [p for s in steps for p in s.outputs.values()]
    assert all(ctx.layout.out in Path(p).parents for p in outputs)  # every path from the one layout

"""The synthesis flow and its commands: Prefect run end to end, resume, ranks finishing in any order, Ray actors,
`yume-data synthesize`, and `plan synth` (arithmetic and calibration with a tiny model)."""

import json
import statistics

import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from diffusers import WanPipeline

from pipelines.cli import main
from pipelines.cli_synthesis import CACHE_KINDS
from pipelines.synthesis import run_synthesis_flow, synth_flow_config
from synthesis.generate import video_seconds
from synthesis.models import CACHE_KINDS as STAGE_CACHE_KINDS
from synthesis.planning import plan_synthesis
from yume_core.manifest import read_manifest, write_manifest
from yume_core.media import probe_video


@pytest.fixture(autouse=True, scope="module")
def restore_torch_threads():
    """The tiny preset sets one torch thread process-wide (SynthConfig.cpu_threads): give later modules theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def prompts_file(tmp_path):
    """Seven prompts: five to generate, one empty caption, one failed upstream (passed through, counted)."""
    n = 7
    table = pa.table({
        "prompt_id": [f"openvid-{i:03d}" for i in range(n)],
        "caption": ["a tram crosses a bridge", "", "children run in a park", "a ferry docks at dawn",
                    "snow on a mountain road", "a cat sleeps on a wall", "a busy crossing at night"],
        "image_path": pa.nulls(n, pa.string()),
        "status": ["ok"] * 5 + ["failed", "ok"],
        "reason": [None] * 5 + ["near_duplicate", None],
        "error": [None] * 5 + ["too close to openvid-000", None],
    })
    return str(write_manifest(table, tmp_path / "prompts.parquet"))


@pytest.fixture
def calls(monkeypatch):
    seen: list[str] = []
    original = WanPipeline.__call__

    def counted(self, *args, **kwargs):
        seen.append(kwargs["prompt"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WanPipeline, "__call__", counted)
    return seen


def _check_outputs(out, expected_rows=7):
    manifest = read_manifest(out / "manifest.parquet")
    assert manifest.num_rows == expected_rows
    assert sorted(manifest["prompt_id"].to_pylist()) == [f"openvid-{i:03d}" for i in range(expected_rows)]
    rows = {r["prompt_id"]: r for r in manifest.to_pylist()}
    assert (rows["openvid-001"]["status"], rows["openvid-001"]["reason"]) == ("failed", "empty_prompt")
    assert rows["openvid-005"]["reason"] == "near_duplicate"
    assert rows["openvid-005"]["error"] == "too close to openvid-000"
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 5
    for r in ok:
        assert probe_video(out / r["video_path"]).frames == 9
    return manifest


def test_flow_generates_reports_and_a_rerun_generates_nothing(prompts_file, tmp_path, calls):
    out = tmp_path / "out"
    config = synth_flow_config("tiny", {"batch_size": 3})
    summary = run_synthesis_flow(prompts_file, str(out), config)
    first = _check_outputs(out)
    assert len(calls) == 5 and summary["complete"]
    assert (summary["in"], summary["ok"], summary["failed"]) == (7, 5, 2)
    figures = json.loads((out / "summary.json").read_text())["synthesis"]
    assert figures["videos"] == 5 and figures["seconds_per_video"] > 0
    mean = statistics.fmean(video_seconds(out, [r["video_path"] for r in first.to_pylist() if r["status"] == "ok"]))
    assert figures["seconds_per_video"] == pytest.approx(mean, rel=1e-3)
    # hours are reported to 2 decimals, whatever this machine's speed
    assert figures["projected_cpu_hours_80000"] == pytest.approx(80_000 * mean / 3600, abs=0.005 + 1e-9)
    assert len(list((out / "_work").glob("synth-*/part-*.parquet"))) == 3

    calls.clear()
    run_synthesis_flow(prompts_file, str(out), config)
    assert calls == []
    assert read_manifest(out / "manifest.parquet").to_pylist() == first.to_pylist()


def test_a_clean_rerun_writes_the_same_manifest_and_videos(prompts_file, tmp_path):
    """Same bytes from a second run in another folder: timings live in the videos' records and the summary only."""
    config = synth_flow_config("tiny", {"batch_size": 3})
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_synthesis_flow(prompts_file, str(out), config)
    assert "synth_seconds" not in read_manifest(outs[0] / "manifest.parquet").column_names
    names = sorted(str(p.relative_to(outs[0])) for p in outs[0].rglob("*") if p.suffix in (".mp4", ".parquet")
                   and "_work" not in p.parts)
    assert "manifest.parquet" in names and len(names) == 6
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_ranks_share_the_work_and_the_last_to_finish_merges(prompts_file, tmp_path, calls):
    out = tmp_path / "out"
    config = synth_flow_config("tiny", {"batch_size": 2})  # 4 batches: rank 0 takes 0 and 2, rank 1 takes 1 and 3
    late = run_synthesis_flow(prompts_file, str(out), config, rank=1, world_size=2)
    assert not late["complete"] and late["pending_batches"] == 2 and late["in"] == 3
    assert not (out / "manifest.parquet").exists()
    made_by_rank_1 = sorted(calls)
    done = run_synthesis_flow(prompts_file, str(out), config, rank=0, world_size=2)
    assert done["complete"]
    _check_outputs(out)
    assert len(calls) == 5 and len(set(calls)) == 5  # every prompt exactly once over both ranks
    assert not set(made_by_rank_1) & set(calls[len(made_by_rank_1):])


def test_flow_reads_any_prompts_format(tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("a lighthouse in a storm\n\na train leaves a snowy station\n")
    summary = run_synthesis_flow(str(txt), str(tmp_path / "out"), synth_flow_config("tiny"))
    assert (summary["in"], summary["ok"], summary["failed"]) == (3, 2, 1)
    ok = [r for r in read_manifest(tmp_path / "out" / "manifest.parquet").to_pylist() if r["status"] == "ok"]
    assert [probe_video(tmp_path / "out" / r["video_path"]).frames for r in ok] == [9, 9]


def test_synthesize_command_with_overrides(prompts_file, tmp_path):
    out = tmp_path / "cli"
    config = tmp_path / "synth.yaml"
    config.write_text("batch_size: 4\nsynth:\n  fps: 12\n")
    result = CliRunner().invoke(main, ["synthesize", "--prompts", prompts_file, "--output", str(out), "--preset",
                                       "tiny", "--config", str(config), "--frames", "5", "--width", "48",
                                       "--seed", "7"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out / "manifest.parquet")
    ok = [r for r in manifest.to_pylist() if r["status"] == "ok"]
    assert len(ok) == 5 and manifest.num_rows == 7
    info = probe_video(out / ok[0]["video_path"])
    assert (info.frames, info.width, info.height, info.fps) == (5, 48, 32, 12.0)
    assert {r["synth_preset"] for r in ok} == {"tiny"}


def test_a_tiny_model_at_the_default_720p_preset_is_refused_before_any_video(prompts_file, tmp_path):
    result = CliRunner().invoke(main, ["synthesize", "--prompts", prompts_file, "--output", str(tmp_path / "o"),
                                       "--model", "tiny-random"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "cannot render 1280x720, 81 frames" in lines[0] and "tiny" in lines[0] and "--preset" in lines[0]
    assert not (tmp_path / "o").exists()


def test_flow_on_local_ray_actors(prompts_file, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = synth_flow_config("tiny", {"batch_size": 3, "runner": {"kind": "ray", "workers": 2}})  # 0 GPUs: tiny
        summary = run_synthesis_flow(prompts_file, str(tmp_path / "ray"), config)
    finally:
        ray.shutdown()
    assert summary["complete"]
    _check_outputs(tmp_path / "ray")


def test_plan_synth_arithmetic_text_and_json():
    plan = plan_synthesis(80_000, 64, 1800.0, load_seconds=120.0)
    assert plan.gpu_hours == pytest.approx((80_000 * 1800 + 64 * 120) / 3600, abs=0.01)
    assert plan.wall_hours == pytest.approx((120 + 1250 * 1800) / 3600, abs=0.01)
    assert plan.reserved_gpu_hours == pytest.approx((120 + 1250 * 1800) / 3600 * 64, abs=0.01)
    uneven = plan_synthesis(10, 4, 60.0)  # 3 rounds on the busiest GPU
    assert uneven.wall_hours == pytest.approx(3 * 60 / 3600, abs=0.01)
    assert plan_synthesis(3, 8, 10.0, load_seconds=100.0).gpu_hours == pytest.approx((30 + 300) / 3600, abs=0.01)

    runner = CliRunner()
    text = runner.invoke(main, ["plan", "synth", "--count", "80000", "--gpus", "64", "--seconds-per-video", "1800"])
    assert text.exit_code == 0 and "40,000.00" in text.output and "625.00 h" in text.output
    as_json = runner.invoke(main, ["plan", "synth", "--count", "1000", "--gpus", "10", "--seconds-per-video", "36",
                                   "--json"])
    data = json.loads(as_json.output)
    assert data["plan"]["gpu_hours"] == 10.0 and data["plan"]["wall_hours"] == 1.0 and data["calibration"] is None
    both = runner.invoke(main, ["plan", "synth", "--seconds-per-video", "5", "--calibrate"])
    neither = runner.invoke(main, ["plan", "synth"])
    assert both.exit_code == neither.exit_code == 2


def test_plan_synth_calibrates_with_a_tiny_model():
    result = CliRunner().invoke(main, ["plan", "synth", "--count", "80000", "--gpus", "64", "--calibrate",
                                       "--preset", "tiny", "--model", "tiny-random-i2v-2.1", "--device", "cpu",
                                       "--calibrate-videos", "2", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    cal, plan = data["calibration"], data["plan"]
    assert len(cal["video_seconds"]) == 2 and cal["seconds_per_video"] == cal["video_seconds"][1]
    assert cal["load_seconds"] > 0 and cal["device"] == "cpu" and cal["model"] == "tiny-random-i2v-2.1"
    assert plan["seconds_per_video"] == cal["seconds_per_video"] and plan["load_seconds"] == cal["load_seconds"]
    assert plan["gpu_hours"] == pytest.approx((80_000 * plan["seconds_per_video"] + 64 * plan["load_seconds"]) / 3600,
                                              abs=0.02)
    assert "measured here" in plan["basis"]


def test_cli_cache_choices_match_the_stage():
    assert CACHE_KINDS == STAGE_CACHE_KINDS
